# SPDX-License-Identifier: Apache-2.0
"""Every table and index of the agent's database, and the ladder that brings an old file up to date.

The schema's version is SQLite's ``PRAGMA user_version`` (a header field,
written in the same transaction as the tables). ``MIGRATIONS`` is the
ladder: step N takes a database from version N-1 to N. ``migrate`` runs the
steps a file lacks, all of them in one transaction, so a power cut during an
upgrade leaves the old version whole. Steps are history: once released, a
step is never edited; a change is a new step at the end.

- **1** -- the schema the released agent (commit 817af0e) wrote, which never
  set ``user_version``: a file at version 0 is either new or from that
  release. Its tables were created by several components on their first use
  (``command_audit``, ``agent_settings``, ``evidence``), so an old file may
  lack some; every statement is ``IF NOT EXISTS``.
- **2** -- the outbox's ``(cls, id)`` index: the refill query reads one class
  in id order, which otherwise scans every class's rows.

A file whose version is newer than ``SCHEMA_VERSION`` was written by a newer
release (the agent was rolled back): it is refused with ``StoreTooNew`` and
left exactly as it is, for the newer release to open again.

    migrate(conn)        # at open; a no-op (one header read) once current
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3

from agent.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "StoreTooNew", "migrate", "refuse_newer", "user_version"]

log = logging.getLogger(__name__)


class StoreTooNew(StoreError):
    """The database was written by a newer release than this agent; it is left untouched."""

    code = "agent.store.too_new"

    def __init__(self, path: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(f"{path} has schema version {found}, newer than this agent knows ({known}): "
                         f"it was written by a newer release; not opened and left as it is "
                         f"(install that release again, or move the file away to start an empty store)")


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int              # the version a database has after this step
    why: str
    statements: tuple[str, ...]


_RELEASE_817AF0E = (
    """CREATE TABLE IF NOT EXISTS counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL)""",
    # One row per signed transaction record, the hash chain's order in seq.
    """CREATE TABLE IF NOT EXISTS journal (
        seq      INTEGER PRIMARY KEY,
        id       TEXT NOT NULL UNIQUE,
        ts       INTEGER NOT NULL,
        hash     TEXT NOT NULL,
        payload  BLOB NOT NULL,
        acked_ms INTEGER)""",
    "CREATE INDEX IF NOT EXISTS journal_unacked ON journal(seq) WHERE acked_ms IS NULL",
    "CREATE INDEX IF NOT EXISTS journal_acked ON journal(acked_ms) WHERE acked_ms IS NOT NULL",
    # Queued messages; a tx row has no payload of its own (ref = the journal's seq).
    """CREATE TABLE IF NOT EXISTS outbox (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        cls        TEXT NOT NULL,
        topic      TEXT NOT NULL,
        payload    BLOB,
        ref        INTEGER,
        retain     INTEGER NOT NULL DEFAULT 0,
        size       INTEGER NOT NULL,
        created_ms INTEGER NOT NULL)""",
    # Accepted command nonces (the replay guard), kept until they expire.
    """CREATE TABLE IF NOT EXISTS nonces (
        nonce      TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alarms (
        code   TEXT PRIMARY KEY,
        since  INTEGER NOT NULL,
        detail TEXT NOT NULL,
        device TEXT)""",
    """CREATE TABLE IF NOT EXISTS command_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, name TEXT, key_id TEXT, nonce TEXT,
        correlation TEXT, outcome TEXT NOT NULL, code TEXT, message TEXT, args TEXT)""",
    # Small named values: service mode, journal epoch, remote-config version and pending apply.
    "CREATE TABLE IF NOT EXISTS agent_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Sealed evidence bundles, kept until the back office acknowledges their transaction.
    """CREATE TABLE IF NOT EXISTS evidence (
        tx_id      TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        payload    BLOB NOT NULL)""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the released schema (817af0e), tables some components created on first use", _RELEASE_817AF0E),
    Migration(2, "outbox refill reads one class in id order", (
        "CREATE INDEX IF NOT EXISTS outbox_cls_id ON outbox(cls, id)",)),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _database_name(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row and row[2] else ":memory:"


def refuse_newer(conn: sqlite3.Connection) -> int:
    """The file's version; StoreTooNew if a newer release wrote it (nothing is written)."""
    found = user_version(conn)
    if found > SCHEMA_VERSION:
        raise StoreTooNew(_database_name(conn), found, SCHEMA_VERSION)
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database to ``SCHEMA_VERSION`` in one transaction; returns the version it had.

    ``conn`` must be in autocommit mode (``isolation_level=None``) and
    outside a transaction. Safe from several connections: the version is
    read again under the write lock, so a step never runs twice.
    """
    if refuse_newer(conn) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = refuse_newer(conn)
        upgrading = found > 0 or conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        for step in MIGRATIONS:
            if step.version > found:
                for statement in step.statements:
                    conn.execute(statement)
        # PRAGMA takes no parameters; SCHEMA_VERSION is our own integer.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if upgrading:
        log.warning("store %s upgraded from schema version %d to %d", _database_name(conn), found, SCHEMA_VERSION)
    return found
