# SPDX-License-Identifier: Apache-2.0
"""Gaps: a seq missing longer than the reorder window is asked for again.

Records of one kiosk may arrive out of order across workers, so a missing
seq is at first only late. A *gap* is a run of seqs missing below a record
that is stored pending (its predecessor never came); once it has been
visible for ``gaps.reorder_window_s`` it is raised (a WARNING naming kiosk,
epoch and range, the ``ledger_gaps_open`` gauge) and the kiosk is sent a
signed ``tx-resend {epoch, from_seq, to_seq}`` (the back-office key, role
``backoffice`` on the kiosk), again every ``retry_s`` while it stays open.
The kiosk publishes the same bytes again; when they are stored the gap is
*filled* (closed), and the records are acknowledged as any others. When the
kiosk answers that it no longer holds them (``tx.epoch_gone``,
``tx.range_gone``, or every seq in ``missing``) the gap is closed *lost*,
at ERROR: an operator's matter.

Gaps live in the ``gaps`` table (schema step 2), so every worker sees the same ones; one
worker at a time scans (``pg_try_advisory_xact_lock``), the others skip.

    watcher = GapWatcher(tracker, client, dsn)     # a thread: scans, sends, reads the kiosks' answers
    watcher.start(); ...; watcher.stop()

A record stored without the sealed bundle it announced (the bundle lost on
the way; the kiosk sends a bundle once) is a gap of kind ``evidence``: asked
for the same way (the kiosk's resend sends the bundles it still holds too),
filled when the bundle is stored, lost when the kiosk no longer holds it.

A gap at the end (the newest records lost before the ledger, nothing
recorded after them: a quiet kiosk at night) has no pending record above
it; it is found from the kiosk's health instead, whose ``outbox.tx`` names
the journal's head ``seq`` and ``epoch``: a head reported at least the
reorder window ago and beyond the highest seq stored is a gap like any other.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.wire.contract import ROOT, Topics, parse_topic
from agent.wire.signing import KIND_CMD, command_envelope, sign

__all__ = ["Gap", "Head", "GapTracker", "GapWatcher", "ResendRequester", "GapObserver", "GAP_LOCK", "RESEND_NAME",
           "MAX_RESEND", "LOST_CODES"]

log = logging.getLogger(__name__)

RESEND_NAME = "tx-resend"
MAX_RESEND = 10_000         # the kiosk's limit per request (agent.store.journal.MAX_RESEND)
# The kiosk's answers that mean the records will never come.
LOST_CODES = frozenset({"tx.epoch_gone", "tx.range_gone", "tx.range_not_recorded"})
# Requests sent in one scan at most (each waits for its PUBACK inside the scan's transaction): after a long
# ledger outage a fleet's gaps are asked for over a few scans rather than in one long transaction.
MAX_REQUESTS_PER_SCAN = 500
# pg_try_advisory_xact_lock key: one scanner at a time ("kl-gaps").
GAP_LOCK = 0x6B6C2D67617073
_EPOCH_HEX = frozenset("0123456789abcdef")


@dataclasses.dataclass(frozen=True)
class Gap:
    kiosk: str
    epoch: str
    from_seq: int
    to_seq: int
    age_s: float            # since the record after it was stored
    requests: int = 0
    kind: str = "tx"        # "evidence": the record is stored, its sealed bundle is not


class GapObserver(Protocol):
    """What the tracker reports (:class:`fleet.ledger.metrics.LedgerMetrics`)."""

    def gap_requested(self) -> None: ...

    def gap_closed(self, outcome: str) -> None: ...

    def gaps(self, open_count: int, oldest_s: float) -> None: ...

    def database(self, *, quarantine_rows: int, unacked: int) -> None: ...


class Publisher(Protocol):
    """An MQTT 5 client as the requester uses it (:class:`fleet.mqtt.FleetClient`)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: object | None = None) -> int: ...


class ResendRequester:
    """Signs ``tx-resend`` with the back-office key and publishes it; the correlation names the gap."""

    def __init__(self, client: Publisher, fleet: str, key_id: str, key: Ed25519PrivateKey, *,
                 ttl_s: float = 300.0) -> None:
        self.client, self.fleet, self.key_id, self.key, self.ttl_s = client, fleet, key_id, key, ttl_s

    def request(self, kiosk: str, epoch: str, from_seq: int, to_seq: int) -> None:
        topics = Topics(self.fleet, kiosk)
        doc = sign(command_envelope(RESEND_NAME, {"epoch": epoch, "from_seq": from_seq, "to_seq": to_seq},
                                    fleet=self.fleet, kiosk=kiosk, ttl_s=self.ttl_s), self.key_id, self.key, KIND_CMD)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.cmd_result(RESEND_NAME)
        # The kiosk echoes it (hex, in the result too): a failed answer says which gap it was about.
        props.CorrelationData = json.dumps([epoch, from_seq, to_seq], separators=(",", ":")).encode()
        self.client.publish(topics.cmd(RESEND_NAME), json.dumps(doc, separators=(",", ":")).encode(), qos=1,
                            properties=props)


# Runs of missing seqs: below each pending record whose predecessor is absent, down to the record before it,
# once that record has waited the reorder window (before that it is reordering between workers, not a gap:
# nothing is written, so the table and the metrics count real gaps only).
_CURRENT = """
SELECT p.kiosk, p.epoch,
       coalesce((SELECT max(b.seq) FROM tx b WHERE b.kiosk = p.kiosk AND b.epoch = p.epoch AND b.seq < p.seq), 0) + 1,
       p.seq - 1, p.received_at
FROM tx p
WHERE p.fleet = %s AND p.linked_at IS NULL AND p.seq > 1 AND p.received_at <= now() - make_interval(secs => %s)
  AND NOT EXISTS (SELECT 1 FROM tx q WHERE q.kiosk = p.kiosk AND q.epoch = p.epoch AND q.seq = p.seq - 1)
"""


# A gap at the end: the kiosk's health says its journal's head is beyond the highest seq stored of that epoch.
_TRAILING = """
SELECT h.kiosk, h.epoch,
       coalesce((SELECT max(t.seq) FROM tx t WHERE t.kiosk = h.kiosk AND t.epoch = h.epoch), 0) + 1, h.seq
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS h(kiosk, epoch, seq)
JOIN kiosks k ON k.kiosk = h.kiosk AND k.fleet = %s
WHERE h.seq > coalesce((SELECT max(t.seq) FROM tx t WHERE t.kiosk = h.kiosk AND t.epoch = h.epoch), 0)
"""


# A record that announced evidence, linked, not acknowledged, whose bundle has not come within the window
# (lost on the way: a bundle is never sent again unless asked, and the ledger acknowledges no record without
# it). The partial index of ack-due rows serves it.
_BUNDLES = """
SELECT t.kiosk, t.epoch, t.seq, t.received_at FROM tx t
WHERE t.fleet = %s AND t.has_evidence AND t.linked_at IS NOT NULL AND t.acked_at IS NULL
  AND t.received_at <= now() - make_interval(secs => %s)
  AND NOT EXISTS (SELECT 1 FROM evidence e WHERE e.kiosk = t.kiosk AND e.tx_id = t.id)
"""


@dataclasses.dataclass(frozen=True)
class Head:
    """A kiosk's journal head as its last health report said, and when this worker read it."""

    epoch: str
    seq: int
    seen: float         # time.time() when received


class GapTracker:
    """Finds, raises, requests and closes gaps of one fleet (a psycopg connection per call)."""

    def __init__(self, fleet: str, requester: ResendRequester | None, *, reorder_window_s: float,
                 retry_s: float = 300.0, observer: GapObserver | None = None) -> None:
        self.fleet = fleet
        self.requester = requester
        self.window_s = reorder_window_s
        self.retry_s = retry_s
        self.observer = observer
        self.heads: dict[str, Head] = {}

    def on_health(self, topic: str, payload: bytes, *, now: float | None = None) -> None:
        """A kiosk's health (``outbox.tx.seq`` and ``epoch``): remembered for the gap at the end of its stream."""
        parsed = parse_topic(topic)
        try:
            tx = json.loads(payload)["outbox"]["tx"]
            epoch, seq = tx["epoch"], tx["seq"]
        except (ValueError, TypeError, KeyError):
            return          # an older agent's health, or none: nothing to compare
        if parsed is None or not isinstance(epoch, str) or not isinstance(seq, int) or isinstance(seq, bool):
            return
        head = self.heads.get(parsed[1])
        if head is None or (head.epoch, head.seq) != (epoch, seq):
            # The window runs from the first report of this head: a kiosk still publishing moves it on.
            self.heads[parsed[1]] = Head(epoch, seq, time.time() if now is None else now)

    def _trailing(self, conn: Any) -> list[tuple[str, str, int, int]]:
        """Gaps at the end: heads reported at least the reorder window ago, beyond what is stored."""
        due = time.time() - self.window_s
        heads = [(kiosk, h.epoch, h.seq) for kiosk, h in self.heads.items() if h.seen <= due and h.seq > 0]
        if not heads:
            return []
        rows = conn.execute(_TRAILING, ([k for k, _e, _s in heads], [e for _k, e, _s in heads],
                                        [s for _k, _e, s in heads], self.fleet)).fetchall()
        return [(str(k), str(e), int(f), int(t)) for k, e, f, t in rows]

    def scan(self, conn: Any) -> list[Gap]:
        """One pass: record what is missing, close what came, raise and request what is due.

        Returns the gaps open past the window (empty when another worker holds the scan).
        """
        due: list[Gap] = []
        closed = 0
        with conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (GAP_LOCK,)).fetchone()[0]:
                return []
            current = conn.execute(_CURRENT, (self.fleet, self.window_s)).fetchall()
            for kiosk, epoch, from_seq, to_seq, seen_at in current:
                conn.execute("INSERT INTO gaps (kiosk, epoch, to_seq, from_seq, seen_at) VALUES (%s, %s, %s, %s, %s) "
                             "ON CONFLICT (kiosk, epoch, to_seq) DO UPDATE SET from_seq = excluded.from_seq "
                             "WHERE gaps.closed_at IS NULL", (kiosk, epoch, to_seq, from_seq, seen_at))
            still = {(k, e, t) for k, e, _f, t, _s in current}
            for kiosk, epoch, from_seq, to_seq in self._trailing(conn):
                # Already past the window when found (the head was reported that long ago): seen since then.
                seen = self.heads[kiosk].seen
                conn.execute("INSERT INTO gaps (kiosk, epoch, to_seq, from_seq, seen_at) VALUES (%s, %s, %s, %s, "
                             "to_timestamp(%s)) ON CONFLICT (kiosk, epoch, to_seq) DO UPDATE SET from_seq = "
                             "excluded.from_seq WHERE gaps.closed_at IS NULL", (kiosk, epoch, to_seq, from_seq, seen))
                still.add((kiosk, epoch, to_seq))
            for kiosk, epoch, seq, seen_at in conn.execute(_BUNDLES, (self.fleet, self.window_s)).fetchall():
                conn.execute("INSERT INTO gaps (kiosk, epoch, to_seq, from_seq, seen_at, kind) VALUES (%s, %s, %s, %s, "
                             "%s, 'evidence') ON CONFLICT (kiosk, epoch, to_seq) DO NOTHING",
                             (kiosk, epoch, seq, seq, seen_at))
                still.add((kiosk, epoch, seq))
            for kiosk, epoch, to_seq, from_seq in conn.execute(
                    "SELECT g.kiosk, g.epoch, g.to_seq, g.from_seq FROM gaps g JOIN kiosks k USING (kiosk) "
                    "WHERE g.closed_at IS NULL AND k.fleet = %s", (self.fleet,)).fetchall():
                if (kiosk, epoch, to_seq) not in still:
                    conn.execute("UPDATE gaps SET closed_at = now(), outcome = 'filled' WHERE kiosk = %s AND "
                                 "epoch = %s AND to_seq = %s", (kiosk, epoch, to_seq))
                    log.info("gap closed: %s epoch %s seq %d to %d arrived", kiosk, epoch, from_seq, to_seq)
                    closed += 1
            rows = conn.execute(
                "SELECT g.kiosk, g.epoch, g.from_seq, g.to_seq, extract(epoch FROM now() - g.seen_at)::float8, "
                "g.requests, g.kind, g.raised_at IS NULL, g.requested_at IS NULL OR "
                "g.requested_at < now() - make_interval(secs => %s) FROM gaps g JOIN kiosks k USING (kiosk) "
                "WHERE g.closed_at IS NULL AND k.fleet = %s AND g.seen_at <= now() - make_interval(secs => %s) "
                "ORDER BY g.seen_at", (self.retry_s, self.fleet, self.window_s)).fetchall()
            sent = 0
            for kiosk, epoch, from_seq, to_seq, age, requests, kind, first, ask in rows:
                gap = Gap(kiosk, epoch, int(from_seq), int(to_seq), float(age), int(requests), kind)
                due.append(gap)
                if first and kind == "evidence":
                    log.warning("gap open: %s epoch %s seq %d stored %.0fs ago without its evidence bundle; "
                                "asking the kiosk to send it again", kiosk, epoch, to_seq, age)
                elif first:
                    log.warning("gap open: %s epoch %s seq %d to %d missing for %.0fs (reorder window %gs); "
                                "asking the kiosk to send them again", kiosk, epoch, from_seq, to_seq, age,
                                self.window_s)
                    conn.execute("UPDATE gaps SET raised_at = now() WHERE kiosk = %s AND epoch = %s AND to_seq = %s",
                                 (kiosk, epoch, to_seq))
                if ask and sent < MAX_REQUESTS_PER_SCAN and self._request(gap):
                    sent += 1
                    conn.execute("UPDATE gaps SET requested_at = now(), requests = requests + 1 WHERE kiosk = %s "
                                 "AND epoch = %s AND to_seq = %s", (kiosk, epoch, to_seq))
            # The fleet-wide gauges, while the scan has the database anyway (ack-due rows: a partial index).
            quarantine_rows, unacked = conn.execute(
                "SELECT (SELECT count(*) FROM quarantine WHERE fleet = %(f)s), (SELECT count(*) FROM tx WHERE "
                "fleet = %(f)s AND linked_at IS NOT NULL AND acked_at IS NULL)", {"f": self.fleet}).fetchone()
        if self.observer is not None:
            self.observer.database(quarantine_rows=int(quarantine_rows), unacked=int(unacked))
            for _ in range(closed):
                self.observer.gap_closed("filled")
            self.observer.gaps(len(due), max((g.age_s for g in due), default=0.0))
        return due

    def _request(self, gap: Gap) -> bool:
        if self.requester is None:
            return False
        if len(gap.epoch) != 32 or not set(gap.epoch) <= _EPOCH_HEX:
            log.error("gap %s seq %d to %d: epoch %r cannot be asked for (a journal from before epochs)",
                      gap.kiosk, gap.from_seq, gap.to_seq, gap.epoch)
            return False
        # The kiosk serves at most MAX_RESEND a request: a longer gap is asked in parts.
        for low in range(gap.from_seq, gap.to_seq + 1, MAX_RESEND):
            self.requester.request(gap.kiosk, gap.epoch, low, min(gap.to_seq, low + MAX_RESEND - 1))
            if self.observer is not None:
                self.observer.gap_requested()
        return True

    def on_result(self, conn: Any, topic: str, payload: bytes) -> str | None:
        """A kiosk's answer to ``tx-resend``; closes the gap *lost* when the records will never come.

        Returns the gap's new outcome ("lost") or None.
        """
        parsed = parse_topic(topic)
        try:
            data = json.loads(payload)
            epoch, low, high = json.loads(bytes.fromhex(str(data.get("correlation"))))
        except (ValueError, TypeError, AttributeError):
            return None
        if parsed is None or not isinstance(data, dict) or not isinstance(low, int) or not isinstance(high, int):
            return None
        kiosk = parsed[1]
        status, code, result = data.get("status"), data.get("code"), data.get("result") or {}
        only = ""
        if status == "succeeded":
            missing = sum(b - a + 1 for a, b in result.get("missing") or []
                          if isinstance(a, int) and isinstance(b, int))
            if missing >= high - low + 1:
                code = "tx.range_gone"
            elif result.get("evidence_held") == 0:
                # The records are there, their bundles are not (erased after retention): only a bundle gap is lost.
                code, only = "evidence.gone", " AND kind = 'evidence'"
                data = {**data, "message": "the kiosk no longer holds the sealed bundle"}
            else:
                return None
        elif status not in ("failed", "refused") or code not in LOST_CODES:
            if status in ("failed", "refused"):
                log.error("tx-resend to %s (epoch %s seq %d to %d) %s: %s %s", kiosk, epoch, low, high, status, code,
                          data.get("message", ""))
            return None
        with conn.transaction():
            cur = conn.execute("UPDATE gaps SET closed_at = now(), outcome = 'lost', detail = %s WHERE kiosk = %s "
                               "AND epoch = %s AND from_seq <= %s AND to_seq >= %s AND to_seq <= %s AND "
                               f"closed_at IS NULL{only}", (f"{code}: {data.get('message', '')}"[:500], kiosk, epoch,
                                                            high, low, high))
        if cur.rowcount:
            log.error("gap lost: %s epoch %s seq %d to %d: the kiosk no longer holds them (%s)", kiosk, epoch, low,
                      high, code)
            if self.observer is not None:
                self.observer.gap_closed("lost")
            return "lost"
        return None


class Client(Publisher, Protocol):
    def subscribe(self, topic: str, qos: int = 1) -> None: ...

    def messages(self, timeout: float | None = None, idle: float | None = None) -> Any: ...


class GapWatcher:
    """A thread: scan every ``interval_s``, and between scans read the kiosks' answers to ``tx-resend``."""

    def __init__(self, tracker: GapTracker, client: Client, connect: Any, *, interval_s: float = 5.0) -> None:
        self.tracker, self.client, self.connect, self.interval_s = tracker, client, connect, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-gaps", daemon=True)
        self.scans = 0

    def start(self) -> GapWatcher:
        self.client.subscribe(f"{ROOT}/{self.tracker.fleet}/+/cmd/{RESEND_NAME}/result")
        self.client.subscribe(f"{ROOT}/{self.tracker.fleet}/+/health", qos=0)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.connect()
                self.tracker.scan(conn)
                self.scans += 1
                deadline = time.monotonic() + self.interval_s
                while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                    for msg in self.client.messages(timeout=min(left, 0.5)):
                        if msg.topic.endswith("/health"):
                            self.tracker.on_health(msg.topic, bytes(msg.payload))
                        else:
                            self.tracker.on_result(conn, msg.topic, bytes(msg.payload))
                        break
            except Exception as exc:  # noqa: BLE001 - a lost database or broker is retried, the worker goes on
                log.warning("gap scan failed (retried in %gs): %s", self.interval_s, exc)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection may raise anything
                        pass
                    conn = None
                self._stop.wait(self.interval_s)
        if conn is not None:
            conn.close()
