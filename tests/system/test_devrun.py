# SPDX-License-Identifier: Apache-2.0
"""``make run`` (``python -m agent.sim.devrun``) as a developer meets it, twice in a row.

    .venv/bin/python -m pytest tests/system/test_devrun.py

It runs in a scratch working directory as ``make run`` runs in a clone: the
printed ``kioskctl cmd`` line is pasted as printed and must get an answer
from the running agent; a second run keeps the port, the development keys
and the developer's edits to ``.run/agent.toml``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from kiosktest import Subscriber, wait_until

WAIT = 60.0
KEY_FILES = {"dev-admin.key", "dev-admin.pub", "dev-backoffice.key", "dev-backoffice.pub", "dev-evidence.pem"}


class DevRun:
    """``python -m agent.sim.devrun`` in ``workdir``; its output collected line by line."""

    def __init__(self, workdir: Path) -> None:
        self.lines: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.sim.devrun"], cwd=workdir, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: any("Ctrl-C stops" in line for line in self.lines) or self.proc.poll() is not None,
                   WAIT, message="make run's banner")
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
        line = next((x for x in self.lines if label in x), None)
        assert line is not None, f"no {label!r} line in:\n{self.output}"
        return line.split(label, 1)[1].strip()

    @property
    def port(self) -> int:
        match = re.search(r"broker mqtt://127\.0\.0\.1:(\d+)", self.output)
        assert match, self.output
        return int(match.group(1))

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Signal devrun alone (it stops the agent and the broker itself); its exit status."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self._reader.join(timeout=WAIT)
        return code


def _agent_online(port: int) -> None:
    sub = Subscriber(f"mqtt://127.0.0.1:{port}", "kiosk/v1/dev/+/state")
    try:
        sub.wait_for("/state", lambda data: bool(data and data.get("online")), timeout=WAIT)
    finally:
        sub.close()


def _paste(line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=180, check=False)


def _broker_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_make_run_trusts_its_own_keys_and_keeps_them_and_the_port(tmp_path: Path) -> None:
    first = DevRun(tmp_path)
    try:
        keys_dir = tmp_path / ".run" / "keys"
        keys = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
        assert set(keys) == KEY_FILES, sorted(keys)
        assert (keys_dir / "dev-admin.key").stat().st_mode & 0o777 == 0o600
        port = first.port
        command = first.after("send a command:")
        assert command.endswith("sim-0001 ping") and "dev-admin.key" in command, first.output
        assert "dev-backoffice.key" in first.after("acknowledge tx:"), first.output
        assert "dev-evidence.pem" in first.after("open evidence:"), first.output
        _agent_online(port)
        ping = _paste(command)
        assert ping.returncode == 0 and '"pong": true' in ping.stdout, ping.stdout + ping.stderr
    finally:
        assert first.stop(signal.SIGINT) == 0, first.output
    assert "stopped (agent exit" in first.output
    # The developer tries a setting in the running copy; the next run must not undo it.
    config = tmp_path / ".run" / "agent.toml"
    config.write_text(config.read_text().replace("Simulated outlet, bench 1", "My bench"))

    second = DevRun(tmp_path)
    try:
        assert second.port == port, second.output
        assert {p.name: p.read_bytes() for p in keys_dir.iterdir()} == keys
        assert 'site = "My bench"' in config.read_text()
        assert second.after("send a command:") == command
        _agent_online(port)
        again = _paste(command)
        assert again.returncode == 0 and '"pong": true' in again.stdout, again.stdout + again.stderr
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.output
    assert not _broker_listening(port), "SIGTERM to make run left its broker running"


def test_make_run_says_so_when_its_port_is_taken(tmp_path: Path) -> None:
    first = DevRun(tmp_path)
    port = first.port
    assert first.stop() == 0, first.output
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        second = DevRun(tmp_path)
        try:
            assert second.port != port
            assert f"port {port} is in use" in second.output, second.output
            _agent_online(second.port)
        finally:
            assert second.stop() == 0, second.output
    third = DevRun(tmp_path)          # the new port is the one kept from now on
    try:
        assert third.port == second.port, third.output
    finally:
        assert third.stop() == 0, third.output
