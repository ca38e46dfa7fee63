# SPDX-License-Identifier: Apache-2.0
"""The kiosks' history for the fleet dashboard: state, health, alarms and command results in PostgreSQL.

    worker = HistoryWorker(cfg, connect=lambda: db.connect(dsn, autocommit=True), observer=metrics).start()
    ...
    worker.stop()

Its own MQTT 5 client (``<mqtt.client_id>-history``, a persistent session)
takes a fleet's ``state``, ``health``, ``alarm/+`` and ``cmd/+/result``
through shared subscriptions (``$share/<share_group>-history/...``), so any
number of ledger workers split the load and any may die. A shared
subscription never receives retained messages, so on every (re)connect the
worker also subscribes plainly to the retained ``state``, ``health`` and
``alarm/+`` of the fleet, applies what the broker holds, and unsubscribes
once none has come for ``history.snapshot_quiet_ms``.

Every message is applied idempotently and in the kiosk's order whatever
order it arrives in (two workers, a snapshot after live messages):

- ``state``: the birth or Will with the higher ``bdSeq`` wins; of one
  ``bdSeq``, the Will follows the birth; a Will with a lower ``bdSeq`` than
  the current birth is ignored (the MQTT contract). A birth with a lower
  ``bdSeq`` but a newer ``ts`` than the current state is a kiosk whose
  store (and counter) was lost, and wins. A Will's ``ts`` is when the kiosk
  connected (the Will is built before the connection), so its time here is
  when the ledger received it.
- ``health``: the newest ``ts`` is the kiosk's current health.
- ``alarm/{code}``: one ``alarm_history`` episode per raise (keyed by its
  ``since``); the clear closes the open one. ``alarm_state`` holds the
  newest message of each code, so a raise that reaches a worker after its
  clear is stored closed. Deprecated alias messages (``alias_of``) are not
  stored.
- ``cmd/{name}/result``: one row per status of a command.

QoS 1 messages are PUBACKed only after the transaction holding them
committed (health is QoS 0). In that transaction the worker sends
``NOTIFY kiosk_history, '{"kiosk": "...", "what": "state|health|alarm|cmd"}'``
once per kiosk and kind that changed (the dashboard LISTENs).

History is not evidence: a malformed message (not JSON, not the contract's
schema, its kiosk not the topic's) is counted, logged at most once a minute
per kiosk (kiosk and topic, never the payload) and dropped. Every
``history.prune_interval_s`` one worker (an advisory lock) deletes what is
older than ``history.retention_days``, in bounded batches.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import jsonschema
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from psycopg.types.json import Jsonb

from agent.wire.contract import ROOT, loads_strict, parse_topic, validate
from fleet.errors import FleetError
from fleet.ledger.config import LedgerConfig
from fleet.ledger.receiver import connect_persistent, use_tls

__all__ = ["HistoryWorker", "HistoryStore", "HistoryObserver", "HistoryMessage", "Dropped", "Applied",
           "check_message", "history_topics", "snapshot_topics", "NOTIFY_CHANNEL", "PRUNE_LOCK", "KINDS"]

log = logging.getLogger("fleet.ledger.history")

NOTIFY_CHANNEL = "kiosk_history"
KINDS = ("state", "health", "alarm", "cmd")
# pg_try_advisory_xact_lock key: one worker prunes at a time ("kl-hist").
PRUNE_LOCK = 0x6B6C2D68697374
MALFORMED_LOG_S = 60.0          # a kiosk's malformed messages are logged at most this often
RETRY_MAX_S = 5.0
_COLLECT_POLL_S = 0.002      # a batch being collected ends when its inbox did not grow for this long
_SCHEMAS = {"state": "state", "health": "health", "alarm": "alarm", "cmd": "cmd-result"}


def history_topics(group: str, fleet: str) -> list[str]:
    """The shared subscriptions: every kiosk's state, health, alarms and command results of ``fleet``."""
    base = f"$share/{group}/{ROOT}/{fleet}/+"
    return [f"{base}/state", f"{base}/health", f"{base}/alarm/+", f"{base}/cmd/+/result"]


def snapshot_topics(fleet: str) -> list[str]:
    """The retained topics read once per connection through a plain subscription."""
    base = f"{ROOT}/{fleet}/+"
    return [f"{base}/state", f"{base}/health", f"{base}/alarm/+"]


_FOREVER = datetime.datetime.max.replace(tzinfo=datetime.UTC)


def _time(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class HistoryMessage:
    """A checked message: its kind, kiosk and the kiosk's time (``at``; a Will's is when it was received)."""

    kind: str
    fleet: str
    kiosk: str
    doc: dict[str, Any]
    at: datetime.datetime
    correlation: str = ""
    topic: str = ""


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A malformed message: why, in words that never quote the payload."""

    kind: str
    kiosk: str
    topic: str
    reason: str


def _kind(rest: str) -> str | None:
    if rest in ("state", "health"):
        return rest
    parts = rest.split("/")
    if len(parts) == 2 and parts[0] == "alarm":
        return "alarm"
    if len(parts) == 3 and parts[0] == "cmd" and parts[2] == "result":
        return "cmd"
    return None


def check_message(topic: str, payload: bytes, *, fleet: str, received: datetime.datetime,
                  correlation: bytes | None = None) -> HistoryMessage | Dropped | None:
    """Parse and validate one message against the wire contract; None for what history ignores.

    Ignored: an empty payload (a retained topic being deleted) and another
    fleet's or a foreign topic (the subscriptions name only this fleet's).
    """
    parsed = parse_topic(topic)
    if parsed is None or parsed[0] != fleet or not payload:
        return None
    _fleet, kiosk, rest = parsed
    kind = _kind(rest)
    if kind is None:
        return None
    try:
        doc = loads_strict(payload)
    except ValueError:
        return Dropped(kind, kiosk, topic, "not JSON")
    try:
        validate(_SCHEMAS[kind], doc)
    except jsonschema.ValidationError as exc:
        # The validator's message quotes the offending value: name only the rule and where it failed.
        return Dropped(kind, kiosk, topic, f"schema {_SCHEMAS[kind]}: {exc.validator} at {exc.json_path}")
    if doc["kiosk"] != kiosk:
        return Dropped(kind, kiosk, topic, "the payload's kiosk is not the topic's")
    if kind == "alarm" and doc["code"] != rest.split("/")[1]:
        return Dropped(kind, kiosk, topic, "the payload's code is not the topic's")
    if kind == "cmd" and doc["name"] != rest.split("/")[1]:
        return Dropped(kind, kiosk, topic, "the payload's command name is not the topic's")
    at = received if kind == "state" and doc.get("reason") == "will" else _time(doc["ts"])
    corr = doc.get("correlation") or (correlation.hex() if correlation else "")
    return HistoryMessage(kind, fleet, kiosk, doc, at, corr, topic)


class HistoryObserver(Protocol):
    """What the worker reports (:class:`fleet.ledger.metrics.LedgerMetrics`)."""

    def history_received(self, *, kind: str, count: int) -> None:
        """``count`` valid messages of ``kind`` committed (duplicates included)."""

    def history_malformed(self, *, kind: str) -> None:
        """One malformed message dropped."""


@dataclasses.dataclass
class Applied:
    """What one transaction changed: (kiosk, what) pairs notified, and how many messages of each kind."""

    changed: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    received: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


# -- SQL ----------------------------------------------------------------------------------------

# Once per kiosk of a batch, first and in kiosk order: the row exists, and is locked (ON CONFLICT DO UPDATE
# locks it even when its WHERE is false), so the rest of the batch's writes for that kiosk follow the same lock
# order in every worker. last_seen: the newest message of any kind but a Will (which says the kiosk vanished,
# not that it spoke); NULL when the batch holds only Wills of it.
_TOUCH = """
INSERT INTO kiosk_status AS s (kiosk, fleet, last_seen) VALUES (%(kiosk)s, %(fleet)s, coalesce(%(seen)s, %(at)s))
ON CONFLICT (kiosk) DO UPDATE SET last_seen = EXCLUDED.last_seen, updated_at = now()
WHERE %(seen)s::timestamptz IS NOT NULL AND s.last_seen < EXCLUDED.last_seen
"""
# Which state wins: see the module docstring. online_since moves when online changes, and on a birth of
# another connection (the kiosk was away in between even if its Will never came).
_STATE = """
UPDATE kiosk_status AS s SET
    online = %(online)s, bd_seq = %(bd)s,
    online_since = CASE WHEN s.online IS DISTINCT FROM %(online)s OR (%(online)s AND s.bd_seq IS DISTINCT FROM %(bd)s)
                        THEN %(at)s ELSE s.online_since END,
    site = coalesce(%(site)s::text, s.site),
    mode = CASE WHEN %(mode)s::text IS NOT NULL AND (s.health_at IS NULL OR s.health_at <= %(at)s)
                THEN %(mode)s::text ELSE s.mode END,
    versions = coalesce(%(versions)s::jsonb, s.versions),
    peripherals = coalesce(%(peripherals)s::jsonb, s.peripherals),
    updated_at = now()
WHERE s.kiosk = %(kiosk)s AND (
    s.bd_seq IS NULL OR %(bd)s > s.bd_seq
    OR (%(bd)s = s.bd_seq AND s.online AND NOT %(online)s)
    OR (%(online)s AND %(bd)s < s.bd_seq AND %(at)s > coalesce(
        (SELECT h.ts FROM state_history h WHERE h.kiosk = s.kiosk AND h.bd_seq = s.bd_seq AND h.online = s.online),
        '-infinity'::timestamptz)))
"""
_STATE_HISTORY = """
INSERT INTO state_history (kiosk, fleet, ts, online, bd_seq, reason, mode)
VALUES (%(kiosk)s, %(fleet)s, %(at)s, %(online)s, %(bd)s, %(reason)s, %(mode)s) ON CONFLICT DO NOTHING
"""
_HEALTH = """
UPDATE kiosk_status AS s SET health = %(doc)s, health_at = %(at)s, mode = %(mode)s, updated_at = now()
WHERE s.kiosk = %(kiosk)s AND (s.health_at IS NULL OR s.health_at < %(at)s)
"""
_HEALTH_HISTORY = """
INSERT INTO health_history (kiosk, fleet, ts, mode, disk_free_mb, cpu_temp_c, outbox_backlog, connects, rss_mb,
                            payload)
VALUES (%(kiosk)s, %(fleet)s, %(at)s, %(mode)s, %(disk)s, %(temp)s, %(backlog)s, %(connects)s, %(rss)s, %(doc)s)
ON CONFLICT DO NOTHING
RETURNING kiosk
"""
# Returns a row only when this message is the newest of its code (inserted, or newer than the stored one).
_ALARM_STATE = """
INSERT INTO alarm_state AS a (kiosk, code, active, since, ts)
VALUES (%(kiosk)s, %(code)s, %(active)s, %(since)s, %(at)s)
ON CONFLICT (kiosk, code) DO UPDATE SET active = EXCLUDED.active, since = EXCLUDED.since, ts = EXCLUDED.ts
WHERE a.ts < EXCLUDED.ts
RETURNING 1
"""
_ALARM_NEWEST = "SELECT active, since FROM alarm_state WHERE kiosk = %(kiosk)s AND code = %(code)s"
_EPISODE_OPEN = """
INSERT INTO alarm_history (kiosk, fleet, code, raised_at, severity, detail, device, latched)
VALUES (%(kiosk)s, %(fleet)s, %(code)s, %(since)s, %(severity)s, %(detail)s, %(device)s, coalesce(%(latched)s, false))
ON CONFLICT DO NOTHING
RETURNING 1
"""
_EPISODE_UPDATE = """
UPDATE alarm_history SET severity = %(severity)s, detail = %(detail)s, device = %(device)s,
    latched = coalesce(%(latched)s, latched), updated_at = now()
WHERE kiosk = %(kiosk)s AND code = %(code)s AND raised_at = %(since)s
  AND (severity, detail, device, latched) IS DISTINCT FROM
      (%(severity)s, %(detail)s, %(device)s::text, coalesce(%(latched)s, latched))
"""
# A clear (or, provisionally, a later raise: the clear between them may be late or lost) ends the open
# episodes raised before it. cleared_at only ever moves earlier, toward the clear that really ended it.
_EPISODE_CLOSE = """
UPDATE alarm_history SET cleared_at = %(until)s, updated_at = now()
WHERE kiosk = %(kiosk)s AND code = %(code)s AND raised_at <= %(until)s AND raised_at < %(before)s
  AND (cleared_at IS NULL OR cleared_at > %(until)s)
"""
_ACTIVE_ALARMS = """
UPDATE kiosk_status AS s SET updated_at = now(), active_alarms = coalesce(
    (SELECT jsonb_agg(jsonb_build_object('code', a.code, 'severity', a.severity, 'since', a.raised_at)
                      ORDER BY a.raised_at, a.code)
     FROM alarm_history a WHERE a.kiosk = s.kiosk AND a.cleared_at IS NULL), '[]'::jsonb)
WHERE s.kiosk = %(kiosk)s
"""
_CMD = """
INSERT INTO cmd_results (kiosk, fleet, name, correlation, status, code, message, result, ts)
VALUES (%(kiosk)s, %(fleet)s, %(name)s, %(corr)s, %(status)s, %(code)s, %(message)s, %(result)s, %(at)s)
ON CONFLICT DO NOTHING
"""
_NOTIFY = "SELECT pg_notify(%s, %s)"
# Bounded deletes: the newest rows of a busy fleet are never locked long by a prune.
_PRUNE = {
    "state_history": "DELETE FROM state_history WHERE ctid = ANY(ARRAY("
                     "SELECT ctid FROM state_history WHERE ts < %(cutoff)s LIMIT %(limit)s))",
    "health_history": "DELETE FROM health_history WHERE ctid = ANY(ARRAY("
                      "SELECT ctid FROM health_history WHERE ts < %(cutoff)s LIMIT %(limit)s))",
    "cmd_results": "DELETE FROM cmd_results WHERE ctid = ANY(ARRAY("
                   "SELECT ctid FROM cmd_results WHERE ts < %(cutoff)s LIMIT %(limit)s))",
    "alarm_history": "DELETE FROM alarm_history WHERE ctid = ANY(ARRAY("
                     "SELECT ctid FROM alarm_history WHERE cleared_at < %(cutoff)s LIMIT %(limit)s))",
}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _section(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


class HistoryStore:
    """Applies checked messages to the history tables in one transaction per batch (a psycopg connection)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def apply(self, messages: Iterable[HistoryMessage]) -> Applied:
        """Apply ``messages`` and notify, in one transaction; the caller acknowledges after it returns."""
        applied = Applied()
        # Kiosk by kiosk (stable: a kiosk's own order kept), so concurrent workers take row locks in one order.
        ordered = sorted(messages, key=lambda m: m.kiosk)
        with self.conn.transaction():
            self._touch(ordered)
            # Health is most of the volume: its writes go as two pipelined statements, not two per message.
            healths = [m for m in ordered if m.kind == "health"]
            if healths:
                applied.received["health"] = len(healths)
            applied.changed |= {(kiosk, "health") for kiosk in self._health(healths)}
            alarms_changed: set[str] = set()
            for msg in ordered:
                if msg.kind == "health":
                    continue
                applied.received[msg.kind] += 1
                if self._apply(msg):
                    applied.changed.add((msg.kiosk, msg.kind))
                    if msg.kind == "alarm":
                        alarms_changed.add(msg.kiosk)
            for kiosk in sorted(alarms_changed):
                self.conn.execute(_ACTIVE_ALARMS, {"kiosk": kiosk})
            for kiosk, what in sorted(applied.changed):
                self.conn.execute(_NOTIFY, (NOTIFY_CHANNEL, json.dumps({"kiosk": kiosk, "what": what})))
        return applied

    def _touch(self, ordered: list[HistoryMessage]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for msg in ordered:
            row = rows.setdefault(msg.kiosk, {"kiosk": msg.kiosk, "fleet": msg.fleet, "at": msg.at, "seen": None})
            if not (msg.kind == "state" and msg.doc.get("reason") == "will"):
                row["seen"] = msg.at if row["seen"] is None else max(row["seen"], msg.at)
        with self.conn.cursor() as cur:
            cur.executemany(_TOUCH, list(rows.values()))

    def _apply(self, msg: HistoryMessage) -> bool:
        """One state, alarm or command-result message; True if it changed something the dashboard shows."""
        base = {"kiosk": msg.kiosk, "fleet": msg.fleet, "at": msg.at}
        if msg.kind == "state":
            return self._state(msg, base)
        if msg.kind == "alarm":
            return self._alarm(msg, base)
        return self._cmd(msg, base)

    def _state(self, msg: HistoryMessage, base: dict[str, Any]) -> bool:
        doc = msg.doc
        versions, peripherals = doc.get("versions"), doc.get("peripherals")
        params = {**base, "online": doc["online"], "bd": doc["bdSeq"], "site": doc.get("site"),
                  "mode": doc.get("mode"), "reason": doc.get("reason"),
                  "versions": Jsonb(versions) if versions is not None else None,
                  "peripherals": Jsonb(peripherals) if peripherals is not None else None}
        current = self.conn.execute(_STATE, params).rowcount > 0
        recorded = self.conn.execute(_STATE_HISTORY, params).rowcount > 0
        return current or recorded

    def _health(self, messages: list[HistoryMessage]) -> set[str]:
        """Health reports: the newest is each kiosk's current health; every new one a row. Kiosks with a new one."""
        if not messages:
            return set()
        params = []
        for msg in messages:
            doc = msg.doc
            params.append({"kiosk": msg.kiosk, "fleet": msg.fleet, "at": msg.at, "doc": Jsonb(doc), "mode": doc["mode"],
                           "disk": _number(_section(doc, "system", "disk_free_mb")),
                           "temp": _number(_section(doc, "system", "cpu_temp_c")),
                           "backlog": _integer(_section(doc, "outbox", "tx", "unacked")),
                           "connects": _integer(_section(doc, "agent", "connects")),
                           "rss": _number(_section(doc, "agent", "rss_mb"))})
        new: set[str] = set()
        with self.conn.cursor() as cur:
            cur.executemany(_HEALTH, params)
            cur.executemany(_HEALTH_HISTORY, params, returning=True)
            while True:
                new.update(row[0] for row in cur.fetchall())
                if not cur.nextset():
                    break
        return new

    def _alarm(self, msg: HistoryMessage, base: dict[str, Any]) -> bool:
        doc = msg.doc
        if "alias_of" in doc:
            return False        # a deprecated name mirroring a current one: that one is stored
        since = _time(doc["since"])
        params = {**base, "code": doc["code"], "active": doc["active"], "since": since,
                  "severity": doc["severity"], "detail": doc["detail"], "device": doc.get("device"),
                  "latched": doc.get("latched")}
        newest = self.conn.execute(_ALARM_STATE, params).fetchone() is not None
        if not doc["active"]:
            return self.conn.execute(_EPISODE_CLOSE, {**params, "until": since, "before": _FOREVER}).rowcount > 0
        changed = self.conn.execute(_EPISODE_OPEN, params).fetchone() is not None
        if newest:
            if not changed:
                changed = self.conn.execute(_EPISODE_UPDATE, params).rowcount > 0
            # Episodes of this code still open from before this raise lost their clear: they ended by now.
            changed |= self.conn.execute(_EPISODE_CLOSE, {**params, "until": since, "before": since}).rowcount > 0
        elif changed:
            # A newer message of this code came first: a clear, or a later raise. This episode ended by then.
            row = self.conn.execute(_ALARM_NEWEST, params).fetchone()
            if row is not None and row[1] >= since and (not row[0] or row[1] > since):
                self.conn.execute(_EPISODE_CLOSE, {**params, "until": row[1], "before": _FOREVER})
        return changed

    def _cmd(self, msg: HistoryMessage, base: dict[str, Any]) -> bool:
        doc = msg.doc
        result = doc.get("result")
        params = {**base, "name": doc["name"], "corr": msg.correlation, "status": doc["status"],
                  "code": doc.get("code"), "message": doc.get("message"),
                  "result": Jsonb(result) if result is not None else None}
        return self.conn.execute(_CMD, params).rowcount > 0

    def prune(self, *, retention_days: int, limit: int) -> dict[str, int] | None:
        """One bounded round of deletes past retention; None when another worker holds the prune lock.

        Returns rows deleted per table: a table at ``limit`` has more to go.
        """
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=retention_days)
        with self.conn.transaction():
            row = self.conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,)).fetchone()
            if not row or not row[0]:
                return None
            return {table: self.conn.execute(sql, {"cutoff": cutoff, "limit": limit}).rowcount
                    for table, sql in _PRUNE.items()}


# -- the worker ---------------------------------------------------------------------------------

class _Delivered:
    __slots__ = ("generation", "mid", "qos", "retain", "topic", "payload", "correlation", "received")

    def __init__(self, generation: int, msg: paho.MQTTMessage) -> None:
        self.generation = generation
        self.mid = msg.mid
        self.qos = msg.qos
        self.retain = bool(msg.retain)
        self.topic = msg.topic
        self.payload = bytes(msg.payload)
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        self.correlation: bytes | None = bytes(corr) if corr else None
        self.received = datetime.datetime.now(datetime.UTC)


class _NoObserver:
    def history_received(self, *, kind: str, count: int) -> None:
        pass

    def history_malformed(self, *, kind: str) -> None:
        pass


class HistoryWorker:
    """A thread: MQTT in (shared subscriptions and the retained snapshot), batches into PostgreSQL, PUBACKs."""

    def __init__(self, cfg: LedgerConfig, *, connect: Callable[[], psycopg.Connection[Any]],
                 observer: HistoryObserver | None = None) -> None:
        self.cfg = cfg
        self.fleet = cfg.ledger.fleet
        self.group = f"{cfg.ledger.share_group}-history"
        self.connect = connect
        self.observer: HistoryObserver = observer or _NoObserver()
        self.inbox: collections.deque[_Delivered] = collections.deque()
        self._arrived = threading.Event()
        self.generation = 0
        self._gen_lock = threading.Lock()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="ledger-history", daemon=True)
        # The retained snapshot of the current connection: (subscribe mid, last retained message, messages).
        self._snapshot_mid: int | None = None
        self._snapshot_open = False
        self._snapshot_last = 0.0
        self._snapshot_count = 0
        self._malformed_logged: dict[str, float] = {}
        self._conn: psycopg.Connection[Any] | None = None
        self._next_prune = 0.0
        self._pruned: collections.Counter[str] = collections.Counter()     # rows deleted by this prune run
        self.client = self._client()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> HistoryWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    # -- MQTT ------------------------------------------------------------------------------

    def _client(self) -> paho.Client:
        mq = self.cfg.mqtt
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{mq.client_id}-history",
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.manual_ack_set(True)
        use_tls(client, mq)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        return client

    def _on_connect(self, client: paho.Client, _u: object, flags: Any, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.warning("history: broker refused the connection: %s", reason)
            return
        with self._gen_lock:
            self.generation += 1
        client.subscribe([(topic, 1) for topic in history_topics(self.group, self.fleet)])
        # Retained messages reach plain subscriptions only: read them once per connection.
        self._snapshot_open = False         # until this connection's SUBACK
        _rc, self._snapshot_mid = client.subscribe([(topic, 1) for topic in snapshot_topics(self.fleet)])
        self._snapshot_count = 0
        log.info("history: connected to the broker (session %s)",
                 "resumed" if getattr(flags, "session_present", False) else "new")
        self.connected.set()

    def _on_subscribe(self, _c: paho.Client, _u: object, mid: int, reasons: list[ReasonCode], _p: object) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("history: the broker refused subscriptions (%s): history will miss messages", ", ".join(refused))
        if mid == self._snapshot_mid:
            self._snapshot_last = time.monotonic()
            self._snapshot_open = True
        else:
            log.info("history: subscribed to the fleet's state, health, alarms and command results")

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.connected.clear()
        with self._gen_lock:
            self.generation += 1        # PUBACKs for what came before would name the wrong packets now
        log.warning("history: broker connection lost (%s); reconnecting", reason)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            self._snapshot_last = time.monotonic()
            self._snapshot_count += 1
        self.inbox.append(_Delivered(self.generation, msg))
        if not self._arrived.is_set():
            self._arrived.set()

    def _start_mqtt(self) -> None:
        connect_persistent(self.client, self.cfg.mqtt, receive_maximum=self.cfg.history.batch_max * 2)

    def _snapshot_tick(self) -> None:
        """End the retained snapshot once the broker has sent none for ``snapshot_quiet_ms``."""
        quiet_s = self.cfg.history.snapshot_quiet_ms / 1000
        if self._snapshot_open and not self.inbox and time.monotonic() - self._snapshot_last > quiet_s:
            self._snapshot_open = False
            self.client.unsubscribe(snapshot_topics(self.fleet))
            log.info("history: retained snapshot read (%d messages)", self._snapshot_count)

    def _puback(self, delivered: list[_Delivered]) -> None:
        with self._gen_lock:
            current = self.generation
            for d in delivered:
                if d.generation == current and d.qos > 0:
                    self.client.ack(d.mid, d.qos)

    # -- batches ---------------------------------------------------------------------------

    def _collect(self, stop: threading.Event) -> list[_Delivered]:
        """Up to ``batch_max`` messages: until none came for a poll, ``batch_ms`` after the first, or enough.

        A lone alarm is stored within a poll or two (the dashboard's live update waits for it); a burst
        (health of a whole fleet, the retained snapshot) still fills its batches.
        """
        if not self.inbox and not self._arrived.wait(0.2):
            return []
        limit = self.cfg.history.batch_max
        deadline = time.monotonic() + self.cfg.history.batch_ms / 1000
        size = -1
        while size < len(self.inbox) < limit and not stop.is_set():
            size = len(self.inbox)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, _COLLECT_POLL_S))
        self._arrived.clear()
        batch = [self.inbox.popleft() for _ in range(min(limit, len(self.inbox)))]
        if self.inbox:
            self._arrived.set()
        return batch

    def _check(self, batch: list[_Delivered]) -> list[HistoryMessage]:
        good: list[HistoryMessage] = []
        for d in batch:
            try:
                checked = check_message(d.topic, d.payload, fleet=self.fleet, received=d.received,
                                        correlation=d.correlation)
            except Exception as exc:  # noqa: BLE001 - a payload this code trips on is malformed, not fatal
                parsed = parse_topic(d.topic)
                kind = _kind(parsed[2]) if parsed else None
                checked = Dropped(kind or "unknown", parsed[1] if parsed else "?", d.topic,
                                  f"unreadable ({type(exc).__name__})")
            if isinstance(checked, HistoryMessage):
                good.append(checked)
            elif isinstance(checked, Dropped):
                self._malformed(checked)
        return good

    def _malformed(self, dropped: Dropped) -> None:
        self.observer.history_malformed(kind=dropped.kind)
        now = time.monotonic()
        if now >= self._malformed_logged.get(dropped.kiosk, 0.0):
            self._malformed_logged[dropped.kiosk] = now + MALFORMED_LOG_S
            log.warning("history: malformed %s message from %s on %s dropped: %s (further ones from this kiosk "
                        "are counted, not logged, for a minute)", dropped.kind, dropped.kiosk, dropped.topic,
                        dropped.reason)

    def _store(self) -> HistoryStore:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return HistoryStore(self._conn)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _write(self, stop: threading.Event, messages: list[HistoryMessage]) -> Applied | None:
        """Apply one batch, retrying while PostgreSQL is away (the batch held, unacknowledged); None if stopped."""
        delay = 0.2
        one_by_one = False
        while True:
            try:
                return self._one_by_one(messages) if one_by_one else self._store().apply(messages)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                continue        # rolled back whole; again at once
            except psycopg.OperationalError as exc:
                log.warning("history: PostgreSQL unavailable (%s); batch of %d held, retrying", str(exc).strip(),
                            len(messages))
            except FleetError as exc:       # connect() failed
                log.warning("history: PostgreSQL unavailable (%s); batch of %d held, retrying", exc, len(messages))
            except Exception as exc:  # noqa: BLE001 - one message must not stop the history of the fleet
                # A message PostgreSQL will not take (a NUL in a string, NaN), or one this code trips on:
                # alone, each is applied or dropped as malformed.
                log.error("history: batch refused (%s: %s); applying its messages one by one", type(exc).__name__,
                          str(exc).strip()[:200])
                one_by_one = True
                continue
            self._drop_connection()
            if stop.wait(delay):
                return None
            delay = min(RETRY_MAX_S, delay * 2)

    def _one_by_one(self, messages: list[HistoryMessage]) -> Applied:
        total = Applied()
        store = self._store()
        for msg in messages:
            try:
                part = store.apply([msg])
            except (psycopg.OperationalError, FleetError):
                raise           # the database is away: the whole batch is held and retried
            except Exception as exc:  # noqa: BLE001 - this message alone is dropped, the rest go on
                self._malformed(Dropped(msg.kind, msg.kiosk, msg.topic, f"refused ({type(exc).__name__})"))
                continue
            total.changed |= part.changed
            total.received.update(part.received)
        return total

    def _prune_tick(self, stop: threading.Event) -> None:
        """A bounded round of retention deletes when one is due; rounds follow each other while rows remain."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        hist = self.cfg.history
        try:
            deleted = self._store().prune(retention_days=hist.retention_days, limit=hist.prune_batch)
        except (psycopg.Error, FleetError) as exc:
            log.warning("history: prune failed, retried later: %s", str(exc).strip()[:200])
            self._drop_connection()
            self._next_prune = now + min(hist.prune_interval_s, 60.0)
            return
        self._pruned.update(deleted or {})
        more = deleted is not None and any(n >= hist.prune_batch for n in deleted.values())
        if not more and any(self._pruned.values()):
            log.info("history: pruned past %d days: %s", hist.retention_days,
                     ", ".join(f"{table} {n}" for table, n in sorted(self._pruned.items()) if n))
            self._pruned.clear()
        self._next_prune = now if more else now + hist.prune_interval_s

    def _step(self, stop: threading.Event) -> bool:
        """One batch (if any came) and a prune round (if due); False when stopped while holding a batch."""
        self._snapshot_tick()
        batch = self._collect(stop)
        if batch:
            messages = self._check(batch)
            applied = self._write(stop, messages) if messages else Applied()
            if applied is None:
                return False
            self._puback(batch)
            if any(d.retain for d in batch):
                # The broker holds back what is beyond our receive window until these PUBACKs:
                # the snapshot's quiet time starts again from them, not from their arrival.
                self._snapshot_last = time.monotonic()
            for kind, count in applied.received.items():
                self.observer.history_received(kind=kind, count=count)
        self._prune_tick(stop)
        return True

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set."""
        self._start_mqtt()
        log.info("history: consuming %s as %s-history", ", ".join(history_topics(self.group, self.fleet)),
                 self.cfg.mqtt.client_id)
        try:
            while not stop.is_set():
                try:
                    if not self._step(stop):
                        break
                except Exception:       # the history must outlive a bug: logged, and on with the next batch
                    log.exception("history: unexpected error; going on")
                    stop.wait(1.0)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self._drop_connection()
