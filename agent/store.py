# SPDX-License-Identifier: Apache-2.0
"""The agent's one SQLite database: counters now; journal, outbox, nonces next.

WAL mode with ``synchronous=FULL``: a commit that returned survives a power
cut. Opened once by the daemon; used only from the event loop's thread
unless a method says otherwise.

    store = Store.open(Path("/var/lib/kiosk-agent"))
    bd_seq = store.bump_counter("bdSeq")
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.errors import StoreError

__all__ = ["Store", "DB_NAME"]

DB_NAME = "agent.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class Store:
    """Owner of the SQLite connection."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, directory: Path) -> "Store":
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DB_NAME
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        return cls(path, conn)

    def counter(self, name: str) -> int:
        row = self.conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def bump_counter(self, name: str) -> int:
        """Increase ``name`` by one, durably, and return the new value."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO counters(name, value) VALUES(?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,))
            row = self.conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
