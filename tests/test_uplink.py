# SPDX-License-Identifier: Apache-2.0
"""Uplink policies that are not visible end to end in a second."""

from __future__ import annotations

import asyncio
import random
import statistics
import socket
import time

from agent.sdnotify import notify
from agent.uplink import backoff_delay


def test_full_jitter_spreads_a_fleet_across_the_window() -> None:
    rng = random.Random(7)
    # 1,000 kiosks after a broker restart: first attempts spread over [0, 1 s).
    first = [backoff_delay(0, 1.0, 120.0, rng) for _ in range(1000)]
    assert 0 <= min(first) < 0.05 and 0.95 < max(first) <= 1.0
    assert 0.4 < statistics.mean(first) < 0.6
    # Later attempts widen, and never exceed the cap.
    tenth = [backoff_delay(10, 1.0, 120.0, rng) for _ in range(1000)]
    assert max(tenth) <= 120.0 and statistics.mean(tenth) > 40


def test_watchdog_pings_come_from_the_loop(tmp_path, monkeypatch) -> None:
    """A blocked event loop stops the WATCHDOG=1 pings (a side thread would not)."""
    from agent.daemon import Agent
    from agent.config import load_config, DEFAULT_SIM_CONFIG

    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    agent = Agent(load_config(DEFAULT_SIM_CONFIG))

    def pings() -> list[float]:
        out = []
        try:
            while True:
                if sock.recv(100) == b"WATCHDOG=1":
                    out.append(time.monotonic())
        except BlockingIOError:
            return out

    async def scenario() -> tuple[int, int]:
        agent._start_watchdog()
        await asyncio.sleep(0.5)
        before = len(pings())
        time.sleep(0.6)            # the loop hangs
        during = len(pings())      # at most the one ping queued before the hang
        await asyncio.sleep(0.3)
        agent._watchdog.cancel()   # type: ignore[union-attr]
        return before, during

    before, during = asyncio.run(scenario())
    assert before >= 5 and during <= 1
    assert pings()  # it resumed after the hang
    sock.close()


def test_notify_is_a_no_op_outside_systemd(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
