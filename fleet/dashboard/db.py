# SPDX-License-Identifier: Apache-2.0
"""A few PostgreSQL connections the dashboard's requests share.

    db = Database(dsn, size=4)
    async with db.connection() as conn:      # psycopg AsyncConnection, autocommit
        rows = await (await conn.execute("SELECT 1")).fetchall()

psycopg_pool is not a dependency: a semaphore and a stack of idle
connections do what the dashboard needs. A connection that breaks is
dropped and the request answers ``db.unavailable`` (503); after a failed
connect the next ones fail fast for a second, so an outage costs the
pages nothing but that answer, and the process keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from fleet.dashboard.errors import DbUnavailable

__all__ = ["Database", "Conn"]

log = logging.getLogger("fleet.dashboard")

Conn = psycopg.AsyncConnection[Any]


class Database:
    """At most ``size`` autocommit connections to ``dsn``, opened on demand and reused."""

    def __init__(self, dsn: str, *, size: int = 4, connect_timeout: float = 3.0, retry_after_s: float = 1.0) -> None:
        self.dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Conn] = []
        self._connect_timeout = connect_timeout
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._down_logged = False

    async def _connect(self) -> Conn:
        if time.monotonic() < self._down_until:
            raise DbUnavailable("the database is not reachable just now; try again shortly")
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                         connect_timeout=max(1, int(self._connect_timeout)))
        except psycopg.Error as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            if not self._down_logged:
                log.warning("cannot reach PostgreSQL: %s (answering 503 db.unavailable until it is back)",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                self._down_logged = True
            raise DbUnavailable("the database is not reachable just now; try again shortly") from None
        if self._down_logged:
            log.info("PostgreSQL is reachable again")
            self._down_logged = False
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection for one request; DbUnavailable when the database is down or drops it."""
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                conn = None if candidate.closed or candidate.broken else candidate
            if conn is None:
                conn = await self._connect()
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if conn.broken or conn.closed:
                    # The server went away (restart, failover): this connection is done; the next request
                    # opens a new one.
                    if not self._down_logged:
                        log.warning("PostgreSQL connection lost: %s", str(exc).strip() or type(exc).__name__)
                    await self._close(conn)
                    raise DbUnavailable("the database connection was lost; try again shortly") from None
                raise
            finally:
                if conn.closed:
                    pass
                elif not conn.broken and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    await self._close(conn)

    async def _close(self, conn: Conn) -> None:
        try:
            await conn.close()
        except psycopg.Error:
            pass

    async def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._close(conn)
