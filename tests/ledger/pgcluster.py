# SPDX-License-Identifier: Apache-2.0
"""A private PostgreSQL 15 cluster for the ledger tests.

Debian's server binaries refuse to run as root, so the cluster runs as the
``postgres`` user the package creates, in a temporary directory chowned to
it, on a free loopback port; the socket directory is private too.

    with PgCluster() as pg:                  # a fresh directory under /tmp
        dsn = pg.create_database("t1")      # postgresql://postgres@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PgCluster", "find_pg_bin"]

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def find_pg_bin() -> Path | None:
    for candidate in PG_BIN_CANDIDATES:
        if Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """initdb + pg_ctl start in ``workdir`` as ``postgres``; ``stop`` tears it down (immediate mode)."""

    def __init__(self, workdir: Path | None = None, *, user: str = "postgres") -> None:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
        self.bin = pg_bin
        # Not under pytest's tmp_path: its parents are 0700 root, which the postgres user cannot traverse.
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kiosk-ledger-pg-"))
        self.data = self.workdir / "data"
        self.port = _free_port()
        self.user = user
        self.started = False

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=self.workdir,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def start(self) -> PgCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self.workdir.chmod(0o700)
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} "
                   "-c fsync=on -c max_connections=200 -c shared_buffers=32MB")
        result = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                   str(self.workdir / "server.log"), "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            log = (self.workdir / "server.log").read_text(errors="replace") if (self.workdir / "server.log").exists() \
                else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}{log[-2000:]}")
        self.started = True
        return self

    def halt(self) -> None:
        """Stop the server (fast mode: connections are cut), keeping its data, for an outage test."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start it again on the same port with the same data."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} "
                   "-c fsync=on -c max_connections=200 -c shared_buffers=32MB")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                          str(self.workdir / "server.log"), "-w", "-t", "60", "start")

    def create_database(self, name: str) -> str:
        """A fresh database on the cluster; returns its DSN."""
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self.started:
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop",
                              check=False)
            self.started = False
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(cluster: PgCluster, timeout: float = 30.0) -> None:
    """Until the cluster accepts a connection (pg_ctl -w normally covers this)."""
    import psycopg
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(cluster.dsn(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
