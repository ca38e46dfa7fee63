# SPDX-License-Identifier: Apache-2.0
"""Commands end to end: kioskctl, set-mode and the light tower, replay after
kill -9, reboot deferred by a citizen session, restart-agent, cmd --all."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from cmdkit import (
    KIOSK,
    KIOSKCTL,
    Keys,
    Sender,
    audit_rows,
    by_corr,
    start_agent,
    wait_online,
)
from kiosktest import AgentProcess, Subscriber

from agent.sim.devbroker import DevBroker

GREEN = {"red": False, "amber": False, "green": True}
AMBER = {"red": False, "amber": True, "green": False}


def kioskctl(broker: DevBroker, key: Path, *words: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KIOSKCTL, "cmd", "--broker", broker.url, "--fleet", "dev", "--key", str(key),
                           "--timeout", "60", *words], capture_output=True, text=True, timeout=timeout)


def test_set_mode_through_kioskctl_drives_the_light_tower_and_persists(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, tmp_path: Path) -> None:
    keys = Keys()
    paths = keys.write(tmp_path / "keys")
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    assert agent.sim("light_tower", "status")["lit"] == GREEN

    done = kioskctl(broker, paths["operator"], KIOSK, "set-mode", "mode=maintenance")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"mode": "maintenance", "previous": "in_service"}
    assert "accepted" in done.stderr and "succeeded" in done.stderr
    assert agent.sim("light_tower", "status")["lit"] == AMBER
    subscriber.wait_for("/health", lambda d: d.get("mode") == "maintenance")
    subscriber.wait_for("/state", lambda d: d.get("online") and d.get("mode") == "maintenance")

    # The mode survives a restart (it is in the store, not only in memory).
    assert agent.terminate() == 0
    started = time.monotonic()
    agent.start()
    wait_online(subscriber, after=started)
    assert subscriber.matching("/state", lambda d: d.get("online"))[-1].data["mode"] == "maintenance"
    assert agent.sim("light_tower", "status")["lit"] == AMBER

    done = kioskctl(broker, paths["operator"], KIOSK, "set-mode", "mode=in_service", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert agent.sim("light_tower", "status")["lit"] == GREEN

    refused = kioskctl(broker, paths["operator"], KIOSK, "reboot")
    assert refused.returncode == 3 and "cmd.forbidden" in refused.stderr
    local = kioskctl(broker, paths["operator"], KIOSK, "set-mode", "mode=party")
    assert local.returncode == 2 and "invalid" in local.stderr          # caught before sending
    remote = kioskctl(broker, paths["operator"], KIOSK, "set-mode", "mode=party", "--no-check")
    assert remote.returncode == 3 and "cmd.bad_arguments" in remote.stderr
    subscriber.assert_valid()


def test_replay_after_kill_9_is_refused(agent_factory: type[AgentProcess], broker: DevBroker,
                                       subscriber: Subscriber) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    sender = Sender(broker.url)
    try:
        doc = keys.envelope("set-mode", {"mode": "out_of_service"})
        corr = sender.send("set-mode", doc)
        assert subscriber.wait_for("/result", by_corr(corr, terminal=True)).data["status"] == "succeeded"
        agent.kill()                      # SIGKILL: no clean shutdown, nothing flushed on the way out
        started = time.monotonic()
        agent.start()
        wait_online(subscriber, after=started)
        assert agent.sim("light_tower", "status")["mode"] == "out_of_service"

        # Put it back in service, then replay the old envelope: it must not bite again.
        back = sender.send("set-mode", keys.envelope("set-mode", {"mode": "in_service"}))
        assert subscriber.wait_for("/result", by_corr(back, terminal=True)).data["status"] == "succeeded"
        again = sender.send("set-mode", doc)
        result = subscriber.wait_for("/result", by_corr(again, terminal=True), timeout=30).data
        assert (result["status"], result["code"]) == ("refused", "cmd.replayed")
        assert agent.sim("light_tower", "status")["mode"] == "in_service"
        outcomes = [(r["nonce"], r["outcome"], r["code"]) for r in audit_rows(agent) if r["nonce"] == doc["nonce"]]
        assert outcomes == [(doc["nonce"], "accepted", None), (doc["nonce"], "succeeded", None),
                            (doc["nonce"], "refused", "cmd.replayed")]
    finally:
        sender.close()
    subscriber.assert_valid()


def test_reboot_waits_for_the_citizen_session(agent_factory: type[AgentProcess], broker: DevBroker,
                                              subscriber: Subscriber, tmp_path: Path) -> None:
    keys = Keys()
    marker = tmp_path / "rebooted"
    agent = start_agent(agent_factory, keys, env={"KIOSK_REBOOT_COMMAND": f"sh -c 'echo reboot >> {marker}'"})
    wait_online(subscriber)
    # No UI drives the session engine from outside yet: the sim backend's
    # session_hook stands in for "a citizen is being served".
    assert agent.sim("session_hook", "begin")["active"] is True
    sender = Sender(broker.url)
    try:
        corr = sender.send("reboot", keys.envelope("reboot"))
        deferred = subscriber.wait_for("/cmd/reboot/result", by_corr(corr, status="in_progress")).data
        assert "session" in deferred["message"]
        time.sleep(1.5)                   # it must stay deferred, however long the session takes
        assert not marker.exists()
        assert not subscriber.matching("/cmd/reboot/result", by_corr(corr, terminal=True))
        agent.sim("session_hook", "end")
        done = subscriber.wait_for("/cmd/reboot/result", by_corr(corr, terminal=True), timeout=30).data
        assert done["status"] == "succeeded", done
        assert marker.read_text() == "reboot\n"

        # force=true does not wait.
        agent.sim("session_hook", "begin")
        forced = sender.send("reboot", keys.envelope("reboot", {"force": True}))
        assert subscriber.wait_for("/cmd/reboot/result", by_corr(forced, terminal=True),
                                   timeout=30).data["status"] == "succeeded"
        assert marker.read_text() == "reboot\nreboot\n"
        agent.sim("session_hook", "end")

        # restart-agent: succeeded, then the process exits 75 for systemd to restart it.
        restart = sender.send("restart-agent", keys.envelope("restart-agent"))
        assert subscriber.wait_for("/cmd/restart-agent/result", by_corr(restart, terminal=True),
                                   timeout=30).data["status"] == "succeeded"
        assert agent.proc is not None
        assert agent.proc.wait(30) == 75
    finally:
        sender.close()
    subscriber.assert_valid()


def test_cmd_all_and_fleet_table(agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber,
                                 tmp_path: Path) -> None:
    keys = Keys()
    paths = keys.write(tmp_path / "keys")
    kiosks = [f"k-{i}" for i in range(3)]
    agents = [start_agent(agent_factory, keys, name=k, kiosk=k) for k in kiosks]
    for k in kiosks:
        wait_online(subscriber, kiosk=k)
    done = kioskctl(broker, paths["operator"], "--all", "selftest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("succeeded") == 3 and "3 succeeded" in done.stderr

    done = kioskctl(broker, paths["operator"], "--all", "set-mode", "mode=maintenance", "--json")
    results: dict[str, Any] = json.loads(done.stdout)
    assert sorted(results) == kiosks and all(r["status"] == "succeeded" for r in results.values())
    agents[1].sim("door", "open")
    subscriber.wait_for("/k-1/alarm/door_open", lambda d: d["active"])

    table = subprocess.run([KIOSKCTL, "fleet", "--broker", broker.url, "--fleet", "dev", "--json"],
                           capture_output=True, text=True, timeout=60)
    rows = {r["kiosk"]: r for r in json.loads(table.stdout)}
    assert sorted(rows) == kiosks
    assert all(r["online"] and r["mode"] == "maintenance" for r in rows.values())
    assert rows["k-1"]["alarms"] == ["door_open"] and rows["k-0"]["alarms"] == []
    text = subprocess.run([KIOSKCTL, "fleet", "--broker", broker.url, "--fleet", "dev"],
                          capture_output=True, text=True, timeout=60).stdout
    assert text.splitlines()[0].split()[:3] == ["KIOSK", "ONLINE", "MODE"] and "door_open" in text
    subscriber.assert_valid()
