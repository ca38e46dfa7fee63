# SPDX-License-Identifier: Apache-2.0
"""The signed, hash-chained transaction journal.

``await journal.record(tx)`` returns only once the record is committed to
disk (fsync of the WAL, ``synchronous=FULL``) together with its outbox row,
in one transaction: a record is never on disk without being queued for the
broker, nor queued without being on disk.

**Record**, canonical encoding (RFC 8785), signature and chain: see
:mod:`agent.wire.txformat`, the contract ``kioskctl verify`` and the back office
check against; this module builds records with its ``build_record``.

**Epoch**: 128 random bits (hex), made with the journal and kept with it
(``agent_settings``) and beside it (``continuity.json``). ``(epoch, seq)``
is never reused: a store that is lost (truncated, destroyed, nothing
salvaged) takes its epoch with it, and the new journal starts a new epoch at
seq 1 whose first record is ``data = {"type": "epoch", "reason":
"store_lost", "prev_epoch", "prev_last_seq", "prev_last_seq_exact"}``, so
the back office is told which chain ended where instead of seeing seq 1
again with new ids. ``verify_epochs`` checks a stream epoch by epoch.

    journal = Journal(store, key, "k-0001", fleet="north")
    rec = await journal.record({"service": "pension-print", "outcome": "completed"})
    rec.id, rec.seq, rec.payload          # on disk now
    verify_chain([rec.payload], key.public_key()).ok     # agent.wire.txformat
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import AgentError
from agent.store.database import Job, Store, get_setting, insert_rows, store_error
from agent.store.salvage import REQUEUE_COUNTER, SEQ_COUNTER
from agent.wire.canonical import canonical
from agent.wire.contract import Topics
from agent.wire.keyid import key_id
from agent.wire.signing import fast_signer
from agent.wire.txformat import (  # the record format, re-exported for the agent's own callers
    GENESIS,
    SIGN_TAG,
    ChainReport,
    EpochReport,
    ack_document,
    build_record,
    parse_ack,
    record_hash,
    verify_ack,
    verify_chain,
    verify_epochs,
    verify_record,
)

__all__ = [
    "GENESIS",
    "SIGN_TAG",
    "ChainReport",
    "EpochReport",
    "Journal",
    "JournalError",
    "JournalRecord",
    "MAX_RESEND",
    "ResendRefused",
    "ack_document",
    "canonical",
    "parse_ack",
    "record_hash",
    "synthetic_load",
    "verify_ack",
    "verify_chain",
    "verify_epochs",
    "verify_record",
]

log = logging.getLogger(__name__)

PRUNE_BATCH = 5_000     # rows per delete: keeps each commit short on an SD card
EPOCH_SETTING = "journal_epoch"
NOTE_SEQ_EVERY_S = 60.0     # how stale continuity.json's last_seq may be after a crash


class JournalError(AgentError):
    """A transaction that cannot be journalled (not JSON-encodable)."""

    code = "agent.journal.invalid"


# One request re-queues at most this many records: ~10 MB of outbox rows at
# worst, and the ledger asks gap by gap, so a longer gap is asked in parts.
MAX_RESEND = 10_000


class ResendRefused(AgentError):
    """A resend request this journal cannot serve; ``code`` says why (``tx.epoch_gone``, ...)."""

    code = "tx.resend_refused"

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        self.code = code
        self.detail = detail
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class JournalRecord:
    """One committed record; ``payload`` is exactly what goes on the wire."""

    id: str
    seq: int
    prev: str
    hash: str
    ts: int
    payload: bytes

    @property
    def data(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.payload)
        return result


def _sign_record(sign: Callable[[bytes], bytes], kid: str, kiosk: str, epoch: str, seq: int, prev: str,
                 data: bytes, record_id: str, ts: int) -> JournalRecord:
    payload = build_record(sign, kid, kiosk, epoch, seq, prev, data, record_id, ts)
    return JournalRecord(record_id, seq, prev, record_hash(payload), ts, payload)


class _RecordJob(Job):
    durable = True

    def __init__(self, journal: Journal, data: bytes) -> None:
        self.journal = journal
        self.data = data
        self.saved: tuple[int, str] | None = None

    def run(self, conn: sqlite3.Connection) -> JournalRecord:
        return self.run_group(conn, [self])[0]

    def group_key(self) -> Any:
        return self.journal

    @classmethod
    def run_group(cls, conn: sqlite3.Connection, jobs: list[Any]) -> list[JournalRecord]:
        j = jobs[0].journal
        records = []
        for job in jobs:
            rec = _sign_record(j.sign, j.kid, j.kiosk, j.epoch, j.head_seq + 1, j.head_hash, job.data,
                               j._next_id(), int(time.time() * 1000))
            job.saved = (j.head_seq, j.head_hash)
            j.head_seq, j.head_hash = rec.seq, rec.hash
            records.append(rec)
        insert_rows(conn, "INSERT INTO journal(seq, id, ts, hash, payload) VALUES ", "(?,?,?,?,?)",
                    [(rec.seq, rec.id, rec.ts, rec.hash, rec.payload) for rec in records])
        # The outbox row points at the journal row: the bytes are stored once,
        # so every (re)publish is the same bytes.
        insert_rows(conn, "INSERT INTO outbox(cls, topic, payload, ref, retain, size, created_ms) VALUES ",
                    "('tx',?,NULL,?,0,?,?)", [(j.topic, rec.seq, len(rec.payload), rec.ts) for rec in records])
        # The high-water mark lives on another page than the journal rows: if
        # a damaged store loses the head, a salvage still knows which seqs
        # were used and never hands them out again.
        conn.execute("INSERT INTO counters(name, value) VALUES (?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (SEQ_COUNTER, j.head_seq))
        return records

    def aborted(self) -> None:
        if self.saved is not None:
            self.journal.head_seq, self.journal.head_hash = self.saved
            self.saved = None

    def on_loop(self, rec: JournalRecord) -> None:
        self.journal._notify(rec)


class _AckJob(Job):
    # A lost ack mark (power cut before the next fsync) only leaves a record
    # counted as "published, not acknowledged" until the back office says
    # so again: no fsync of its own (see Writer).
    durable = False

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def run(self, conn: sqlite3.Connection) -> list[str]:
        now = int(time.time() * 1000)
        found: list[str] = []
        for record_id in self.ids:
            cur = conn.execute("UPDATE journal SET acked_ms = ? WHERE id = ? AND acked_ms IS NULL", (now, record_id))
            if cur.rowcount:
                found.append(record_id)
        return found


class _ResendJob(Job):
    # Durable like a record: the ledger was told "queued", so a power cut must not forget it.
    durable = True

    def __init__(self, journal: Journal, epoch: str, from_seq: int, to_seq: int) -> None:
        self.journal = journal
        self.epoch, self.from_seq, self.to_seq = epoch, from_seq, to_seq

    def run(self, conn: sqlite3.Connection) -> dict[str, Any]:
        j, low, high = self.journal, self.from_seq, self.to_seq
        if self.epoch != j.epoch:
            # (epoch, seq) is never reused: the records of an earlier epoch went with the store that held them.
            raise ResendRefused("tx.epoch_gone", f"epoch {self.epoch[:32]} is not this journal's (it is {j.epoch}): "
                                "its records went with the store that held them",
                                {"epoch": j.epoch, "head_seq": j.head_seq})
        if high > j.head_seq:
            raise ResendRefused("tx.range_not_recorded", f"seq {high} was never recorded (the head is "
                                f"{j.head_seq})", {"epoch": j.epoch, "head_seq": j.head_seq})
        held = [int(seq) for (seq,) in conn.execute("SELECT seq FROM journal WHERE seq BETWEEN ? AND ? ORDER BY seq",
                                                     (low, high))]
        missing = _missing_ranges(held, low, high)
        if not held:
            kept = conn.execute("SELECT min(seq) FROM journal").fetchone()[0]
            raise ResendRefused("tx.range_gone", f"seq {low} to {high} are no longer in the journal (pruned after "
                                f"their ack, or lost with a damaged store)",
                                {"epoch": j.epoch, "first_seq": kept, "missing": missing})
        # Idempotent: a record still queued (or in flight) is not queued twice.
        wanted = ("FROM journal WHERE seq BETWEEN ? AND ? "
                  "AND seq NOT IN (SELECT ref FROM outbox WHERE cls = 'tx' AND ref BETWEEN ? AND ?)")
        size = int(conn.execute(f"SELECT coalesce(sum(length(payload)), 0) {wanted}",
                                (low, high, low, high)).fetchone()[0])
        cur = conn.execute("INSERT INTO outbox(cls, topic, payload, ref, retain, size, created_ms) "
                           f"SELECT 'tx', ?, NULL, seq, 0, length(payload), ? {wanted} ORDER BY seq",
                           (j.topic, int(time.time() * 1000), low, high, low, high))
        queued = int(cur.rowcount)
        # The sealed bundles of those records the kiosk still holds go again too (the same bytes): a bundle
        # lost on the way is otherwise never sent again, and the ledger acknowledges no record without it.
        bundles = conn.execute("SELECT e.payload FROM evidence e JOIN journal j ON j.id = e.tx_id "
                               "WHERE j.seq BETWEEN ? AND ? ORDER BY j.seq", (low, high)).fetchall()
        evidence_queued = evidence_bytes = 0
        for (payload,) in bundles:
            if conn.execute("SELECT 1 FROM outbox WHERE cls = 'evidence' AND payload = ?", (payload,)).fetchone():
                continue
            conn.execute("INSERT INTO outbox(cls, topic, payload, ref, retain, size, created_ms) "
                         "VALUES ('evidence', ?, ?, NULL, 0, ?, ?)",
                         (j.evidence_topic, payload, len(payload), int(time.time() * 1000)))
            evidence_queued += 1
            evidence_bytes += len(payload)
        return {"epoch": j.epoch, "from_seq": low, "to_seq": high, "queued": queued,
                "already_queued": len(held) - queued, "missing": missing, "evidence_queued": evidence_queued,
                "evidence_held": len(bundles), "_bytes": size, "_evidence_bytes": evidence_bytes}

    def on_loop(self, result: dict[str, Any]) -> None:
        size, evidence_size = result.pop("_bytes", 0), result.pop("_evidence_bytes", 0)
        for cb in self.journal.store.outbox_listeners:
            if result["queued"]:
                cb("tx", result["queued"], size)
            if result["evidence_queued"]:
                cb("evidence", result["evidence_queued"], evidence_size)


def _missing_ranges(held: list[int], low: int, high: int) -> list[list[int]]:
    """``[[first, last], ...]`` of the seqs in ``low..high`` not in ``held`` (sorted)."""
    out: list[list[int]] = []
    expect = low
    for seq in [*held, high + 1]:
        if seq > expect:
            out.append([expect, seq - 1])
        expect = seq + 1
    return out


class _PruneJob(Job):
    # Deleting is as lazy as marking acks: one lost to a power cut is done
    # again at the next prune.
    durable = False

    def __init__(self, journal: Journal, before_ms: int) -> None:
        self.journal = journal
        self.before_ms = before_ms

    def run(self, conn: sqlite3.Connection) -> int:
        # The head stays (the next record links to it and a restart reads it);
        # a row the outbox still points at stays too, however it got acked.
        cur = conn.execute(
            # Through the acked_ms index: an hourly prune that finds nothing old
            # enough reads a few index pages, not the whole journal.
            "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal INDEXED BY journal_acked "
            "WHERE acked_ms < ? AND seq < ? AND seq NOT IN (SELECT ref FROM outbox WHERE cls = 'tx') "
            "ORDER BY acked_ms LIMIT ?)", (self.before_ms, self.journal.head_seq, PRUNE_BATCH))
        return int(cur.rowcount)


class Journal:
    """Records transactions; owns the chain head (moved only by the writer thread)."""

    def __init__(self, store: Store, signing_key: Ed25519PrivateKey, kiosk_id: str, *,
                 fleet: str = "default", topic: str | None = None, ack_keys: Iterable[bytes] = (),
                 accept_unsigned_acks: bool = True) -> None:
        self.store = store
        self.key = signing_key
        self.sign = fast_signer(signing_key)
        self.kid = key_id(signing_key.public_key())
        self.kiosk = kiosk_id
        self.topic = topic or Topics(fleet, kiosk_id).tx
        self.evidence_topic = Topics(fleet, kiosk_id).evidence     # bundles a resend sends again
        row = store.conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        # Equal in normal running; the counter is ahead only after a salvage
        # lost the last records: the next seq skips them (a visible gap, with
        # prev naming the last record kept) rather than reuse them.
        self.head_seq: int = max(int(row[0]) if row else 0, store.counter(SEQ_COUNTER))
        self.head_hash: str = str(row[1]) if row else GENESIS
        self._ids, self._id_at = b"", 0
        self._seq_noted_at = time.monotonic()
        self.epoch = self._open_epoch(row)
        self._ack_listeners: list[Callable[[list[str]], Any]] = []
        self.recorded = 0
        # An ack deletes sealed evidence: with keys configured only a signed
        # one counts; without, only where unsigned ones are allowed (development).
        self.ack_keys = tuple(ack_keys)
        self.accept_unsigned_acks = accept_unsigned_acks
        self.acks_refused = 0
        if store.counter(REQUEUE_COUNTER):
            requeued = self._requeue_unacked()
            if store.salvage is not None:
                store.salvage.requeued = requeued

    def _requeue_unacked(self) -> int:
        """After a salvage that lost the outbox: every unacknowledged record goes again, in order."""
        conn = self.store.conn
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                # What survived of the old tx queue goes too: re-queued whole, the class stays in seq order.
                conn.execute("DELETE FROM outbox WHERE cls = 'tx'")
                cur = conn.execute(
                    "INSERT INTO outbox(cls, topic, payload, ref, retain, size, created_ms) "
                    "SELECT 'tx', ?, NULL, seq, 0, length(payload), ts FROM journal WHERE acked_ms IS NULL "
                    "ORDER BY seq", (self.topic,))
                conn.execute("DELETE FROM counters WHERE name = ?", (REQUEUE_COUNTER,))
        except sqlite3.Error as exc:
            raise store_error(exc, "requeue after salvage") from exc
        log.warning("queued %d unacknowledged records again after the store salvage", cur.rowcount)
        return int(cur.rowcount)

    def _open_epoch(self, head: Any) -> str:
        """The journal's epoch: kept, recovered from the newest record, or new (announced after a loss)."""
        store, conn = self.store, self.store.conn
        if store.journal_epoch is not None:        # decided by an earlier Journal on this open
            return store.journal_epoch
        side = store.continuity
        epoch = get_setting(conn, EPOCH_SETTING)
        salvaged_seq = store.salvage.highest_seq if store.salvage is not None else 0
        if store.recovered_from is not None and not salvaged_seq:
            epoch = None        # its seqs are unknown: going on would hand them out again
        if epoch is None and head is not None and store.recovered_from is not None:
            newest = json.loads(conn.execute("SELECT payload FROM journal WHERE seq = ?", (head[0],)).fetchone()[0])
            epoch = newest.get("epoch") if isinstance(newest.get("epoch"), str) else None
        if epoch is not None:
            self._note_epoch(epoch, announce=None)
            return epoch
        epoch = os.urandom(16).hex()
        previous = side.data.get("epoch")
        lost = store.recovered_from is not None or (previous is not None and self.head_seq == 0)
        announce = None
        if lost:
            known = max(side.number("last_seq") if previous else 0, salvaged_seq)
            announce = {"type": "epoch", "reason": "store_lost", "prev_epoch": previous if isinstance(previous, str)
                        else None, "prev_last_seq": known or None,
                        "prev_last_seq_exact": bool(side.data.get("clean")) and known == side.number("last_seq")}
            log.warning("journal: the store was lost; new epoch %s after epoch %s (last seq noted: %s)",
                        epoch, previous, known or "unknown")
        self._note_epoch(epoch, announce=announce)
        return epoch

    def _note_epoch(self, epoch: str, *, announce: dict[str, Any] | None) -> None:
        """Keep ``epoch`` with the journal (and its first record, if any) and in continuity.json."""
        conn = self.store.conn
        if announce is not None or get_setting(conn, EPOCH_SETTING) != epoch:
            job = _RecordJob(self, canonical(announce)) if announce is not None else None
            self.epoch = epoch
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT OR REPLACE INTO agent_settings VALUES (?, ?)", (EPOCH_SETTING, epoch))
                    if job is not None:
                        _RecordJob.run_group(conn, [job])
            except sqlite3.Error as exc:
                if job is not None:
                    job.aborted()
                raise store_error(exc, "journal epoch") from exc
        self.store.journal_epoch = epoch
        side = self.store.continuity
        if side.data.get("epoch") != epoch or side.number("last_seq") < self.head_seq:
            try:
                side.save(epoch=epoch, last_seq=self.head_seq, clean=False)
            except OSError as exc:
                log.error("%s not updated: %s", side.path, exc)

    def _note_seq(self) -> None:
        """Now and then, the head seq into continuity.json (loop thread): what a lost store's successor can say."""
        now = time.monotonic()
        if now - self._seq_noted_at < NOTE_SEQ_EVERY_S:
            return
        self._seq_noted_at = now
        try:
            self.store.continuity.save(last_seq=self.head_seq, clean=False)
        except OSError as exc:
            log.warning("%s not updated: %s", self.store.continuity.path, exc)

    async def record(self, tx: Mapping[str, Any]) -> JournalRecord:
        """Journal ``tx``; returns once it and its outbox row are fsynced.

        Raises JournalError for data JSON cannot carry, StoreFull when the
        disk is full, StoreError for other store failures; in every error
        case nothing was recorded and the chain head did not move.
        """
        try:
            # Encoded now: later changes to ``tx`` by the caller cannot leak in.
            data = canonical(dict(tx))
        except (TypeError, ValueError) as exc:
            raise JournalError(f"transaction is not JSON-encodable: {exc}") from exc
        rec: JournalRecord = await self.store.writer.submit_async(_RecordJob(self, data))
        return rec

    def _next_id(self) -> str:
        """A random version-4 UUID as hex (writer thread), from a pool: one getrandom per 256, not one each."""
        if self._id_at >= len(self._ids):
            self._ids, self._id_at = os.urandom(16 * 256), 0
        raw = bytearray(self._ids[self._id_at:self._id_at + 16])
        self._id_at += 16
        raw[6] = raw[6] & 0x0F | 0x40
        raw[8] = raw[8] & 0x3F | 0x80
        return raw.hex()

    def _notify(self, rec: JournalRecord) -> None:
        # Runs even if the caller was cancelled: the row is on disk either way.
        self.recorded += 1
        for cb in self.store.outbox_listeners:
            cb("tx", 1, len(rec.payload))
        self._note_seq()

    # -- back-office acknowledgement ---------------------------------------------

    def add_ack_listener(self, cb: Callable[[list[str]], Any]) -> None:
        """``cb(ids)`` after ``tx/ack`` ids are marked (evidence deletion hooks here)."""
        self._ack_listeners.append(cb)

    async def mark_acked(self, ids: Iterable[str]) -> list[str]:
        """Mark records the back office committed; returns the ids newly marked."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        found: list[str] = await self.store.writer.submit_async(_AckJob(wanted))
        for cb in list(self._ack_listeners):
            try:
                result = cb(wanted)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("tx/ack listener failed")
        return found

    async def on_tx_ack(self, message: Any) -> None:
        """Uplink handler for ``tx/ack``: ``uplink.subscribe(topics.tx_ack, journal.on_tx_ack)``."""
        try:
            if self.ack_keys:
                ids = verify_ack(message.payload, self.kiosk, self.ack_keys)
            elif self.accept_unsigned_acks:
                ids = parse_ack(message.payload)
            else:
                raise ValueError("evidence.ack_public_keys is not set: a production kiosk takes no unsigned ack")
        except ValueError as exc:
            self.acks_refused += 1
            log.warning("tx/ack refused, nothing marked: %s", exc)
            return
        await self.mark_acked(ids)

    async def resend(self, epoch: str, from_seq: int, to_seq: int) -> dict[str, Any]:
        """Queue the records ``from_seq..to_seq`` of ``epoch`` for the broker again (the ledger saw a gap).

        The same bytes go again (the ledger stores a record once), and so
        do the sealed evidence bundles of those records still held
        (``evidence_queued`` of ``evidence_held``). Records and bundles
        already queued are not queued twice; seqs the journal no longer
        holds are listed in ``missing``. Raises ResendRefused
        (``tx.range_invalid``, ``tx.range_too_large``, ``tx.epoch_gone``,
        ``tx.range_not_recorded``, ``tx.range_gone``), StoreError.

            await journal.resend(journal.epoch, 41, 57)
            # {"epoch": ..., "from_seq": 41, "to_seq": 57, "queued": 17, "already_queued": 0, "missing": [],
            #  "evidence_queued": 2, "evidence_held": 2}
        """
        if not 1 <= from_seq <= to_seq:
            raise ResendRefused("tx.range_invalid", f"from_seq {from_seq} to to_seq {to_seq}: need 1 <= from_seq "
                                "<= to_seq")
        if to_seq - from_seq + 1 > MAX_RESEND:
            raise ResendRefused("tx.range_too_large", f"{to_seq - from_seq + 1} records asked, at most {MAX_RESEND} "
                                "per request: ask in parts")
        result: dict[str, Any] = await self.store.writer.submit_async(_ResendJob(self, epoch, from_seq, to_seq))
        log.info("journal: seq %d to %d of epoch %s queued again for the back office (%d queued, %d already "
                 "queued, %d missing ranges)", from_seq, to_seq, epoch, result["queued"], result["already_queued"],
                 len(result["missing"]))
        return result

    async def prune(self, keep_days: float, *, now_ms: int | None = None) -> int:
        """Delete records the back office acknowledged more than ``keep_days`` ago.

        Unacknowledged records are kept however old, and so is the chain
        head. Returns how many were deleted (in batches of PRUNE_BATCH).

            await journal.prune(90)
        """
        before = (int(time.time() * 1000) if now_ms is None else now_ms) - int(keep_days * 86_400_000)
        total = 0
        while True:
            deleted: int = await self.store.writer.submit_async(_PruneJob(self, before))
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    # -- reading -----------------------------------------------------------------

    def payloads(self, from_seq: int = 1, conn: sqlite3.Connection | None = None) -> Iterator[bytes]:
        """Stored payloads in seq order (for export and ``kioskctl verify``)."""
        cur = (conn or self.store.conn).execute("SELECT payload FROM journal WHERE seq >= ? ORDER BY seq",
                                                (from_seq,))
        for (payload,) in cur:
            yield bytes(payload)

    def stats(self) -> dict[str, Any]:
        """For health: published-but-unacknowledged count and the oldest one's age.

        Cheap on a big backlog (no per-row outbox lookups): records still
        in the outbox are the unpublished ones, and they are the newest,
        because a class is published in order.
        """
        conn = self.store.conn
        unacked = conn.execute("SELECT count(*) FROM journal WHERE acked_ms IS NULL").fetchone()[0]
        queued = conn.execute("SELECT count(*) FROM outbox WHERE cls = 'tx'").fetchone()[0]
        first = conn.execute("SELECT ref FROM outbox WHERE cls = 'tx' ORDER BY id LIMIT 1").fetchone()
        bound = first[0] if first else self.head_seq + 1
        oldest = conn.execute("SELECT ts FROM journal WHERE acked_ms IS NULL AND seq < ? ORDER BY seq LIMIT 1",
                              (bound,)).fetchone()
        age = round(time.time() - oldest[0] / 1000, 1) if oldest else None
        kept = conn.execute("SELECT seq FROM journal ORDER BY seq LIMIT 1").fetchone()
        # seq and epoch: the head the back office's ledger compares with what it holds (a gap at the end).
        return {"seq": self.head_seq, "epoch": self.epoch, "first_seq": int(kept[0]) if kept else None,
                "acks_refused": self.acks_refused,
                "unacked": max(0, int(unacked) - int(queued)), "oldest_unacked_age_s": age}


_SERVICES = ("pension-print", "bill-water", "bill-electricity", "licence-renewal", "residence-permit")


def synthetic_tx(rng: random.Random, n: int) -> dict[str, Any]:
    """A PII-free synthetic transaction (masked id only, never a real number)."""
    return {"type": "synthetic", "n": n, "service": rng.choice(_SERVICES), "outcome": "completed",
            "id_masked": f"11************{rng.randrange(10_000):04d}", "duration_ms": rng.randrange(20_000, 480_000),
            "receipt": None, "evidence": False}


async def synthetic_load(journal: Journal, per_minute: float, stop_event: asyncio.Event, *,
                         rng: random.Random | None = None,
                         on_record: Callable[[JournalRecord], Any] | None = None) -> int:
    """Record ``per_minute`` synthetic transactions (Poisson arrivals) until ``stop_event``.

    For ``sim.tx_per_minute``: the same journal API the session engine uses.
    A store error is logged and the load goes on (as a kiosk would keep
    serving). Returns how many were recorded.

        stop = asyncio.Event()
        task = asyncio.create_task(synthetic_load(journal, 60, stop))
    """
    rng = rng or random.Random()
    done = 0
    if per_minute <= 0:
        await stop_event.wait()
        return 0
    rate = per_minute / 60.0
    while not stop_event.is_set():
        try:
            await asyncio.wait_for(stop_event.wait(), rng.expovariate(rate))
            break
        except TimeoutError:
            pass
        try:
            rec = await journal.record(synthetic_tx(rng, done + 1))
        except AgentError as exc:
            log.error("synthetic transaction not recorded: %s: %s", exc.code, exc)
            continue
        done += 1
        if on_record is not None:
            on_record(rec)
    return done
