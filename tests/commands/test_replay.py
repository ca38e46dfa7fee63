# SPDX-License-Identifier: Apache-2.0
"""Replay protection that outlives the store and a jumping clock; alarms a lost store left retained.

Each test runs the real agent against a real broker, loses its store the
way a kiosk does (truncated file, destroyed header, ``kill -9``), and
replays a captured command envelope byte for byte.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from cmdkit import RESULTS, Keys, Sender, by_corr, start_agent, wait_online
from kiosktest import AgentProcess, Subscriber

from agent.sim.devbroker import DevBroker
from agent.store.database import DB_NAME

# The agent's wall clock, shifted in its own interpreter only: the machine's
# clock is shared, and a jump is what the kiosk sees, not what it does.
CLOCK_SHIFT = """
import os, time
_shift = float(os.environ.get("KIOSK_TEST_CLOCK_SHIFT_S", "0"))
if _shift:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _shift
    time.time_ns = lambda: _time_ns() + int(_shift * 1e9)
"""
TWO_DAYS_S = 2 * 86_400


@pytest.fixture
def results(broker: DevBroker) -> Any:
    sub = Subscriber(broker.url, RESULTS, "kiosk/v1/+/+/state", "kiosk/v1/+/+/alarm/+")
    sender = Sender(broker.url)
    yield sub, sender
    sender.close()
    sub.close()


def _terminal(sub: Subscriber, corr: bytes) -> dict[str, Any]:
    data: dict[str, Any] = sub.wait_for("/cmd/ping/result", by_corr(corr, terminal=True), timeout=30).data
    return data


def _restart(agent: AgentProcess, sub: Subscriber, env: dict[str, str] | None = None) -> None:
    agent.env = env or {}
    after = time.monotonic()
    agent.start()
    wait_online(sub, after=after)


@pytest.mark.parametrize("how", ["truncated", "header"])
def test_a_command_does_not_run_again_after_the_store_is_lost(agent_factory: type[AgentProcess], results: Any,
                                                              how: str) -> None:
    sub, sender = results
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(sub)
    captured = keys.envelope("ping")
    assert _terminal(sub, sender.send("ping", captured))["status"] == "succeeded"
    # Stopped cleanly, so every page is in the file (not only in a WAL that would mask the damage).
    assert agent.terminate() == 0
    db = agent.state_dir / DB_NAME
    if how == "truncated":
        db.write_bytes(b"")
    else:
        with open(db, "r+b") as f:        # the 16-byte "SQLite format 3" header destroyed
            f.write(b"\0" * 16)
    _restart(agent, sub)

    replayed = _terminal(sub, sender.send("ping", captured))
    assert (replayed["status"], replayed["code"]) == ("refused", "cmd.before_store"), replayed
    fresh = _terminal(sub, sender.send("ping", keys.envelope("ping")))
    assert fresh["status"] == "succeeded"        # a command issued now still runs


def test_a_clock_jump_does_not_let_a_command_run_again(agent_factory: type[AgentProcess], results: Any,
                                                       tmp_path: Path) -> None:
    sub, sender = results
    shim = tmp_path / "clock-shift"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(CLOCK_SHIFT)
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(sub)
    captured = keys.envelope("ping")
    assert _terminal(sub, sender.send("ping", captured))["status"] == "succeeded"
    assert agent.terminate() == 0

    pythonpath = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
    _restart(agent, sub, {"PYTHONPATH": pythonpath, "KIOSK_TEST_CLOCK_SHIFT_S": str(TWO_DAYS_S)})
    # Two days ahead, every command it holds looks expired (and so did its nonces, once).
    probe = _terminal(sub, sender.send("ping", keys.envelope("ping")))
    assert (probe["status"], probe["code"]) == ("refused", "cmd.expired"), probe
    assert agent.terminate() == 0

    _restart(agent, sub)                   # the clock is right again
    replayed = _terminal(sub, sender.send("ping", captured))
    assert (replayed["status"], replayed["code"]) == ("refused", "cmd.replayed"), replayed


def test_an_alarm_left_retained_by_a_lost_store_is_cleared(agent_factory: type[AgentProcess], broker: DevBroker,
                                                           results: Any) -> None:
    sub, _sender = results
    agent = agent_factory().start()
    wait_online(sub)
    assert agent.sim("door", "open")["ok"]
    sub.wait_for("/alarm/door_open", lambda d: d["active"], timeout=15)
    agent.kill()
    # The store goes with the power cut; the door is shut meanwhile (the simulated pin starts low).
    for suffix in ("-wal", "-shm"):
        Path(f"{agent.state_dir / DB_NAME}{suffix}").unlink(missing_ok=True)
    (agent.state_dir / DB_NAME).write_bytes(b"")
    _restart(agent, sub)
    cleared = sub.wait_for("/alarm/door_open", lambda d: not d["active"], timeout=30)
    assert cleared.data["kiosk"] and "Traceback" not in agent.log
    # What a dashboard connecting now gets: the retained state says closed.
    late = Subscriber(broker.url, "kiosk/v1/+/+/alarm/door_open")
    try:
        assert late.wait_for("/alarm/door_open", timeout=10).data["active"] is False
    finally:
        late.close()


def test_a_store_created_while_the_clock_ran_ahead_does_not_lock_commands_out(
        agent_factory: type[AgentProcess], results: Any, tmp_path: Path) -> None:
    sub, sender = results
    shim = tmp_path / "clock-shift"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(CLOCK_SHIFT)
    keys = Keys()
    pythonpath = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
    agent = start_agent(agent_factory, keys, env={"PYTHONPATH": pythonpath,
                                                  "KIOSK_TEST_CLOCK_SHIFT_S": str(TWO_DAYS_S)})
    wait_online(sub)                       # its store is stamped two days ahead
    assert agent.terminate() == 0
    _restart(agent, sub)                   # NTP has put the clock right
    now = _terminal(sub, sender.send("ping", keys.envelope("ping")))
    assert now["status"] == "succeeded", now
    assert "lowered to now" in agent.log
