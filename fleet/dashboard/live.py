# SPDX-License-Identifier: Apache-2.0
"""Live updates: one LISTEN connection on ``kiosk_history``, fanned out to every open event stream.

    feed = LiveFeed(dsn, rows=..., alarms=...)
    task = asyncio.create_task(feed.run())
    queue = feed.subscribe()          # bytes of server-sent events; None: the stream should end

The history worker commits a change and ``NOTIFY kiosk_history,
'{"kiosk": "k1", "what": "state|health|alarm|cmd"}'`` in the same
transaction; the dashboard reads the changed kiosk's fleet row (and, for
``alarm``, the episodes that changed) itself and sends ``event: kiosk`` /
``event: alarm``. Notifications that arrive while a batch is read are
merged into the next one, so a burst costs a few queries, not one each.
The connection survives a database restart: it is opened again with a
backoff, and the loss and the return are logged once each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

__all__ = ["LiveFeed", "sse"]

log = logging.getLogger("fleet.dashboard.live")

CHANNEL = "kiosk_history"
QUEUE_MAX = 20_000      # events waiting for one slow stream (shared bytes: pointers only); beyond, it is closed

RowsReader = Callable[[list[str]], Awaitable[list[dict[str, Any]]]]
AlarmsReader = Callable[[list[str]], Awaitable[list[dict[str, Any]]]]


def sse(event: str, data: Any) -> bytes:
    """One server-sent event (JSON on one ``data:`` line: json.dumps never emits a newline)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class LiveFeed:
    """LISTEN, read what changed, push it to every subscriber's queue."""

    def __init__(self, dsn: str, *, rows: RowsReader, alarms: AlarmsReader, retry_max_s: float = 5.0,
                 check_every_s: float = 30.0) -> None:
        self.dsn = dsn
        self.rows, self.alarms = rows, alarms
        self.retry_max_s, self.check_every_s = retry_max_s, check_every_s
        self._queues: set[asyncio.Queue[bytes | None]] = set()
        self._pending: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._seen_alarms: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self.listening = asyncio.Event()

    # -- subscribers --------------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_MAX)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queues.discard(queue)

    def close_streams(self) -> None:
        """End every stream (shutdown)."""
        for queue in list(self._queues):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def publish(self, message: bytes) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # A stream that cannot keep up is ended rather than fed stale rows: EventSource reconnects and the
                # page reloads its data once.
                log.warning("an event stream fell %d events behind; closing it", QUEUE_MAX)
                self._end(queue)

    # -- the LISTEN side ----------------------------------------------------------------------------------

    def notified(self, payload: str) -> None:
        """Note one NOTIFY payload; malformed ones are ignored (they come from our own worker, or a person)."""
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        kiosk = doc.get("kiosk") if isinstance(doc, dict) else None
        if isinstance(kiosk, str) and kiosk:
            self._pending.setdefault(kiosk, set()).add(str(doc.get("what", "")))
            self._wake.set()

    async def run(self) -> None:
        """LISTEN and dispatch until cancelled; reconnects after any connection loss."""
        dispatcher = asyncio.create_task(self._dispatch())
        delay, lost = 0.5, False
        try:
            while True:
                try:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
                except psycopg.Error as exc:
                    if not lost:
                        log.warning("live updates: cannot LISTEN (%s); retrying", _first_line(exc))
                        lost = True
                    await asyncio.sleep(delay)
                    delay = min(self.retry_max_s, delay * 2)
                    continue
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        # What changed meanwhile was never notified: end every stream, so each page's EventSource
                        # reconnects and the page reloads its data once (docs/dashboard-api.md).
                        log.info("live updates: listening again; asking %d page(s) to reload", len(self._queues))
                        self.close_streams()
                    lost, delay = False, 0.5
                    self.listening.set()
                    while True:
                        async for note in conn.notifies(timeout=self.check_every_s):
                            self.notified(note.payload)
                        # Quiet for a while: make sure the connection is still there (a dead peer sends nothing).
                        await conn.execute("SELECT 1")
                except psycopg.Error as exc:
                    self.listening.clear()
                    if not lost:
                        log.warning("live updates: lost the LISTEN connection (%s); reconnecting", _first_line(exc))
                        lost = True
                finally:
                    await _close(conn)
                await asyncio.sleep(delay)
        finally:
            dispatcher.cancel()

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            if not pending:
                continue
            try:
                await self._send(pending)
            except Exception as exc:  # noqa: BLE001 - the feed must outlive any one bad batch (a database blip, a bad row)
                log.warning("live updates: could not read %d kiosk(s): %s", len(pending), _first_line(exc))

    async def _send(self, pending: dict[str, set[str]]) -> None:
        kiosks = sorted(pending)
        for row in await self.rows(kiosks):
            self.publish(sse("kiosk", row))
        with_alarms = [k for k in kiosks if "alarm" in pending[k]]
        if not with_alarms:
            return
        for alarm in await self.alarms(with_alarms):
            key = (alarm["kiosk"], alarm["code"], str(alarm["raised_at"]))
            state = (alarm["cleared_at"], alarm["severity"], alarm["detail"], alarm["latched"], alarm["acked_by"],
                     alarm["acked_at"], alarm["ack_note"])
            if self._seen_alarms.get(key) != state:
                self._seen_alarms[key] = state
                self.publish(sse("alarm", alarm))
        if len(self._seen_alarms) > 50_000:
            self._seen_alarms.clear()     # bounded memory; at worst a few unchanged episodes are sent again


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except psycopg.Error:
        pass
