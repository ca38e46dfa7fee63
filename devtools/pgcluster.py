# SPDX-License-Identifier: Apache-2.0
"""A private PostgreSQL cluster on a loopback port: for the back office's tests, benches and ``make run-backoffice``.

Debian's server binaries refuse to run as root, so as root the cluster runs
as the ``postgres`` user the package creates, in a directory chowned to it;
as anyone else it runs as the caller. It listens on 127.0.0.1 only, on a
free port unless given one; the socket directory is private too.

    with PgCluster() as pg:                  # a fresh directory under /tmp, removed at the end
        dsn = pg.create_database("t1")      # postgresql://postgres@127.0.0.1:PORT/t1

    pg = PgCluster(Path(".run/backoffice/pg"), port=5433, keep=True).start()   # made once, kept across runs
    dsn = pg.ensure_database("ledger")
    pg.stop()                                # fast shutdown; the data stays for the next start
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

__all__ = ["PgCluster", "PgClusterError", "find_pg_bin", "wait_ready"]

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


class PgClusterError(RuntimeError):
    """The cluster could not be made or started; the message says why and, where it can, what to do."""

    code = "pgcluster.failed"


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
    """initdb + pg_ctl start in ``workdir`` (as ``postgres`` when root); ``stop`` shuts it down.

    ``keep=False`` (tests): a new cluster at every start, stopped in immediate mode and its directory removed.
    ``keep=True`` (``make run-backoffice``): initdb only when ``workdir`` holds no cluster yet, a fast (clean)
    shutdown, and the directory stays for the next start.
    """

    def __init__(self, workdir: Path | None = None, *, user: str = "postgres", port: int | None = None,
                 keep: bool = False) -> None:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise PgClusterError("PostgreSQL server binaries not found: apt-get install postgresql")
        self.bin = pg_bin
        # Not under pytest's tmp_path: its parents are 0700 root, which the postgres user cannot traverse.
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kiosk-ledger-pg-"))
        self.data = self.workdir / "data"
        self.port = port or _free_port()
        self.user = user
        self.keep = keep
        self.started = False
        self.created = False        # this start ran initdb

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        # Its own session: a Ctrl-C at the terminal is for whoever runs the cluster, who stops it in order.
        result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=self.workdir,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        if check and result.returncode != 0:
            raise PgClusterError(f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def _check_reachable(self) -> None:
        """As root: the postgres user must be able to walk down to ``workdir`` (a 0700 parent stops it)."""
        def enters(directory: Path) -> bool:
            return subprocess.run(["runuser", "-u", self.user, "--", "test", "-x", str(directory)],
                                  check=False, capture_output=True).returncode == 0

        parent = self.workdir.resolve().parent
        if enters(parent):     # search permission on it means on every directory above it too
            return
        blocked = [above for above in reversed((parent, *parent.parents)) if not enters(above)]
        if blocked:
            raise PgClusterError(f"PostgreSQL runs as the {self.user!r} user (it refuses root), which cannot enter "
                                 f"{blocked[0]}; allow it with `chmod o+x {blocked[0]}`, or run as a user "
                                 "other than root")

    def _options(self) -> str:
        return (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} "
                "-c fsync=on -c max_connections=200 -c shared_buffers=32MB")

    def running(self) -> bool:
        """A server runs on ``data`` (maybe one a killed run left behind)."""
        if not (self.data / "PG_VERSION").exists():
            return False
        return self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> PgCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._check_reachable()
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self.workdir.chmod(0o700)
        if not (self.keep and (self.data / "PG_VERSION").exists()):
            self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
            self.created = True
        elif self.running():
            # A server a killed run left behind: stopped cleanly, then started with this run's settings.
            self.halt()
        result = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self._options(), "-l",
                                   str(self.log_path), "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise PgClusterError(f"pg_ctl start failed: {result.stdout}{result.stderr}{log[-2000:]}")
        self.started = True
        return self

    def halt(self) -> None:
        """Stop the server (fast mode: connections are cut), keeping its data, for an outage test."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start it again on the same port with the same data."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self._options(), "-l",
                          str(self.log_path), "-w", "-t", "60", "start")

    def postmaster_pid(self) -> int | None:
        """The running server's process id (its ``postmaster.pid``), None when it is not running."""
        try:
            return int((self.data / "postmaster.pid").read_text(encoding="ascii").split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def create_database(self, name: str) -> str:
        """A fresh database on the cluster (one of that name is dropped first); returns its DSN."""
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def ensure_database(self, name: str) -> str:
        """The database ``name``, created if missing (kept if there); returns its DSN."""
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self.started:
            mode = "fast" if self.keep else "immediate"    # fast: a clean shutdown, no recovery at the next start
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)
            self.started = False
        if not self.keep:
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
