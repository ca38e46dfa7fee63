# SPDX-License-Identifier: Apache-2.0
"""The durable outbox: the only way to the broker for what must not be lost.

**Delivery guarantee.** A message enqueued in a durable class, and every
journal record, is on disk before ``enqueue``/``record`` returns. It leaves
the outbox only when the broker answers its QoS 1 PUBLISH with a PUBACK
whose reason code is below 0x80. Until then it is published again, in
order within its class, after every reconnect and every restart. A PUBACK
with a reason code of 0x80 or more (0x87 "not authorized") keeps it queued,
pauses its class with back-off and reports ``publish_refused``. So each
message arrives at least once; when it arrives twice it is with the same
id and the same bytes, because the bytes are stored once and re-read.

**Classes** (``CLASSES``): ``result``, ``alarm``, ``config``, ``tx`` and
``evidence`` are durable and never evicted; ``health`` is droppable: a
snapshot the next one supersedes, kept in memory only (latest per topic,
QoS 0 as the contract says), dropped first and refused when over limits.
Lower priority numbers are sent first; order holds within a class.

**Limits.** Beyond ``max_bytes`` / ``max_rows`` or below ``min_free_bytes``
free on the store's disk, droppable messages are evicted and new ones
refused (StoreFull); durable ones are still taken while the disk has room
(a real ENOSPC fails the commit cleanly with StoreFull). ``backlog`` and
``disk_low`` are flags, and ``on_alarm(code, active, detail)`` is told of
``outbox_backlog``, ``disk_low`` and ``publish_refused`` transitions.

**fsync budget.** A row is deleted when its PUBACK arrives, but the delete
is a lazy writer job: it rides the next durable commit or commits alone
with ``synchronous=NORMAL`` after 0.2 s, costing no fsync. In WAL mode a
NORMAL commit is consistent after a power cut but may be lost; losing a
delete only means that message is published once more, byte-identical,
which the guarantee allows. So a transaction costs one fsync (its own
commit) plus its share of checkpoints.

    outbox = Outbox(store, uplink, max_inflight=50, on_alarm=alarms.set)
    await outbox.start()
    await outbox.enqueue("alarm", topics.alarm("door_open"), payload, retain=True)
    await outbox.wait_drained(10)
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from agent.errors import AgentError, StoreError, StoreFull
from agent.store.database import Job, Store, delete_ids, store_error

__all__ = ["CLASSES", "ClassSpec", "Outbox", "OutboxError"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    priority: int
    droppable: bool = False
    qos: int = 1


CLASSES: dict[str, ClassSpec] = {
    "result": ClassSpec(0), "alarm": ClassSpec(1), "config": ClassSpec(1),
    "tx": ClassSpec(2), "evidence": ClassSpec(3),
    "health": ClassSpec(9, droppable=True, qos=0),
}
REFILL = 512
RETRY_MIN_S, RETRY_MAX_S = 5.0, 300.0


class OutboxError(AgentError, ValueError):
    """An unknown class or a payload that is not bytes."""

    code = "agent.outbox.invalid"


@dataclasses.dataclass
class _Row:
    id: int
    cls: str
    topic: str
    payload: bytes
    retain: bool
    size: int


class _State:
    def __init__(self, name: str, spec: ClassSpec) -> None:
        self.name = name
        self.spec = spec
        self.rows = 0            # in the database (in flight and done-pending included)
        self.bytes = 0
        self.cursor = 0          # highest id fetched since the last reset
        self.buffer: collections.deque[_Row] = collections.deque()
        self.inflight = 0
        self.done_pending = 0
        self.paused_until = 0.0
        self.refused: int | None = None
        self.retry_s = RETRY_MIN_S
        self.published = 0
        self.dry = False         # the last refill found nothing: wait for news

    def unsent(self) -> int:
        return self.rows - self.inflight - self.done_pending


class _InsertJob(Job):
    def __init__(self, outbox: Outbox, cls: str, topic: str, payload: bytes, retain: bool) -> None:
        self.outbox = outbox
        self.args = (cls, topic, payload, retain)

    def on_loop(self, result: int) -> None:
        self.outbox._added(self.args[0], 1, len(self.args[2]))

    def run(self, conn: sqlite3.Connection) -> int:
        cls, topic, payload, retain = self.args
        cur = conn.execute("INSERT INTO outbox(cls, topic, payload, ref, retain, size, created_ms) "
                           "VALUES (?, ?, ?, NULL, ?, ?, ?)",
                           (cls, topic, payload, int(retain), len(payload), int(time.time() * 1000)))
        return int(cur.lastrowid or 0)


class _Barrier(Job):
    durable = False

    def run(self, conn: sqlite3.Connection) -> None:
        return None


class _DoneJob(Job):
    durable = False          # see "fsync budget" in the module docstring

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def run(self, conn: sqlite3.Connection) -> None:
        delete_ids(conn, "outbox", self.ids)


class Outbox:
    """Durable, prioritised, ordered QoS 1 delivery through ``uplink``.

    ``uplink`` provides ``connected``, ``add_connect_listener(cb)``,
    ``add_disconnect_listener(cb)`` and ``publish(topic, payload, qos=,
    retain=, on_done=)``, calling ``on_done(reason code or NotConnected)``
    (agent.uplink.Uplink). Loop thread only.
    """

    def __init__(self, store: Store, uplink: Any, *, max_inflight: int = 50, max_bytes: int = 256 * 2**20,
                 max_rows: int | None = None, min_free_bytes: int = 100 * 2**20,
                 on_alarm: Callable[[str, bool, str], Any] | None = None,
                 disk_check_s: float = 5.0) -> None:
        if not 1 <= max_inflight <= 65535:
            raise OutboxError(f"max_inflight {max_inflight} out of range")
        self.store = store
        self.uplink = uplink
        self.max_inflight = max_inflight
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.min_free_bytes = min_free_bytes
        self.on_alarm = on_alarm
        self.disk_check_s = disk_check_s
        self._states = {name: _State(name, spec) for name, spec in CLASSES.items()}
        self._order = sorted(self._states.values(), key=lambda s: s.spec.priority)
        self._memory: dict[str, collections.OrderedDict[str, _Row]] = {
            n: collections.OrderedDict() for n, s in CLASSES.items() if s.droppable}
        self._inflight: dict[int, _Row] = {}
        self._done: dict[int, _Row] = {}
        self._done_batch: list[_Row] = []
        self._flush_scheduled = False
        self._limits_due = False
        self._next_mem_id = -1
        self._replay = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reader: sqlite3.Connection | None = None
        self._running = False
        self._free_at = 0.0
        self.free_bytes: int | None = None
        self.backlog = False
        self.disk_low = False
        self.refusals = 0
        self._alarmed: dict[str, bool] = {}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._reader = self.store.reader()
        for cls, rows, size in self._reader.execute("SELECT cls, count(*), coalesce(sum(size), 0) "
                                                    "FROM outbox GROUP BY cls"):
            state = self._states.get(cls)
            if state is None:
                log.error("outbox rows of unknown class %r left in the store", cls)
                continue
            state.rows, state.bytes = int(rows), int(size)
        self.store.outbox_listeners.append(self._added)
        self.uplink.add_connect_listener(self._on_connect)
        self.uplink.add_disconnect_listener(self._on_disconnect)
        self._running = True
        self._check_limits(force=True)
        self._task = asyncio.create_task(self._run(), name="outbox")
        self._wake.set()

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop pumping; with ``drain_s``, first give what is queued that long to reach the broker.

        What is left stays on disk and goes after the next start either way.
        """
        if drain_s > 0 and self.uplink.connected and self.pending_count():
            await self.wait_drained(drain_s)
        self._running = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
        if self._added in self.store.outbox_listeners:
            self.store.outbox_listeners.remove(self._added)
        if self._done_batch:
            fut = self._flush_done()
            if fut is not None:
                try:
                    await asyncio.wait_for(fut, 5)
                except (TimeoutError, StoreError):
                    pass
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """True once nothing is waiting or in flight (polls; never raises on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet_since: float | None = None
        while self.pending_count():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            stuck = self.uplink.connected and not self._inflight and all(s.dry or s.paused_until > now
                                                                         for s in self._states.values()
                                                                         if s.unsent() > 0)
            quiet_since = (quiet_since or now) if stuck else None
            if quiet_since is not None and now - quiet_since > 1.0:
                await self.resync()
                quiet_since = None
            await asyncio.sleep(0.02)
        return True

    async def resync(self) -> None:
        """Recount the classes from the database once the writer is idle.

        A barrier job first: when it is settled, every earlier commit's
        notification has run on the loop, so the database and the counts
        describe the same moment.
        """
        await self.store.writer.submit_async(_Barrier())
        if self._reader is None:
            return
        fresh = {cls: (int(n), int(b)) for cls, n, b in self._reader.execute(
            "SELECT cls, count(*), coalesce(sum(size), 0) FROM outbox GROUP BY cls").fetchall()}
        for name, state in self._states.items():
            if state.spec.droppable:
                continue
            rows, size = fresh.get(name, (0, 0))
            if rows != state.rows:
                log.warning("outbox %s count resynced: %d -> %d", name, state.rows, rows)
            state.rows, state.bytes, state.dry = rows, size, False
            state.done_pending = sum(1 for r in self._done.values() if r.cls == name)
        self._replay = True
        self._wake.set()

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(self, cls: str, topic: str, payload: bytes, retain: bool = False) -> int:
        """Queue one message; for durable classes, returns after the fsynced commit.

        Raises StoreFull (droppable class over limits, or disk full),
        StoreError, OutboxError.
        """
        return await self.enqueue_nowait(cls, topic, payload, retain)

    def enqueue_nowait(self, cls: str, topic: str, payload: bytes, retain: bool = False) -> asyncio.Future[int]:
        """Same as enqueue, for synchronous callers (alarms): the future says when it is durable."""
        spec = CLASSES.get(cls)
        if spec is None:
            raise OutboxError(f"unknown outbox class {cls!r}; one of {', '.join(CLASSES)}")
        if not isinstance(payload, (bytes, bytearray)):
            raise OutboxError("payload must be bytes")
        loop = asyncio.get_running_loop()
        if spec.droppable:
            fut: asyncio.Future[int] = loop.create_future()
            self._check_limits()
            if self._over_limits():
                self._evict_droppable()
                fut.set_exception(StoreFull(f"outbox over its limits: {cls} message refused"))
                return fut
            row = _Row(self._next_mem_id, cls, topic, bytes(payload), retain, len(payload))
            self._next_mem_id -= 1
            queue = self._memory[cls]
            queue.pop(topic, None)          # a snapshot supersedes the one not yet sent
            queue[topic] = row
            fut.set_result(row.id)
            self._wake.set()
            return fut
        return self.store.writer.submit_async(_InsertJob(self, cls, topic, bytes(payload), retain))

    def _added(self, cls: str, rows: int, size: int) -> None:
        state = self._states[cls]
        state.rows += rows
        state.bytes += size
        state.dry = False
        # A group commit tells of its records one by one, in one loop
        # callback: the limits are checked once, after the last of them.
        if not self._limits_due:
            self._limits_due = True
            asyncio.get_running_loop().call_soon(self._check_limits_due)
        self._wake.set()

    def _check_limits_due(self) -> None:
        self._limits_due = False
        self._check_limits()

    # -- limits and alarms -----------------------------------------------------------------

    def _over_limits(self) -> bool:
        return self.backlog or self.disk_low

    def _evict_droppable(self) -> None:
        for queue in self._memory.values():
            queue.clear()

    def _check_limits(self, force: bool = False) -> None:
        rows = sum(s.rows for s in self._states.values())
        size = sum(s.bytes for s in self._states.values())
        over = size >= self.max_bytes or (self.max_rows is not None and rows >= self.max_rows)
        # Hysteresis: clear below 90 % so the alarm does not flap at the line.
        if self.backlog and not over:
            over = size >= 0.9 * self.max_bytes or (self.max_rows is not None and rows >= 0.9 * self.max_rows)
        self.backlog = over
        now = time.monotonic()
        if force or now >= self._free_at:
            self._free_at = now + self.disk_check_s
            try:
                st = os.statvfs(self.store.path.parent)
                self.free_bytes = st.f_bavail * st.f_frsize
                self.disk_low = self.free_bytes < self.min_free_bytes
            except OSError:
                pass
        if self._over_limits():
            self._evict_droppable()
        self._alarm("outbox_backlog", self.backlog, f"{rows} messages, {size} bytes queued")
        self._alarm("disk_low", self.disk_low, f"{(self.free_bytes or 0) // 2**20} MB free on the store's disk")

    def _alarm(self, code: str, active: bool, detail: str) -> None:
        if self._alarmed.get(code, False) == active:
            return
        self._alarmed[code] = active
        (log.warning if active else log.info)("%s %s: %s", code, "raised" if active else "cleared", detail)
        if self.on_alarm is not None:
            try:
                self.on_alarm(code, active, detail)
            except Exception:
                log.exception("outbox alarm callback failed")

    # -- connection events -----------------------------------------------------------------

    def _on_connect(self) -> None:
        if self._running:
            self._replay = True
            self._wake.set()

    def _on_disconnect(self) -> None:
        self._replay = True

    # -- the pump --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._pump()
            except sqlite3.Error as exc:
                log.error("outbox read failed: %s", store_error(exc, "outbox"))
                await asyncio.sleep(1.0)
                self._wake.set()

    def _pump(self) -> None:
        if not self.uplink.connected:
            return
        if self._replay:
            # Everything not acknowledged goes again, from the start of each class.
            self._replay = False
            for state in self._states.values():
                state.cursor = 0
                state.buffer.clear()
                state.dry = False
        while len(self._inflight) < self.max_inflight:
            row = self._next_row()
            if row is None:
                return
            spec = CLASSES[row.cls]
            self._inflight[row.id] = row
            self._states[row.cls].inflight += 1
            self.uplink.publish(row.topic, row.payload, qos=spec.qos, retain=row.retain,
                                on_done=functools.partial(self._acked, row))
            if self._replay:
                return          # refused on the spot (connection gone): start over after reconnect

    def _next_row(self) -> _Row | None:
        now = time.monotonic()
        for state in self._order:
            if state.paused_until > now:
                continue
            if state.spec.droppable:
                queue = self._memory[state.name]
                if queue:
                    _topic, row = queue.popitem(last=False)
                    return row
                continue
            while True:
                if not state.buffer and state.unsent() > 0 and not state.dry:
                    self._refill(state)
                if not state.buffer:
                    break
                row = state.buffer.popleft()
                if row.id in self._inflight or row.id in self._done:
                    continue
                return row
        return None

    def _refill(self, state: _State) -> None:
        assert self._reader is not None
        for attempt in range(2):
            rows = self._reader.execute(
                "SELECT o.id, o.topic, o.retain, o.size, coalesce(o.payload, j.payload), o.ref, "
                "CASE WHEN o.payload IS NULL THEN j.hash END FROM outbox o "
                "LEFT JOIN journal j ON j.seq = o.ref WHERE o.cls = ? AND o.id > ? ORDER BY o.id LIMIT ?",
                (state.name, state.cursor, REFILL)).fetchall()
            fresh = False
            for rid, topic, retain, size, payload, ref, stored_hash in rows:
                state.cursor = rid
                if rid in self._inflight or rid in self._done:
                    continue
                # A journal record is checked against its hash before it leaves: bytes
                # rotted on the card must not go out under an id already published intact.
                damage = ("journal row missing" if payload is None else
                          "bytes do not match their hash" if stored_hash is not None
                          and hashlib.sha256(payload).hexdigest() != stored_hash else None)
                if damage is not None:
                    log.error("outbox row %d (journal seq %s): %s; not published", rid, ref, damage)
                    self._alarm("store_corrupt", True, f"journal seq {ref}: {damage}; not published")
                    self._done_batch.append(_Row(rid, state.name, topic, b"", bool(retain), int(size)))
                    self._schedule_flush()
                    continue
                state.buffer.append(_Row(rid, state.name, topic, bytes(payload), bool(retain), int(size)))
                fresh = True
            if fresh or len(rows) == REFILL:
                return
            if attempt == 0:
                state.cursor = 0
        # The counts say more than the database shows: a notification still on
        # its way, or drift. Do not touch the counts here (they race with the
        # writer's notifications); resync() corrects them at a quiet moment.
        state.dry = True

    def _acked(self, row: _Row, outcome: int | BaseException) -> None:
        """The uplink's answer for ``row``: a PUBACK reason code, or NotConnected."""
        self._inflight.pop(row.id, None)
        state = self._states[row.cls]
        state.inflight -= 1
        self._wake.set()
        if isinstance(outcome, BaseException):
            # NotConnected: the connection went; the row is replayed after reconnect.
            self._replay = True
            return
        code = outcome
        if code >= 0x80:
            self._refused(state, row, code)
            return
        state.published += 1
        if state.refused is not None:
            state.refused, state.retry_s = None, RETRY_MIN_S
            if not any(s.refused is not None for s in self._states.values()):
                self._alarm("publish_refused", False, "broker accepts publishes again")
        if row.id < 0:
            return          # a droppable row: it lived in memory only
        state.done_pending += 1
        self._done[row.id] = row
        self._done_batch.append(row)
        self._schedule_flush()

    def _refused(self, state: _State, row: _Row, code: int) -> None:
        self.refusals += 1
        if row.id < 0:
            log.warning("broker refused %s on %s: 0x%02x; dropped", row.cls, row.topic, code)
            return
        state.refused = code
        state.paused_until = time.monotonic() + state.retry_s
        log.error("broker refused %s on %s with 0x%02x; class paused %.0fs", row.cls, row.topic, code, state.retry_s)
        loop = asyncio.get_running_loop()
        loop.call_later(state.retry_s + 0.01, self._wake.set)
        state.retry_s = min(RETRY_MAX_S, state.retry_s * 2)
        # Resend from the refused row, in order, when the pause ends.
        state.cursor = min(state.cursor, row.id - 1)
        state.buffer.clear()
        self._alarm("publish_refused", True, f"0x{code:02x} on {row.topic}")

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_done)

    def _flush_done(self) -> asyncio.Future[None] | None:
        self._flush_scheduled = False
        batch, self._done_batch = self._done_batch, []
        if not batch:
            return None
        fut = self.store.writer.submit_async(_DoneJob([r.id for r in batch]))
        fut.add_done_callback(lambda f: self._deleted(f, batch))
        return fut

    def _deleted(self, fut: Any, batch: list[_Row]) -> None:
        ok = not fut.cancelled() and fut.exception() is None
        for row in batch:
            if self._done.pop(row.id, None) is None:
                continue
            state = self._states[row.cls]
            state.done_pending -= 1
            state.dry = False
            if ok:
                state.rows -= 1
                state.bytes -= row.size
        if not ok:
            # Still in the database: it will be published again (same bytes).
            log.warning("delivery marks not stored: %s", fut.exception() if not fut.cancelled() else "cancelled")
            self._replay = True
        self._check_limits()
        self._wake.set()

    # -- reporting -------------------------------------------------------------------------

    def pending_count(self) -> int:
        """Messages not yet acknowledged by the broker (durable and in memory)."""
        return sum(s.rows - s.done_pending for s in self._states.values()) + \
            sum(len(q) for q in self._memory.values()) + sum(1 for r in self._inflight if r < 0)

    def stats(self) -> dict[str, Any]:
        """The ``outbox`` section of health."""
        depth = {name: s.rows - s.done_pending + len(self._memory.get(name, ())) for name, s in self._states.items()}
        oldest = None
        if self._reader is not None:
            try:
                row = self._reader.execute("SELECT created_ms FROM outbox ORDER BY id LIMIT 1").fetchone()
                oldest = round(time.time() - row[0] / 1000, 1) if row else None
            except sqlite3.Error:
                pass
        return {"depth": depth, "bytes": sum(s.bytes for s in self._states.values()),
                "inflight": len(self._inflight), "oldest_age_s": oldest, "backlog": self.backlog,
                "disk_low": self.disk_low, "free_mb": None if self.free_bytes is None else self.free_bytes // 2**20,
                "refused": {n: f"0x{s.refused:02x}" for n, s in self._states.items() if s.refused is not None},
                "refusals": self.refusals, "published": {n: s.published for n, s in self._states.items()}}
