# SPDX-License-Identifier: Apache-2.0
"""One batch of checked messages into PostgreSQL, in one transaction.

    store = LedgerStore(conn)                 # an autocommit psycopg connection
    outcome = store.write(items)              # committed on return

Inside the transaction, in this order:

1. a transaction-scoped advisory lock per kiosk of the batch (sorted, so
   two workers never wait on each other in a circle), so two workers can
   never race on one kiosk's chain;
2. the records are COPYed (binary) straight into ``tx``, inside a
   savepoint; if any of them is already stored (the COPY fails on a unique
   key, as a whole) the savepoint is rolled back and they are COPYed into a
   temporary table and inserted with ``ON CONFLICT DO NOTHING``: the same
   record twice is one row; a stored id with other bytes, or an
   ``(epoch, seq)`` stored with another id, goes to the quarantine; a
   re-delivered record already acknowledged is due for acknowledgement
   again (the kiosk may have missed the first);
3. linking: a record is linked when it opens its epoch (seq 1, prev =
   genesis) or a linked record of its kiosk has the hash its ``prev`` names
   (same epoch, lower seq), otherwise it stays pending until its
   predecessor arrives. The in-order case is decided before the insert
   (one read of the predecessors, the batch's own chain followed in
   Python) and written linked; when pending records exist, one recursive
   statement follows the chain through them. If a record of the batch was
   not stored (a duplicate, a conflict), the batch's links are undone and
   that statement decides them, so nothing links through a record that is
   not there;
4. a pending record whose seq - 1 is stored, linked, with another hash, and
   whose ``prev`` names no stored record, is a chain break: moved to the
   quarantine;
5. evidence, as received; quarantine rows for everything refused.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from agent.wire.txformat import GENESIS
from fleet.ledger.verify import EvidenceItem, Rejection, TxRecord

__all__ = ["LedgerStore", "BatchOutcome", "Item"]

Item = TxRecord | EvidenceItem | Rejection

_TX_COLUMNS = ("kiosk", "epoch", "seq", "id", "fleet", "hash", "prev", "kid", "ts_ms", "kind", "has_evidence",
               "payload")
_RETRIES = 5
_COPY_TX = f"COPY tx ({', '.join(_TX_COLUMNS)}, linked_at, skipped) FROM STDIN (FORMAT BINARY)"
_COPY_TX_TYPES = ["text", "text", "int8", "text", "text", "text", "text", "text", "int8", "text", "bool", "bytea",
                  "timestamptz", "int8"]

_LINK = """
WITH RECURSIVE chain(kiosk, epoch, seq, hash, skipped) AS (
    SELECT s.kiosk, s.epoch, s.seq, s.hash, s.seq - p.seq - 1
      FROM tx s JOIN tx p ON p.kiosk = s.kiosk AND p.hash = s.prev
     WHERE s.kiosk = ANY(%(kiosks)s) AND s.linked_at IS NULL AND p.linked_at IS NOT NULL
       AND (p.epoch = s.epoch OR p.epoch = '') AND p.seq < s.seq
    UNION
    SELECT s.kiosk, s.epoch, s.seq, s.hash, s.seq - c.seq - 1
      FROM chain c JOIN tx s ON s.kiosk = c.kiosk AND s.prev = c.hash
     WHERE s.linked_at IS NULL AND (s.epoch = c.epoch OR c.epoch = '') AND s.seq > c.seq
)
UPDATE tx SET linked_at = now(), skipped = chain.skipped
  FROM chain
 WHERE tx.kiosk = chain.kiosk AND tx.epoch = chain.epoch AND tx.seq = chain.seq AND tx.linked_at IS NULL
RETURNING tx.kiosk, tx.id
"""

_BREAKS = """
SELECT s.fleet, s.kiosk, s.epoch, s.seq, s.id, s.payload, p.hash
  FROM tx s JOIN tx p ON p.kiosk = s.kiosk AND p.epoch = s.epoch AND p.seq = s.seq - 1
 WHERE s.kiosk = ANY(%(kiosks)s) AND s.linked_at IS NULL AND p.linked_at IS NOT NULL AND p.hash <> s.prev
   AND NOT EXISTS (SELECT 1 FROM tx q WHERE q.kiosk = s.kiosk AND q.hash = s.prev)
"""


@dataclasses.dataclass
class BatchOutcome:
    """What one committed batch did."""

    inserted: int = 0
    duplicates: int = 0
    linked: int = 0
    evidence: int = 0
    quarantined: list[Rejection] = dataclasses.field(default_factory=list)   # new quarantine rows only
    epochs: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (kiosk, epoch, reason)
    seconds: float = 0.0


class LedgerStore:
    """Writes batches on one autocommit connection (each ``write`` is its own transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._temp_ready = False

    def _temp_tables(self) -> None:
        if self._temp_ready:
            return
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS tx_in (kiosk text, epoch text, seq bigint, id text, "
                          "fleet text, hash text, prev text, kid text, ts_ms bigint, kind text, "
                          "has_evidence boolean, payload bytea, skipped bigint) ON COMMIT DELETE ROWS")
        self._temp_ready = True

    def write(self, items: Sequence[Item]) -> BatchOutcome:
        """Store ``items`` in one transaction (retried on a deadlock); returns what happened."""
        started = time.perf_counter()
        for attempt in range(_RETRIES):
            try:
                self._temp_tables()
                with self.conn.transaction():
                    outcome = self._write(items)
                outcome.seconds = time.perf_counter() - started
                return outcome
            except (pgerrors.DeadlockDetected, pgerrors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _write(self, items: Sequence[Item]) -> BatchOutcome:
        out = BatchOutcome()
        rejected: list[Rejection] = [i for i in items if isinstance(i, Rejection)]
        records: dict[tuple[str, str], TxRecord] = {}
        for item in items:
            if isinstance(item, TxRecord):
                seen = records.get((item.kiosk, item.id))
                if seen is None:
                    records[(item.kiosk, item.id)] = item
                elif seen.hash == item.hash:
                    out.duplicates += 1
                else:
                    rejected.append(_conflict(item, "id_conflict", f"id {item.id} arrived twice with other bytes"))
        evidence: dict[tuple[str, str], EvidenceItem] = {}
        for item in items:
            if isinstance(item, EvidenceItem):
                seen_e = evidence.get((item.kiosk, item.tx_id))
                if seen_e is None:
                    evidence[(item.kiosk, item.tx_id)] = item
                elif seen_e.sha256 != item.sha256:
                    rejected.append(_evidence_conflict(item))
                else:
                    out.duplicates += 1
        kiosks = sorted({k for k, _ in records} | {k for k, _ in evidence})
        if kiosks:
            self.conn.execute("SELECT pg_advisory_xact_lock(h) FROM "
                              "(SELECT hashtextextended('kiosk-ledger:' || k, 0) AS h "
                              "FROM unnest(%s::text[]) AS k ORDER BY 1) AS locks", (kiosks,))
        if records:
            rejected += self._insert_records(list(records.values()), out, kiosks)
        if evidence:
            rejected += self._insert_evidence(list(evidence.values()), out)
        for rejection in rejected:
            row = self.conn.execute(
                "INSERT INTO quarantine (topic, fleet, kiosk, kind, reason, detail, record_id, epoch, seq, sha256, "
                "payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (topic, sha256, reason) DO NOTHING RETURNING qid",
                (rejection.topic, rejection.fleet, rejection.kiosk, rejection.kind, rejection.reason,
                 rejection.detail[:1000], rejection.record_id, rejection.epoch, rejection.seq, rejection.sha256,
                 rejection.payload)).fetchone()
            if row is not None:
                out.quarantined.append(rejection)
        return out

    def _copy_new(self, records: list[TxRecord], links: dict[tuple[str, str], int]) -> bool:
        """COPY the batch straight into ``tx`` if none of it is stored yet; False (nothing written) otherwise.

        The common case (every record new) costs one COPY instead of a COPY into
        ``tx_in`` and an ``INSERT ... ON CONFLICT`` from it: about a third of
        PostgreSQL's work per record. A record already there (a redelivery, a
        conflict) makes the COPY fail as a whole, inside a savepoint, and the
        batch takes the general path. Binary COPY: the payload travels as
        bytes, not hex, and nothing is parsed from text.
        """
        row = self.conn.execute("SELECT now()").fetchone()       # what now() says in this transaction
        assert row is not None
        now = row[0]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(_COPY_TX) as copy:
                copy.set_types(_COPY_TX_TYPES)
                for r in records:
                    skipped = links.get((r.kiosk, r.id))
                    copy.write_row((r.kiosk, r.epoch, r.seq, r.id, r.fleet, r.hash, r.prev, r.kid, r.ts_ms, r.kind,
                                    r.has_evidence, r.payload, None if skipped is None else now, skipped or 0))
        except pgerrors.UniqueViolation:
            return False
        return True

    def _insert_records(self, records: list[TxRecord], out: BatchOutcome, kiosks: list[str]) -> list[Rejection]:
        conn = self.conn
        links = self._links(records)
        if self._copy_new(records, links):
            inserted = {(r.kiosk, r.id) for r in records}
        else:
            with conn.cursor() as cur, cur.copy(f"COPY tx_in ({', '.join(_TX_COLUMNS)}, skipped) FROM STDIN") as copy:
                for r in records:
                    copy.write_row((r.kiosk, r.epoch, r.seq, r.id, r.fleet, r.hash, r.prev, r.kid, r.ts_ms, r.kind,
                                    r.has_evidence, r.payload, links.get((r.kiosk, r.id))))
            cols = ", ".join(_TX_COLUMNS)
            # Linked at insert when it follows a linked record or one before it in this batch (skipped not NULL).
            inserted = {(k, i) for k, i in conn.execute(
                f"INSERT INTO tx ({cols}, linked_at, skipped) SELECT {cols}, "
                "CASE WHEN skipped IS NOT NULL THEN now() END, coalesce(skipped, 0) FROM tx_in "
                "ON CONFLICT DO NOTHING RETURNING kiosk, id").fetchall()}
        optimistic = len(inserted) == len(records)
        if not optimistic:
            # A record of the batch was not stored (a duplicate or a conflict): a link through it may
            # not hold. Undo this batch's links; the general statement below decides them again.
            conn.execute("UPDATE tx SET linked_at = NULL, skipped = 0 FROM unnest(%s::text[], %s::text[]) "
                         "AS d(kiosk, id) WHERE tx.kiosk = d.kiosk AND tx.id = d.id AND NOT (tx.seq = 1 AND "
                         "tx.prev = %s) AND tx.linked_at IS NOT NULL",
                         ([k for k, _ in inserted], [i for _, i in inserted], GENESIS))
        out.inserted = len(inserted)
        rejected: list[Rejection] = []
        contested: list[TxRecord] = []      # (epoch, seq) held by a pending record: decided after linking
        if len(inserted) < len(records):
            by_key = {(r.kiosk, r.id): r for r in records}
            rows = conn.execute(
                "SELECT i.kiosk, i.id, t.id, t.hash = i.hash, t.linked_at IS NULL FROM tx_in i JOIN tx t "
                "ON t.kiosk = i.kiosk AND (t.id = i.id OR (t.epoch = i.epoch AND t.seq = i.seq))").fetchall()
            verdict: dict[tuple[str, str], str] = {}
            for kiosk, rid, stored_id, same, stored_pending in rows:
                if (kiosk, rid) in inserted:
                    continue
                if stored_id == rid:
                    verdict[(kiosk, rid)] = "duplicate" if same else "id_conflict"
                elif stored_pending and verdict.get((kiosk, rid)) is None:
                    verdict[(kiosk, rid)] = "contested"
                else:
                    verdict[(kiosk, rid)] = verdict.get((kiosk, rid)) or "seq_conflict"
            again: list[tuple[str, str]] = []
            for key, what in verdict.items():
                rec = by_key[key]
                if what == "contested":
                    contested.append(rec)
                elif what == "duplicate":
                    out.duplicates += 1
                    again.append(key)
                elif what == "id_conflict":
                    rejected.append(_conflict(rec, what, f"id {rec.id} is stored with other bytes"))
                else:
                    rejected.append(_conflict(rec, what, f"(epoch {rec.epoch[:8]}, seq {rec.seq}) is stored "
                                                         "with another record"))
            if again:
                # Delivered again: the kiosk may not have the first acknowledgement; send another.
                conn.execute("UPDATE tx SET acked_at = NULL FROM unnest(%s::text[], %s::text[]) AS d(kiosk, id) "
                             "WHERE tx.kiosk = d.kiosk AND tx.id = d.id AND tx.acked_at IS NOT NULL",
                             ([k for k, _ in again], [i for _, i in again]))
        new = [r for r in records if (r.kiosk, r.id) in inserted]
        self._epochs(new, out)
        out.linked = sum(1 for r in new if (r.kiosk, r.id) in links) if optimistic else \
            sum(1 for r in new if r.seq == 1 and r.prev == GENESIS)
        if conn.execute("SELECT 1 FROM tx WHERE kiosk = ANY(%s) AND linked_at IS NULL LIMIT 1", (kiosks,)).fetchone():
            # Records that waited (or new ones after them) may link now: the general statement.
            out.linked += len(conn.execute(_LINK, {"kiosks": kiosks}).fetchall())
        if contested:
            displaced = self._displace(contested, records, inserted, out, rejected)
            if displaced:
                out.linked += len(conn.execute(_LINK, {"kiosks": kiosks}).fetchall())
        for fleet, kiosk, epoch, seq, rid, payload, _pred in conn.execute(_BREAKS, {"kiosks": kiosks}).fetchall():
            conn.execute("DELETE FROM tx WHERE kiosk = %s AND epoch = %s AND seq = %s", (kiosk, epoch, seq))
            out.inserted -= (kiosk, rid) in inserted
            rejected.append(Rejection(_topic_of(records, kiosk, fleet), "tx", "chain_break",
                                      f"seq {seq}: prev does not match the hash of seq {seq - 1} on file",
                                      bytes(payload), fleet, kiosk, rid, epoch, seq))
        return rejected

    def _links(self, records: list[TxRecord]) -> dict[tuple[str, str], int]:
        """Which records of the batch link at once, with their ``skipped``: (kiosk, id) -> skipped.

        The rule of ``_LINK`` -- an epoch's seq 1 after genesis, or ``prev`` naming a linked record of
        the kiosk (same epoch, or the chain from before epochs; lower seq), here also one linked
        earlier in this batch -- decided with one read, so the common in-order case is written linked
        and never updated. What it leaves pending, ``_LINK`` looks at after the insert.
        """
        # Only predecessors outside the batch are looked up (in order, one per kiosk): a record whose
        # predecessor is in the batch links when that one does. Looking up fewer can only leave a record
        # pending, for _LINK to decide after the insert; never link one that would not.
        in_batch = {(r.kiosk, r.hash) for r in records}
        outside = [r for r in records if (r.kiosk, r.prev) not in in_batch and not (r.seq == 1 and r.prev == GENESIS)]
        linked: dict[tuple[str, str], tuple[str, int]] = {
            (k, h): (e, q) for k, h, e, q in self.conn.execute(
                "SELECT p.kiosk, p.hash, p.epoch, p.seq FROM tx p "
                "JOIN unnest(%s::text[], %s::text[]) AS w(kiosk, prev) ON p.kiosk = w.kiosk AND p.hash = w.prev "
                "WHERE p.linked_at IS NOT NULL",
                ([r.kiosk for r in outside], [r.prev for r in outside])).fetchall()} if outside else {}
        out: dict[tuple[str, str], int] = {}
        for r in sorted(records, key=lambda r: (r.kiosk, r.epoch, r.seq)):
            if r.seq == 1 and r.prev == GENESIS:
                out[(r.kiosk, r.id)] = 0
                linked[(r.kiosk, r.hash)] = (r.epoch, r.seq)
                continue
            pred = linked.get((r.kiosk, r.prev))
            if pred is not None and (pred[0] == r.epoch or pred[0] == "") and pred[1] < r.seq:
                out[(r.kiosk, r.id)] = r.seq - pred[1] - 1
                linked[(r.kiosk, r.hash)] = (r.epoch, r.seq)
        return out

    def _displace(self, contested: list[TxRecord], records: list[TxRecord], inserted: set[tuple[str, str]],
                  out: BatchOutcome, rejected: list[Rejection]) -> int:
        """A record that links takes the place of a pending one at its seq that does not; else seq_conflict.

        Both carry the kiosk's signature, so only the kiosk made either; the
        one that does not follow its predecessor broke the chain.
        """
        cols = ", ".join(_TX_COLUMNS)
        displaced = 0
        for rec in contested:
            links = self.conn.execute(
                "SELECT 1 FROM tx p WHERE p.kiosk = %s AND p.hash = %s AND p.linked_at IS NOT NULL AND p.seq < %s "
                "AND (p.epoch = %s OR p.epoch = '')", (rec.kiosk, rec.prev, rec.seq, rec.epoch)).fetchone()
            gone = self.conn.execute(
                "DELETE FROM tx WHERE kiosk = %s AND epoch = %s AND seq = %s AND linked_at IS NULL "
                "RETURNING fleet, id, payload", (rec.kiosk, rec.epoch, rec.seq)).fetchone() if links else None
            if gone is None:
                rejected.append(_conflict(rec, "seq_conflict", f"(epoch {rec.epoch[:8]}, seq {rec.seq}) is stored "
                                                               "with another record"))
                continue
            rejected.append(Rejection(_topic_of(records, rec.kiosk, gone[0]), "tx", "chain_break",
                                      f"seq {rec.seq}: does not follow seq {rec.seq - 1}; a record that does "
                                      "took its place", bytes(gone[2]), gone[0], rec.kiosk, gone[1], rec.epoch,
                                      rec.seq))
            out.inserted -= (rec.kiosk, gone[1]) in inserted
            self.conn.execute(f"INSERT INTO tx ({cols}) SELECT {cols} FROM tx_in WHERE kiosk = %s AND id = %s",
                              (rec.kiosk, rec.id))
            inserted.add((rec.kiosk, rec.id))
            out.inserted += 1
            displaced += 1
        return displaced

    def _epochs(self, new: list[TxRecord], out: BatchOutcome) -> None:
        """One row per epoch seen; what an epoch after a lost store says it followed."""
        pairs = sorted({(r.kiosk, r.epoch) for r in new})
        if pairs:
            self.conn.execute("INSERT INTO epochs (kiosk, epoch) SELECT * FROM unnest(%s::text[], %s::text[]) "
                              "ON CONFLICT DO NOTHING", ([k for k, _ in pairs], [e for _, e in pairs]))
        for r in new:
            start = r.epoch_start
            if start is None:
                continue
            prev_seq = start.get("prev_last_seq")
            reason = str(start.get("reason") or "new_epoch")[:64]
            self.conn.execute(
                "UPDATE epochs SET reason = %s, prev_epoch = %s, prev_last_seq = %s, prev_last_seq_exact = %s "
                "WHERE kiosk = %s AND epoch = %s",
                (reason, str(start.get("prev_epoch"))[:64] if start.get("prev_epoch") is not None else None,
                 prev_seq if isinstance(prev_seq, int) and not isinstance(prev_seq, bool) else None,
                 start.get("prev_last_seq_exact") if isinstance(start.get("prev_last_seq_exact"), bool) else None,
                 r.kiosk, r.epoch))
            out.epochs.append((r.kiosk, r.epoch, reason))

    def _insert_evidence(self, items: list[EvidenceItem], out: BatchOutcome) -> list[Rejection]:
        rows = self.conn.execute(
            "INSERT INTO evidence (kiosk, tx_id, fleet, seq, sha256, payload) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bytea[]) "
            "ON CONFLICT DO NOTHING RETURNING kiosk, tx_id",
            ([e.kiosk for e in items], [e.tx_id for e in items], [e.fleet for e in items], [e.seq for e in items],
             [e.sha256 for e in items], [e.payload for e in items])).fetchall()
        inserted = {(k, t) for k, t in rows}
        out.evidence = len(inserted)
        rejected = []
        rest = [e for e in items if (e.kiosk, e.tx_id) not in inserted]
        if rest:
            stored = {(k, t): h for k, t, h in self.conn.execute(
                "SELECT e.kiosk, e.tx_id, e.sha256 FROM evidence e JOIN unnest(%s::text[], %s::text[]) "
                "AS d(kiosk, tx_id) USING (kiosk, tx_id)", ([e.kiosk for e in rest], [e.tx_id for e in rest]))}
            for item in rest:
                if stored.get((item.kiosk, item.tx_id)) == item.sha256:
                    out.duplicates += 1
                else:
                    rejected.append(_evidence_conflict(item))
        return rejected


def _topic_of(records: list[TxRecord], kiosk: str, fleet: str) -> str:
    return next((r.topic for r in records if r.kiosk == kiosk), f"kiosk/v1/{fleet}/{kiosk}/tx")


def _conflict(rec: TxRecord, reason: str, detail: str) -> Rejection:
    return Rejection(rec.topic, "tx", reason, detail, rec.payload, rec.fleet, rec.kiosk, rec.id, rec.epoch, rec.seq)


def _evidence_conflict(item: EvidenceItem) -> Rejection:
    return Rejection(item.topic, "evidence", "evidence_conflict",
                     f"evidence for tx {item.tx_id} is stored with other bytes", item.payload, item.fleet,
                     item.kiosk, item.tx_id, None, item.seq)
