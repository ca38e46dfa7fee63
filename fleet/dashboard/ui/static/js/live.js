// SPDX-License-Identifier: Apache-2.0
// Live updates: one EventSource on /api/events (server-sent events).
// `event: kiosk` carries a kiosk's /api/fleet row, `event: alarm` an alarm
// episode. While the stream is down the page may miss changes, so after a
// reconnect it reloads its data once (onReconnect) instead of trusting
// what it has.

const RETRY_MAX_MS = 30_000;

/**
 * Start listening. Handlers: onKiosk(row), onAlarm(alarm), onReconnect(), onStatus("live"|"down").
 * Returns a stop() function.
 */
export function connectLive({onKiosk, onAlarm, onReconnect, onStatus}) {
  let source = null;
  let missed = false;           // the stream was down: reload once it is back
  let retryMs = 1000;
  let timer = null;
  let stopped = false;

  function parse(event, handler) {
    if (!handler) {
      return;
    }
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;                   // a malformed event changes nothing on the page
    }
    handler(data);
  }

  function open() {
    source = new EventSource("/api/events");
    source.addEventListener("kiosk", (event) => parse(event, onKiosk));
    source.addEventListener("alarm", (event) => parse(event, onAlarm));
    source.addEventListener("open", () => {
      retryMs = 1000;
      onStatus?.("live");
      if (missed) {
        missed = false;
        onReconnect?.();
      }
    });
    source.addEventListener("error", () => {
      missed = true;
      onStatus?.("down");
      if (source.readyState === EventSource.CLOSED && !stopped) {
        // The browser gave up (an HTTP error such as 401 or 503): try again ourselves, backing off.
        source = null;
        clearTimeout(timer);
        timer = setTimeout(open, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    });
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    source?.close();
  };
}
