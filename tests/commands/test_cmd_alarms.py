# SPDX-License-Identifier: Apache-2.0
"""Alarm names and latching alarms, as the fleet sees them.

GIVEN a kiosk whose tamper loop is opened (a forced door), WHEN the cover is
closed again and even when the agent is killed and restarted, THEN
``alarm/tamper`` stays raised until an operator's signed ``ack-alarm``
clears it; the command fails with a stable code when nothing is latched or
the loop is still open, and changes nothing then.
"""

from __future__ import annotations

import time
from typing import Any

from cmdkit import Keys, Sender, by_corr, start_agent, wait_online
from kiosktest import AgentProcess, Subscriber, wait_until

from agent.runtime.alarms import ALIASES, LATCHING
from agent.sim.devbroker import DevBroker
from agent.wire.signing import ROLE_COMMANDS, SPECS


def ack(sender: Sender, keys: Keys, results: Subscriber, code: str = "tamper") -> dict[str, Any]:
    """Send ``ack-alarm`` with the operator's key; the terminal result."""
    corr = sender.send("ack-alarm", keys.envelope("ack-alarm", {"code": code}, key="operator"))
    return results.wait_for("/cmd/ack-alarm/result", by_corr(corr, terminal=True), timeout=15).data  # type: ignore[no-any-return]


def tamper_states(sub: Subscriber, after: float = 0.0) -> list[dict[str, Any]]:
    return [m.data for m in sub.matching("/alarm/tamper") if m.at >= after]


def test_tamper_stays_raised_after_the_cover_closes_until_an_operator_acknowledges(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    sender = Sender(broker.url)
    try:
        wait_online(subscriber)
        # Nothing latched: a clear refusal, nothing published on alarm/tamper.
        result = ack(sender, keys, subscriber)
        assert (result["status"], result["code"]) == ("failed", "alarm.not_latched")
        assert not tamper_states(subscriber)

        assert agent.sim("tamper", "open")["ok"]
        subscriber.wait_for("/alarm/tamper", lambda d: d["active"], timeout=10)
        result = ack(sender, keys, subscriber)          # the loop is still open
        assert (result["status"], result["code"]) == ("failed", "alarm.cause_present")

        assert agent.sim("tamper", "close")["ok"]
        latched = subscriber.wait_for("/alarm/tamper", lambda d: d.get("latched") is True, timeout=10)
        assert latched.data["active"] is True and "ack-alarm" in latched.data["detail"]
        subscriber.wait_for("/health", lambda d: "tamper" in d["alarms"] and d["peripherals"]["tamper"]["state"]
                            == "ok", timeout=10)
        assert all(d["active"] for d in tamper_states(subscriber))

        # A restart (kill -9: nothing flushed on the way out) keeps the latch.
        agent.kill()
        restarted = time.monotonic()
        agent.start()
        wait_online(subscriber, after=restarted)
        # The restarted agent finds the loop closed and still reports the alarm, latched.
        wait_until(lambda: [d for d in tamper_states(subscriber, after=restarted) if d.get("latched")], 15,
                   message="alarm/tamper latched after the restart")
        wait_until(lambda: [m for m in subscriber.matching("/health", lambda d: "tamper" in d["alarms"])
                            if m.at >= restarted], 15, message="health after the restart naming tamper")
        assert all(d["active"] for d in tamper_states(subscriber))
        late = Subscriber(broker.url, "kiosk/v1/+/+/alarm/tamper")
        try:
            assert late.wait_for("/alarm/tamper", timeout=10).data["active"] is True
        finally:
            late.close()

        acknowledged = time.monotonic()
        result = ack(sender, keys, subscriber)
        assert result["status"] == "succeeded" and result["result"]["cleared"] is True
        cleared = subscriber.wait_for("/alarm/tamper", lambda d: not d["active"], timeout=10)
        assert cleared.data["detail"] == "acknowledged by op-1" and cleared.at >= acknowledged
        subscriber.wait_for("/health", lambda d: "tamper" not in d["alarms"], timeout=10)

        result = ack(sender, keys, subscriber)          # nothing left to acknowledge
        assert (result["status"], result["code"]) == ("failed", "alarm.not_latched")
    finally:
        sender.close()


def test_renamed_alarm_is_also_published_under_its_old_name_for_one_release(
        agent_factory: type[AgentProcess], subscriber: Subscriber) -> None:
    agent = agent_factory().start()
    wait_online(subscriber)
    assert agent.sim("idcard", "unplug")["ok"]
    new = subscriber.wait_for("/alarm/idcard_offline", lambda d: d["active"], timeout=15)
    old = subscriber.wait_for("/alarm/idreader_fault", lambda d: d["active"], timeout=5)
    assert old.data["alias_of"] == "idcard_offline" and "alias_of" not in new.data
    assert (old.data["since"], old.data["device"]) == (new.data["since"], "idcard")
    health = subscriber.wait_for("/health", lambda d: "idcard_offline" in d["alarms"], timeout=10)
    assert "idreader_fault" not in health.data["alarms"]       # health names current codes only
    assert agent.sim("idcard", "replug")["ok"]
    subscriber.wait_for("/alarm/idcard_offline", lambda d: not d["active"], timeout=15)
    cleared = subscriber.wait_for("/alarm/idreader_fault", lambda d: not d["active"], timeout=5)
    assert cleared.data["alias_of"] == "idcard_offline"


def test_ack_alarm_command_names_exactly_the_latching_alarms() -> None:
    # kioskctl checks arguments against SPECS before signing: it must know every latching code.
    check, required = SPECS["ack-alarm"].args["code"]
    assert required and all(check(code) for code in LATCHING)
    assert not check("door_open") and not check("idcard_offline")
    assert "ack-alarm" in ROLE_COMMANDS["operator"]
    # Aliases point from the <device>_offline / <device>_fault names to the old ones.
    assert all(new.split("_")[-1] in ("offline", "fault") for new in ALIASES)
