# SPDX-License-Identifier: Apache-2.0
"""Ledger fixtures: one private PostgreSQL cluster per session, one fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from corekit import LedgerFactory, LedgerProcess, write_ledger_config
from pgcluster import PgCluster, find_pg_bin

from agent.sim.devbroker import DevBroker
from fleet.keys import init_key
from fleet.ledger.db import connect
from fleet.ledger.schema import migrate


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL is not installed; `make test` installs it (apt-get install postgresql)")
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture
def dsn(pg: PgCluster) -> str:
    """A fresh, migrated database for this test."""
    url = pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    with connect(url) as conn:
        migrate(conn)
    return url


@pytest.fixture
def backoffice_key(tmp_path: Path) -> Path:
    """The back-office key that signs tx/ack (``kioskctl keys init --role backoffice`` makes the same files)."""
    paths, _key = init_key(tmp_path / "keys", "backoffice-1")
    return paths.private




@pytest.fixture
def ledger(tmp_path: Path, dsn: str, broker: DevBroker, backoffice_key: Path) -> Iterator[LedgerFactory]:
    """Start ``kiosk-ledger serve`` workers: ``ledger("w1")``; all killed at the end."""
    started: list[LedgerProcess] = []

    def start(name: str = "w1", *, env: dict[str, str] | None = None, extra: str = "") -> LedgerProcess:
        config = write_ledger_config(tmp_path / f"{name}.toml", dsn=dsn, broker_url=broker.url,
                                     client_id=f"ledger-{name}", key_file=backoffice_key, extra=extra)
        proc = LedgerProcess(tmp_path, config, env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
