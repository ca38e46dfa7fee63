# SPDX-License-Identifier: Apache-2.0
"""``make run-backoffice`` (``python -m devtools.run_backoffice``) as a fleet manager trying it meets it.

    .venv/bin/python -m pytest tests/dashboard/test_run_backoffice.py

The script runs for real in a scratch directory: PostgreSQL, Mosquitto, the
ledger, the dashboard and three simulated kiosks. The test reads the printed
dashboard address and login, logs in over HTTP as a browser does, sees the
three kiosks online, pastes the printed "open a door" line and sees the alarm
in ``/api/alarms``, pastes the printed ``kioskctl cmd`` line and gets the
kiosk's answer; then SIGTERM, and every process the script started (the
PostgreSQL server too) must be gone. The second run must keep the cluster,
the kiosks' data and the admin's password; killed with kill -9, it leaves
only the two servers that run detached, which the third run stops first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from dashkit import REPO, Http, login
from kiosktest import wait_until
from pgcluster import find_pg_bin  # also puts the repository on sys.path for devtools

from agent.sim.devbroker import find_mosquitto
from devtools.run_backoffice import ADMIN, KIOSKS

WAIT = 90.0         # the first run makes a cluster and keys; on a loaded 2-core machine that takes a while


class Run:
    """The script in ``run_dir``; its output collected line by line."""

    def __init__(self, run_dir: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "devtools.run_backoffice", "--dir", str(run_dir),
                                      "--sessions-per-minute", "0"],
                                     cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: any("Ctrl-C stops" in line for line in self.lines) or self.proc.poll() is not None,
                   WAIT, interval=0.1, message="make run-backoffice's banner")
        assert self.proc.poll() is None, self.output

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def after(self, label: str) -> str:
        """What follows ``label`` on the first printed line that has it."""
        line = next((x for x in self.lines if x.strip().startswith(label)), None)
        assert line is not None, f"no {label!r} line in:\n{self.output}"
        return line.split(label, 1)[1].strip()

    @property
    def url(self) -> str:
        match = re.fullmatch(r"(http://127\.0\.0\.1:\d+)/", self.after("dashboard:"))
        assert match, self.output
        return match.group(1)

    @property
    def login(self) -> tuple[str, str]:
        user, _slash, password = self.after("login:").partition(" / ")
        return user, password

    def processes(self, pg_dir: Path) -> list[psutil.Process]:
        """Everything it started: its descendants, and the PostgreSQL server (pg_ctl detaches it) with its own."""
        procs = psutil.Process(self.proc.pid).children(recursive=True)
        postmaster = psutil.Process(int((pg_dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0]))
        return procs + [postmaster] + postmaster.children(recursive=True)

    def stop(self) -> int:
        """SIGTERM to the script alone (it stops the rest itself); its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self._reader.join(timeout=WAIT)
        return code


def _alive(procs: list[psutil.Process]) -> list[str]:
    """The ones still running (a zombie has exited: only its exit status is left for a parent to read)."""
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            pass
    return left


def _fleet(web: Http) -> dict[str, Any]:
    return {row["kiosk"]: row for row in web.get_json("/api/fleet")["kiosks"]}


def _open_alarms(web: Http) -> list[tuple[str, str]]:
    return [(a["kiosk"], a["code"]) for a in web.get_json("/api/alarms?state=open")["alarms"]]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: PostgreSQL runs as the postgres user when root, and must be able to enter it;
    # short, too, for the kiosks' control sockets (a unix socket path has 107 bytes at most).
    if find_pg_bin() is None or find_mosquitto() is None:
        pytest.fail("PostgreSQL and Mosquitto are needed; `make test` installs them")
    top = Path(tempfile.mkdtemp(prefix="rbo-"))
    top.chmod(0o755)
    yield top / ".run"
    # A failed run may have left its PostgreSQL server: a fast shutdown, by the pid it wrote, before its files go.
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid = int((top / ".run/backoffice/pg/data/postmaster.pid").read_text().split("\n", 1)[0])
        server = psutil.Process(pid)
        if server.name() == "postgres":
            server.send_signal(signal.SIGINT)
            server.wait(30)
    shutil.rmtree(top, ignore_errors=True)


def test_run_backoffice_serves_live_kiosks_and_stops_everything(run_dir: Path) -> None:
    first = Run(run_dir)
    try:
        user, password = first.login
        office = run_dir / "backoffice"
        assert user == ADMIN and (office / "admin-password").read_text().strip() == password, first.output
        assert (office / "admin-password").stat().st_mode & 0o777 == 0o600
        assert "created now" in first.after("PostgreSQL:"), first.output
        web = login(first.url, user, password)
        wait_until(lambda: all(row.get("online") for row in _fleet(web).values()) and
                   set(_fleet(web)) == {spec.id for spec in KIOSKS}, WAIT, interval=0.5,
                   message="the three kiosks online in /api/fleet")
        assert {row["site"] for row in _fleet(web).values()} == {spec.site for spec in KIOSKS}

        door = shlex.split(first.after("open a door:"))
        kiosk = next(spec.id for spec in KIOSKS if f"/kiosks/{spec.id}/" in first.after("open a door:"))
        opened = subprocess.run(door, capture_output=True, text=True, timeout=60, check=False)
        assert opened.returncode == 0, opened.stdout + opened.stderr
        wait_until(lambda: (kiosk, "door_open") in _open_alarms(web), WAIT, interval=0.3,
                   message=f"door_open of {kiosk} in /api/alarms")
        assert _fleet(web)[kiosk]["alarms"]["critical"] >= 1
        # The printed kioskctl line, pasted as printed, reaches a kiosk that trusts the key it names.
        ping = subprocess.run(shlex.split(first.after("send a command:")), capture_output=True, text=True, timeout=60,
                              check=False)
        assert ping.returncode == 0 and '"pong": true' in ping.stdout, ping.stdout + ping.stderr

        started = first.processes(office / "pg")
        assert len(started) >= 2 + len(KIOSKS) + 2, started     # broker, ledger, dashboard, kiosks, postgres
    finally:
        code = first.stop()
    assert code == 0, first.output
    assert first.lines[-1] == "stopped", first.output
    assert _alive(started) == [], first.output

    # The second run keeps the cluster, what the ledger learnt, and the admin's password. Then it is killed
    # (kill -9): what it started stops with it, but for the two servers that run detached (PostgreSQL, the broker).
    second = Run(run_dir)
    try:
        assert second.login == (user, password), second.output
        assert "(kept)" in second.after("PostgreSQL:"), second.output
        assert f"({office / 'admin-password'}, kept)" in second.output, second.output
        web = login(second.url, user, password)
        alarms = web.get_json("/api/alarms?state=all")["alarms"]
        assert any(a["kiosk"] == kiosk and a["code"] == "door_open" for a in alarms), alarms
        again = second.processes(office / "pg")
        detached = [proc for proc in again if proc.name() in ("postgres", "mosquitto")]
    except BaseException:
        second.stop()
        raise
    second.proc.kill()
    second.proc.wait()
    wait_until(lambda: sorted(_alive(again)) == sorted(_alive(detached)), WAIT, interval=0.2,
               message="the killed run's children stopping")
    assert _alive(detached), "the test meant to see PostgreSQL and the broker outlive a kill -9"

    # The third run stops those two, keeps the ports, and SIGTERM leaves nothing again.
    third = Run(run_dir)
    try:
        assert "stopped the broker a killed run left" in third.output, third.output
        assert "stopped the PostgreSQL server a killed run left" in third.output, third.output
        assert "is in use" not in third.output and third.url == second.url, third.output
        assert _alive(detached) == [], third.output
        last = third.processes(office / "pg")
    finally:
        code = third.stop()
    assert code == 0, third.output
    assert _alive(last) == [], third.output
