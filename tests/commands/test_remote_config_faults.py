# SPDX-License-Identifier: Apache-2.0
"""Remote configuration under faults: one pending apply at a time, rollback
always to the last confirmed file, a configuration that cannot start refused
(or rolled back by the next start), rejected versions never re-applied, a
lost store does not re-apply the file in force, and a simulated reboot
stays inside the simulation."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cmdkit import KIOSK, Keys, Sender, by_corr, start_agent, wait_online
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber, wait_until
from test_remote_config import DESIRED, ping_ok, reported

from agent.sim.devbroker import DevBroker

DEAD_URL = 'url = "mqtt://127.0.0.1:9"'


def unreachable(text: str) -> str:
    return re.sub(r'(?m)^url = "mqtt://[^"]*"', DEAD_URL, text)


def with_signing_key(text: str, key: Path) -> str:
    return text.replace("[hal]\n", f'[keys]\nsigning_key = "{key}"\n\n[hal]\n', 1)


def make_key(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


def settings(agent: AgentProcess) -> dict[str, str]:
    with sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=10) as db:
        return dict(db.execute("SELECT key, value FROM agent_settings"))


@pytest.fixture
def sender(broker: DevBroker, subscriber: Subscriber) -> Iterator[Sender]:
    """The fleet's publisher; after the test, every payload the kiosk sent met its schema."""
    publisher = Sender(broker.url)
    try:
        yield publisher
    finally:
        publisher.close()
    subscriber.assert_valid()



def test_two_unreachable_configs_back_to_back_end_on_the_confirmed_file(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, sender: Sender) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    original = agent.config.read_text()
    first = unreachable(original)
    second = first.replace("interval_s = 300", "interval_s = 240")
    started = time.monotonic()
    # Both in one burst: the second arrives while the first is pending.
    for text, version in ((first, 6), (second, 7)):
        sender.client.publish(DESIRED, json.dumps(keys.desired(text, version, confirm_within_s=3)).encode(),
                              qos=1, retain=True)
    assert reported(subscriber, 6, "rolled_back", timeout=60)["version"] == 0
    assert reported(subscriber, 7, "rolled_back", timeout=60)["version"] == 0
    wait_until(lambda: agent.config.read_text() == original, 30, message="the confirmed file back")
    wait_online(subscriber, after=started)
    assert ping_ok(sender, keys, subscriber)
    assert agent.config.read_text() == original
    assert agent.config.with_name("agent.toml.prev").read_text() == original


def test_desired_and_update_config_for_the_same_version_end_on_the_confirmed_file(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, sender: Sender) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    original = agent.config.read_text()
    dead = unreachable(original)
    started = time.monotonic()
    sender.client.publish(DESIRED, json.dumps(keys.desired(dead, 6, confirm_within_s=3)).encode(), qos=1,
                          retain=True)
    corr = sender.send("update-config", keys.envelope("update-config", {"config": dead, "version": 6,
                                                                       "confirm_within_s": 3}))
    assert reported(subscriber, 6, "rolled_back", timeout=60)["version"] == 0
    wait_online(subscriber, after=started)
    assert ping_ok(sender, keys, subscriber)
    assert agent.config.read_text() == original
    # The command was either the apply itself or told it had to wait its turn.
    result = subscriber.wait_for("/cmd/update-config/result", by_corr(corr, terminal=True), timeout=30).data
    assert result["status"] == "succeeded" or result["code"] in ("config.busy", "config.rejected"), result
    # Settled for good: nothing pending, and the kiosk stays on the confirmed file.
    wait_until(lambda: "config_pending" not in settings(agent), 30, message="no pending apply")
    assert agent.config.read_text() == original


def test_configuration_that_cannot_start_is_refused_and_the_kiosk_keeps_serving(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber,
        sender: Sender, tmp_path: Path) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    original = agent.config.read_text()
    missing_key = with_signing_key(original, tmp_path / "nowhere" / "device.pem")
    sender.publish(DESIRED, json.dumps(keys.desired(missing_key, 3)).encode(), retain=True)
    refused = reported(subscriber, 3, "refused")
    assert refused["code"] == "config.cannot_start" and "keys.signing_key" in refused["message"]

    # No RPi.GPIO here: the real backend cannot load on this board.
    real = original.replace('backend = "sim"', 'backend = "real"')
    assert real != original
    sender.publish(DESIRED, json.dumps(keys.desired(real, 4)).encode(), retain=True)
    refused = reported(subscriber, 4, "refused")
    assert refused["code"] == "config.cannot_start" and "hal.backend" in refused["message"]

    # A CA file that is not there: the uplink could never connect.
    tls = re.sub(r'(?m)^url = "mqtt://[^"]*"', 'url = "mqtts://127.0.0.1:8883"', original).replace(
        "[storage]\n", f'[mqtt.tls]\nca_file = "{tmp_path / "missing-ca.pem"}"\n\n[storage]\n', 1)
    sender.publish(DESIRED, json.dumps(keys.desired(tls, 5)).encode(), retain=True)
    refused = reported(subscriber, 5, "refused")
    assert refused["code"] == "config.cannot_start" and "mqtt.tls.ca_file" in refused["message"]

    assert agent.config.read_text() == original and refused["version"] == 0
    assert agent.proc is not None and agent.proc.poll() is None
    assert ping_ok(sender, keys, subscriber)


def test_configuration_failing_at_start_after_an_apply_is_rolled_back_by_the_next_start(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber,
        sender: Sender, tmp_path: Path) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    original = agent.config.read_text()
    key = make_key(tmp_path / "device.pem")
    # Passes the dry run (the key is there), then keeps the kiosk off the broker.
    new = unreachable(with_signing_key(original, key))
    sender.publish(DESIRED, json.dumps(keys.desired(new, 8, confirm_within_s=30)).encode(), retain=True)
    reported(subscriber, 8, "pending")
    assert agent.config.read_text() == new
    agent.kill()
    key.unlink()                          # e.g. on a medium that is gone after the power cut
    started = time.monotonic()
    agent.start()
    rolled = reported(subscriber, 8, "rolled_back", timeout=60)
    assert rolled["code"] == "config.start_failed" and "keys" in rolled["message"]
    assert rolled["version"] == 0 and agent.config.read_text() == original
    wait_online(subscriber, after=started)
    assert agent.proc is not None and agent.proc.poll() is None
    assert ping_ok(sender, keys, subscriber)


def test_a_rolled_back_version_is_never_applied_again(agent_factory: type[AgentProcess], broker: DevBroker,
                                                      subscriber: Subscriber, sender: Sender) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    original = agent.config.read_text()
    started = time.monotonic()
    sender.publish(DESIRED, json.dumps(keys.desired(unreachable(original), 6, confirm_within_s=3)).encode(),
                   retain=True)
    reported(subscriber, 6, "rolled_back", timeout=60)
    wait_online(subscriber, after=started)
    # A later version is refused: before, only that one was remembered.
    sender.publish(DESIRED, json.dumps(keys.desired(original + "\n[nonsense]\n", 7)).encode(), retain=True)
    reported(subscriber, 7, "refused")
    sender.publish(DESIRED, json.dumps(keys.desired(unreachable(original), 6, confirm_within_s=3)).encode(),
                   retain=True)
    # Handled in order: once 9 is applied, 6 has been looked at.
    good = original.replace("interval_s = 300", "interval_s = 200")
    sender.publish(DESIRED, json.dumps(keys.desired(good, 9)).encode(), retain=True)
    reported(subscriber, 9, "applied", timeout=60)
    assert len(subscriber.matching("/config/reported", lambda d: d.get("desired_version") == 6
                                   and d.get("status") == "pending")) == 1
    assert agent.config.read_text() == good


def test_after_the_store_is_lost_the_retained_version_in_force_is_adopted(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, sender: Sender) -> None:
    keys = Keys()
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    good = agent.config.read_text().replace("interval_s = 300", "interval_s = 200")
    sender.publish(DESIRED, json.dumps(keys.desired(good, 5)).encode(), retain=True)
    reported(subscriber, 5, "applied")
    assert agent.terminate() == 0
    for db in agent.state_dir.glob("agent.db*"):
        db.unlink()                      # the store is lost; the retained desired 5 is not
    agent.start()
    adopted = subscriber.wait_for("/config/reported", lambda d: d.get("version") == 5
                                  and d.get("status") == "applied" and "already in force" in d.get("message", ""),
                                  timeout=30).data
    assert adopted["desired_version"] == 5 and agent.config.read_text() == good
    assert settings(agent).get("config_version") == "5" and "config_pending" not in settings(agent)


def test_reboot_on_a_simulated_kiosk_stays_inside_the_simulation(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber,
        sender: Sender, tmp_path: Path) -> None:
    keys = Keys()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "host-rebooted"
    # What a laptop's polkit would let through: a systemctl on the PATH.
    systemctl = bindir / "systemctl"
    systemctl.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\n")
    systemctl.chmod(0o755)
    agent = start_agent(agent_factory, keys, env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    first = subscriber.wait_for(f"/{KIOSK}/state", lambda d: d.get("online"), timeout=30).data
    corr = sender.send("reboot", keys.envelope("reboot"))
    done = subscriber.wait_for("/cmd/reboot/result", by_corr(corr, terminal=True), timeout=30).data
    assert done["status"] == "succeeded" and done["result"] == {"rebooting": True, "simulated": True}
    # Back with a new boot id, in the same process; the host untouched.
    subscriber.wait_for(f"/{KIOSK}/state", lambda d: d.get("online") and d["boot_id"] != first["boot_id"],
                        timeout=30)
    assert agent.proc is not None and agent.proc.poll() is None
    assert not marker.exists()
    assert ping_ok(sender, keys, subscriber)
