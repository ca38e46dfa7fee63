// SPDX-License-Identifier: Apache-2.0
// A client for one XFS4IoT-style service endpoint of the local API.
//
//   const kiosk = new XfsService(url, {onUnsolicited, onOpen, onClose});
//   kiosk.connect();
//   const done = await kiosk.command("Kiosk.Status");            // the completion payload
//   await kiosk.command("Kiosk.BeginSession", {serviceId}, {onEvent: (name, payload) => ...});
//
// Each command gets an acknowledge, events with its requestId, then one
// completion; command() resolves with the completion payload (its
// completionCode says how it ended), never rejects. A refused acknowledge or a
// connection lost mid-command resolves with completionCode set to that status
// or "connectionLost". Payloads are never logged: they may carry masked
// citizen data and a photo preview.

const VERSION = "1.0";
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;

export const CONNECTION_LOST = "connectionLost";

export class XfsService {
  constructor(url, {onUnsolicited = () => {}, onOpen = () => {}, onClose = () => {}} = {}) {
    this.url = url;
    this.onUnsolicited = onUnsolicited;
    this.onOpen = onOpen;
    this.onClose = onClose;
    this.socket = null;
    this.nextRequestId = 1;
    this.pending = new Map();  // requestId -> {resolve, onEvent}
    this.failures = 0;
    this.refusedInARow = 0;    // attempts that never opened (server down, or the token refused)
    this.stopped = false;
    this.retryTimer = null;
  }

  get connected() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Open the socket; when it drops, reopen with capped, jittered backoff. */
  connect() {
    this.stopped = false;
    const socket = new WebSocket(this.url);
    let opened = false;
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.failures = 0;
      this.refusedInARow = 0;
      this.onOpen();
    });
    socket.addEventListener("message", (ev) => this.receive(ev.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) {
        return;
      }
      this.refusedInARow = opened ? 0 : this.refusedInARow + 1;
      this.socket = null;
      this.failPending();
      this.onClose();
      if (!this.stopped) {
        this.scheduleReconnect();
      }
    });
  }

  /** Close for good (no reconnect). */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.socket) {
      this.socket.close();
    }
  }

  /** Drop the connection and open a new one (the server decides afresh who drives). */
  reconnect() {
    if (this.socket) {
      this.socket.close();      // the close handler reopens it
    }
  }

  scheduleReconnect() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.failures);
    this.failures += 1;
    // Jitter, so several screens (or a restarted agent) do not retry in step.
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  failPending() {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const request of waiting) {
      request.resolve({completionCode: CONNECTION_LOST});
    }
  }

  /** Send ``name``; resolve with the completion payload. */
  command(name, payload = {}, {onEvent = () => {}, timeout = 0} = {}) {
    if (!this.connected) {
      return Promise.resolve({completionCode: CONNECTION_LOST});
    }
    const requestId = this.nextRequestId++;
    return new Promise((resolve) => {
      this.pending.set(requestId, {resolve, onEvent});
      try {
        this.socket.send(JSON.stringify({
          header: {name, requestId, type: "command", version: VERSION, timeout},
          payload,
        }));
      } catch {
        // Closing under us: the close handler may already have run.
        this.pending.delete(requestId);
        resolve({completionCode: CONNECTION_LOST});
      }
    });
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;  // the agent sends JSON; anything else is not ours to act on
    }
    const header = message.header || {};
    const payload = message.payload || {};
    if (header.type === "unsolicited") {
      this.onUnsolicited(header.name, payload);
      return;
    }
    const request = this.pending.get(header.requestId);
    if (!request) {
      return;
    }
    if (header.type === "acknowledge") {
      if (header.status) {
        this.pending.delete(header.requestId);
        request.resolve({completionCode: header.status, errorDescription: header.errorDescription});
      }
    } else if (header.type === "event") {
      request.onEvent(header.name, payload);
    } else if (header.type === "completion") {
      this.pending.delete(header.requestId);
      request.resolve({
        ...payload,
        completionCode: payload.completionCode ?? header.completionCode,
        errorDescription: payload.errorDescription ?? header.errorDescription,
      });
    }
  }
}
