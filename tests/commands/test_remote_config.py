# SPDX-License-Identifier: Apache-2.0
"""Desired configuration: refused when invalid (the kiosk keeps serving),
applied and reported with its version, rolled back when it cuts the broker
off, never rolled back to an older version; and through kioskctl."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from cmdkit import (
    FLEET,
    KIOSK,
    KIOSKCTL,
    Keys,
    Sender,
    by_corr,
    start_agent,
    wait_online,
)
from kiosktest import AgentProcess, Subscriber

from agent.sim.devbroker import DevBroker
from agent.wire.contract import Topics

DESIRED = Topics(FLEET, KIOSK).config_desired


def reported(sub: Subscriber, version: int, status: str, timeout: float = 30) -> dict:
    return sub.wait_for("/config/reported", lambda d: d.get("desired_version") == version
                        and d.get("status") == status, timeout=timeout).data  # type: ignore[no-any-return]


def ping_ok(sender: Sender, keys: Keys, sub: Subscriber) -> bool:
    corr = sender.send("ping", keys.envelope("ping", key="operator"))
    return sub.wait_for("/cmd/ping/result", by_corr(corr, terminal=True), timeout=30).data["status"] == "succeeded"


def test_desired_configuration_refused_applied_rolled_back(agent_factory: type[AgentProcess], broker: DevBroker,
                                                           subscriber: Subscriber) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    first = subscriber.wait_for("/config/reported").data
    assert (first["version"], first["status"]) == (0, "in_force")
    original = agent.config.read_text()
    sender = Sender(broker.url)
    try:
        # An error (unknown key) is refused, reported, and the kiosk keeps serving.
        bad = original.replace("[health]\n", "[health]\nintervall_s = 5\n")
        sender.publish(DESIRED, json.dumps(keys.desired(bad, 3)).encode(), retain=True)
        refused = reported(subscriber, 3, "refused")
        assert refused["code"] == "config.invalid" and "health.intervall_s" in refused["message"]
        assert refused["version"] == 0 and agent.config.read_text() == original
        assert ping_ok(sender, keys, subscriber)

        # Signed by an operator key (not admin): refused, nothing applied.
        sender.publish(DESIRED, json.dumps(keys.desired(original, 4, key="operator")).encode(), retain=True)
        assert subscriber.wait_for("/config/reported", lambda d: d.get("code") == "cmd.forbidden")
        assert agent.config.read_text() == original

        # A valid one (hot-reloadable change) is applied and reported with its version.
        good = re.sub(r"(?m)^interval_s = .*$", "interval_s = 120", original)
        sender.publish(DESIRED, json.dumps(keys.desired(good, 5)).encode(), retain=True)
        applied = reported(subscriber, 5, "applied")
        assert applied["version"] == 5 and agent.config.read_text() == good
        assert ping_ok(sender, keys, subscriber)

        # One that cuts the kiosk off the broker is rolled back on its own.
        dead = re.sub(r'(?m)^url = "mqtt://[^"]*"', 'url = "mqtt://127.0.0.1:9"', good)
        started = time.monotonic()
        sender.publish(DESIRED, json.dumps(keys.desired(dead, 6, confirm_within_s=3)).encode(), retain=True)
        rolled = reported(subscriber, 6, "rolled_back", timeout=60)
        assert rolled["version"] == 5 and rolled["code"] == "config.rolled_back"
        assert agent.config.read_text() == good
        wait_online(subscriber, after=started)
        assert ping_ok(sender, keys, subscriber)

        # Anti-rollback: an older version is refused.
        sender.publish(DESIRED, json.dumps(keys.desired(original, 2)).encode(), retain=True)
        stale = reported(subscriber, 2, "refused")
        assert stale["code"] == "config.stale" and agent.config.read_text() == good
        assert "Traceback" not in agent.log
    finally:
        sender.close()
    subscriber.assert_valid()


def test_kioskctl_config_push_and_update_config_command(agent_factory: type[AgentProcess], broker: DevBroker,
                                                        subscriber: Subscriber, tmp_path: Path) -> None:
    keys = Keys()
    paths = keys.write(tmp_path / "keys")
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    new = tmp_path / "new.toml"
    new.write_text(re.sub(r"(?m)^interval_s = .*$", "interval_s = 90", agent.config.read_text()))
    base = ["--broker", broker.url, "--fleet", FLEET, "--key", str(paths["admin"]), "--timeout", "60"]
    done = subprocess.run([KIOSKCTL, "config", "push", *base, KIOSK, str(new), "--version", "11", "--json"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "applied"
    assert agent.config.read_text() == new.read_text()

    broken = tmp_path / "broken.toml"
    broken.write_text(new.read_text() + "\n[nonsense]\n")
    local = subprocess.run([KIOSKCTL, "config", "push", *base, KIOSK, str(broken), "--version", "12"],
                           capture_output=True, text=True, timeout=90)
    assert local.returncode == 2 and "nonsense" in local.stderr      # caught before sending
    remote = subprocess.run([KIOSKCTL, "config", "push", *base, KIOSK, str(broken), "--version", "12",
                             "--no-check"], capture_output=True, text=True, timeout=90)
    assert remote.returncode == 3 and "config.invalid" in remote.stderr

    # The same through the update-config command (admin only); a keepalive
    # change restarts the components, and the new ones confirm the connection.
    newer = re.sub(r"(?m)^keepalive = .*$", "keepalive = 30", agent.config.read_text())
    assert newer != agent.config.read_text()
    cmd = subprocess.run([KIOSKCTL, "cmd", *base, KIOSK, "update-config", f"config={newer}", "version=13"],
                         capture_output=True, text=True, timeout=90)
    assert cmd.returncode == 0, cmd.stderr
    assert reported(subscriber, 13, "applied")["version"] == 13
    assert agent.config.read_text() == newer
    subscriber.assert_valid()


def test_rollback_survives_kill_9(agent_factory: type[AgentProcess], broker: DevBroker,
                                  subscriber: Subscriber) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    original = agent.config.read_text()
    dead = re.sub(r'(?m)^url = "mqtt://[^"]*"', 'url = "mqtt://127.0.0.1:9"', original)
    sender = Sender(broker.url)
    try:
        sender.publish(DESIRED, json.dumps(keys.desired(dead, 8, confirm_within_s=4)).encode(), retain=True)
        reported(subscriber, 8, "pending")
        agent.kill()                                 # mid-confirmation: the new file is in place
        assert agent.config.read_text() == dead
        started = time.monotonic()
        agent.start()                                # comes up on the dead URL, then rolls back
        rolled = reported(subscriber, 8, "rolled_back", timeout=60)
        assert rolled["version"] == 0 and agent.config.read_text() == original
        wait_online(subscriber, after=started)
        assert ping_ok(sender, keys, subscriber)
    finally:
        sender.close()
    subscriber.assert_valid()
