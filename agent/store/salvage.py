# SPDX-License-Identifier: Apache-2.0
"""Carry what is still readable from a corrupt store into the fresh one.

Store.open moves a database that fails its check aside (kept, never
deleted) and starts a fresh one; this copies into it, row by row where a
page is damaged, whatever the old file still yields:

- journal records whose bytes still match their hash, so ``seq`` and
  ``prev`` continue from the highest one instead of starting again at 1;
- queued messages (results, alarms, evidence, transactions), health excepted;
- command nonces (a replay stays refused), counters (``bdSeq``), alarms and
  the other tables components keep (the service mode).

When the old outbox could not be read whole, the counter
``salvage_requeue``, committed with the copy, tells the journal (which knows
the ``tx`` topic) to queue every unacknowledged record again: the back
office may get some twice, always with identical bytes, which the delivery
contract allows.

The copy is made from a duplicate of the kept files (SQLite may write to a
database it opens, to replay its WAL), which is removed afterwards.

    report = salvage(kept_path, fresh_conn, scratch_dir)
    print(report.summary())   # "salvaged 1,240 journal records (seq 1-1,246, 6 unreadable), ..."
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["REQUEUE_COUNTER", "SEQ_COUNTER", "SalvageReport", "salvage"]

CHUNK = 500
REQUEUE_COUNTER = "salvage_requeue"      # set with the copy; the journal clears it once it has queued
SEQ_COUNTER = "tx_seq"                   # the highest seq ever committed (the journal keeps it with each record)


@dataclasses.dataclass
class SalvageReport:
    journal_rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    unreadable_seqs: int = 0          # seqs up to highest_seq not salvaged: damaged, failing their hash or lost
    highest_seq: int = 0              # the highest seq known used (journal, outbox or counter)
    requeue_needed: bool = False      # the old outbox was damaged: queue unacknowledged records again
    requeued: int = 0                 # how many the journal queued again
    rows: dict[str, int] = dataclasses.field(default_factory=dict)    # table -> rows copied
    damaged_tables: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None          # why nothing could be read at all

    def summary(self) -> str:
        if self.error is not None:
            return f"nothing salvaged ({self.error}); the journal starts a new epoch at seq 1"
        parts = []
        if self.journal_rows:
            parts.append(f"salvaged {self.journal_rows:,} journal records (seq {self.first_seq:,}-"
                         f"{self.highest_seq:,}, {self.unreadable_seqs:,} unreadable)")
        elif self.highest_seq:
            parts.append(f"no journal record salvaged; seq goes on after {self.highest_seq:,}")
        else:
            parts.append("no journal record salvaged; the journal starts a new epoch at seq 1")
        if self.highest_seq > (self.last_seq or 0):
            parts.append(f"seq {(self.last_seq or 0) + 1:,}-{self.highest_seq:,} lost")
        queued = self.rows.get("outbox", 0) + self.requeued
        parts.append(f"{queued:,} queued messages")
        if self.damaged_tables:
            parts.append(f"damaged: {', '.join(self.damaged_tables)}")
        return "; ".join(parts)


def salvage(kept: Path, conn: sqlite3.Connection, scratch: Path) -> SalvageReport:
    """Copy what ``kept`` still yields into ``conn`` (a fresh store with its schema)."""
    report = SalvageReport()
    copy = scratch / f"{kept.name}.salvage"
    try:
        for suffix in ("", "-wal"):
            if Path(f"{kept}{suffix}").exists():
                shutil.copyfile(f"{kept}{suffix}", f"{copy}{suffix}")
        try:
            src = sqlite3.connect(copy, isolation_level=None)
            tables = _tables(src)
        except sqlite3.Error as exc:
            report.error = str(exc)
            return report
        try:
            _copy_all(src, conn, tables, report)
        finally:
            src.close()
    except OSError as exc:            # no room for the copy, most likely
        report.error = f"cannot copy the kept file: {exc}"
        return report
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    log.warning("store salvage: %s", report.summary())
    return report


def _tables(src: sqlite3.Connection) -> dict[str, str]:
    rows = src.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name: sql for name, sql in rows if not name.startswith("sqlite_") and sql}


def _copy_all(src: sqlite3.Connection, dst: sqlite3.Connection, tables: dict[str, str],
              report: SalvageReport) -> None:
    dst.execute("BEGIN IMMEDIATE")
    try:
        for name, sql in tables.items():
            # Tables a component creates later (agent_settings) come over with the old schema.
            dst.execute(sql.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
            columns = {r[1] for r in dst.execute(f'PRAGMA table_info("{name}")')}
            shared = [r[1] for r in src.execute(f'PRAGMA table_info("{name}")') if r[1] in columns]
            names = ["rowid", *shared]
            marks = ", ".join("?" * len(names))
            insert = f'INSERT OR IGNORE INTO "{name}" ({_column_list(names)}) VALUES ({marks})'
            reader = _Reader(src, name, names)
            copied, rejected = 0, False
            for row in reader.rows():
                fields = dict(zip(names, row, strict=True))
                if name == "journal" and not _journal_row_ok(fields):
                    rejected = True
                    continue
                if name == "outbox" and fields.get("cls") == "health":
                    continue
                dst.execute(insert, row)
                copied += 1
            if reader.failed or rejected:
                report.damaged_tables.append(name)
            report.rows[name] = copied
        _journal_summary(dst, report)
        report.requeue_needed = "outbox" in report.damaged_tables or "outbox" not in tables
        if report.requeue_needed and report.journal_rows:
            # Durable with the copy: a crash before the journal acts on it leaves it to the next start.
            dst.execute("INSERT OR REPLACE INTO counters(name, value) VALUES (?, 1)", (REQUEUE_COUNTER,))
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise


class _Reader:
    """Rows of one table in rowid order; a chunk that fails is read row by row, and rows that fail are skipped."""

    def __init__(self, src: sqlite3.Connection, table: str, names: list[str]) -> None:
        self.src = src
        self.table = table
        self.cols = _column_list(names)
        self.failed = False

    def rows(self) -> Iterator[tuple[object, ...]]:
        select = f'SELECT {self.cols} FROM "{self.table}"'
        try:
            low, high = self.src.execute(f'SELECT min(rowid), max(rowid) FROM "{self.table}"').fetchone()
        except sqlite3.DatabaseError:
            low = high = None
            self.failed = True
        if low is None:
            # Empty, or a b-tree that will not give its ends: take what a scan yields.
            try:
                yield from self.src.execute(select).fetchall()
            except sqlite3.DatabaseError:
                self.failed = True
            return
        for start in range(int(low), int(high) + 1, CHUNK):
            end = min(start + CHUNK - 1, int(high))
            try:
                yield from self.src.execute(f"{select} WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
                                            (start, end)).fetchall()
            except sqlite3.DatabaseError:
                self.failed = True
                for rowid in range(start, end + 1):
                    try:
                        yield from self.src.execute(f"{select} WHERE rowid = ?", (rowid,)).fetchall()
                    except sqlite3.DatabaseError:
                        continue


def _column_list(names: list[str]) -> str:
    return ", ".join(c if c == "rowid" else f'"{c}"' for c in names)


def _journal_row_ok(row: dict[str, object]) -> bool:
    payload = row.get("payload")
    return isinstance(payload, bytes) and hashlib.sha256(payload).hexdigest() == row.get("hash")


def _journal_summary(dst: sqlite3.Connection, report: SalvageReport) -> None:
    first, last, count = dst.execute("SELECT min(seq), max(seq), count(*) FROM journal").fetchone()
    report.journal_rows = int(count)
    if count:
        report.first_seq, report.last_seq = int(first), int(last)
        report.unreadable_seqs = int(last) - int(first) + 1 - int(count)
    # Seqs past the last record kept were used too if the outbox or the
    # high-water counter say so; the journal continues after them.
    known = [row[0] for row in (
        dst.execute("SELECT max(ref) FROM outbox WHERE cls = 'tx'").fetchone(),
        dst.execute("SELECT value FROM counters WHERE name = ?", (SEQ_COUNTER,)).fetchone()) if row]
    report.highest_seq = max([int(v) for v in known if v is not None] + [report.last_seq or 0])
    if report.highest_seq > (report.last_seq or 0):
        report.unreadable_seqs += report.highest_seq - (report.last_seq or 0)
        dst.execute("INSERT OR REPLACE INTO counters(name, value) VALUES (?, ?)", (SEQ_COUNTER, report.highest_seq))
    if report.unreadable_seqs and "journal" not in report.damaged_tables:
        report.damaged_tables.append("journal")
