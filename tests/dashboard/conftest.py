# SPDX-License-Identifier: Apache-2.0
"""Dashboard fixtures: one private PostgreSQL cluster per session, a migrated database per test, users, and the
real ``kiosk-ledger dashboard`` process.

    def test_x(dashboard, make_user):
        make_user("li", "operator", "correct horse battery")
        web = login(dashboard.url, "li", "correct horse battery")     # dashkit.login
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from dashkit import DashboardProcess, PgCluster, find_pg_bin, write_dashboard_config
from dashkit import make_user as _make_user

from fleet.ledger.schema import migrate

StartDashboard = Callable[..., DashboardProcess]


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL is not installed; `make test` installs it (apt-get install postgresql)")
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def migrated_template(pg: PgCluster) -> str:
    """A database migrated once per session, copied for each test (a copy is cheaper than the migrations)."""
    name = f"dtemplate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.create_database(name)) as conn:
        migrate(conn)
    return name


@pytest.fixture
def dsn(pg: PgCluster, migrated_template: str) -> str:
    """A fresh database at this code's schema version."""
    name = f"d_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    return pg.dsn(name)


@pytest.fixture
def make_user(dsn: str) -> Callable[..., None]:
    """``make_user(name, role, password)``: a dashboard user in this test's database."""
    def make(name: str, role: str, password: str, *, disabled: bool = False) -> None:
        _make_user(dsn, name, role, password, disabled=disabled)
    return make


@pytest.fixture
def start_dashboard(tmp_path: Path, dsn: str) -> Iterator[StartDashboard]:
    """``start_dashboard(ui_dir=None, dashboard_extra="", secure_cookies=False, ...)``: a started, answering one."""
    started: list[DashboardProcess] = []

    def start(*, ui_dir: Path | None = None, dashboard_extra: str = "", extra: str = "",
              broker_url: str = "mqtt://127.0.0.1:1883", name: str = "dash",
              secure_cookies: bool = False) -> DashboardProcess:
        config = write_dashboard_config(tmp_path / f"{name}.toml", dsn=dsn, broker_url=broker_url,
                                        dashboard_extra=dashboard_extra, extra=extra, secure_cookies=secure_cookies)
        proc = DashboardProcess(tmp_path, config, ui_dir=ui_dir).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def dashboard(start_dashboard: StartDashboard) -> DashboardProcess:
    """The dashboard with the installed pages (fleet/dashboard/ui), on a free loopback port."""
    return start_dashboard()
