# SPDX-License-Identifier: Apache-2.0
"""``kioskctl fleet``, ``cmd``, ``tx ack`` and ``verify`` against a real agent and broker.

GIVEN a real agent (sim backend) on a real Mosquitto, WHEN a fleet manager
mistypes a fleet or a kiosk, THEN kioskctl says so at once and exits
non-zero; WHEN it runs a self-test, THEN it sees the kiosk's own pass/fail
table; WHEN the back office acknowledges, THEN kioskctl says what the
kiosk confirmed or refused; WHEN it verifies a capture that starts
mid-stream, THEN it is told which options check it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cmdkit import KIOSK, KIOSKCTL, Keys, start_agent, wait_online
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber, wait_until

from agent.runtime.selftest import format_table
from agent.sim.devbroker import DevBroker
from agent.store.journal import canonical
from hal.device import SelftestResult


def kioskctl(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KIOSKCTL, *argv], capture_output=True, text=True, timeout=timeout)


def test_fleet_names_a_fleet_never_seen_and_counts_in_the_singular(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber) -> None:
    start_agent(agent_factory, Keys())
    wait_online(subscriber)
    nosuch = kioskctl("fleet", "--broker", broker.url, "--fleet", "nosuch")
    assert nosuch.returncode != 0 and "no kiosk seen" in nosuch.stderr, nosuch
    one = kioskctl("fleet", "--broker", broker.url, "--fleet", "dev")
    assert one.returncode == 0, one.stderr
    assert "1 kiosk, 1 online" in one.stderr and "kiosks" not in one.stderr, one.stderr


def test_cmd_to_a_kiosk_never_seen_says_so_at_once(broker: DevBroker, subscriber: Subscriber,
                                                   tmp_path: Path) -> None:
    key = Keys().write(tmp_path / "keys")["admin"]
    # A timeout far beyond the subprocess guard: waiting for it would fail the test.
    done = kioskctl("cmd", "--broker", broker.url, "--fleet", "dev", "--key", str(key), "--timeout", "600",
                    "k-typo", "ping", timeout=60)
    assert done.returncode == 2, done
    assert "never seen" in done.stderr and "k-typo" in done.stderr, done.stderr
    assert not subscriber.matching("/k-typo/cmd/ping"), "the command was sent anyway"


def test_cmd_selftest_prints_the_kiosk_selftest_table(agent_factory: type[AgentProcess], broker: DevBroker,
                                                      subscriber: Subscriber, tmp_path: Path) -> None:
    keys = Keys()
    key = keys.write(tmp_path / "keys")["admin"]
    agent = start_agent(agent_factory, keys)
    wait_online(subscriber)
    agent.sim("printer", "unplug")
    wait_until(lambda: subscriber.matching("/alarm/printer_offline", lambda d: d["active"]), 30,
               message="printer offline")
    argv = ["cmd", "--broker", broker.url, "--fleet", "dev", "--key", str(key), "--timeout", "90", KIOSK, "selftest"]
    done = kioskctl(*argv)
    assert done.returncode == 1, done        # the printer failed: the command failed
    result = subscriber.wait_for("/cmd/selftest/result", lambda d: d["status"] == "failed").data
    rows = result["result"]["devices"]
    expected = format_table([SelftestResult(r["device"], r["passed"], r["reason"]) for r in rows])
    assert expected in done.stdout, done.stdout
    assert "self-test FAILED: printer" in done.stdout, done.stdout

    as_json = kioskctl(*argv, "--json")
    assert as_json.returncode == 1, as_json
    listed = json.loads(as_json.stdout)
    assert [r["device"] for r in listed] == [r["device"] for r in rows]
    assert {r["device"]: r["passed"] for r in listed} == {r["device"]: r["passed"] for r in rows}


def _write_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def simulated_journal(agent_factory: type[AgentProcess], subscriber: Subscriber,
                      tmp_path: Path) -> tuple[AgentProcess, Path, list[dict[str, Any]]]:
    """An agent (not started) whose journal ``kiosk-agent simulate`` filled: published, unacknowledged.

    Keys in ``tmp_path/keys``: ``bo-ack`` (trusted for tx/ack) and ``stranger`` (not); the kiosk's
    signing key is ``tmp_path/device.key``.
    """
    keys_dir = tmp_path / "keys"
    for key_id in ("bo-ack", "stranger"):
        made = kioskctl("keys", "init", "--dir", str(keys_dir), "--id", key_id, "--role", "backoffice")
        assert made.returncode == 0, made.stderr
    device = _write_key(tmp_path / "device.key", Ed25519PrivateKey.generate())
    agent = agent_factory("agent", overrides={"interval_s": "5"})
    ack_pub = (keys_dir / "bo-ack.pub").read_text().strip()
    agent.config.write_text(agent.config.read_text() + f'\n[keys]\nsigning_key = "{device}"\n'
                            f'\n[evidence]\nack_public_keys = ["{ack_pub}"]\n'
                            "\n[devices.idcard]\npoll_interval_s = 0.2\n")
    sim = subprocess.run([sys.executable, "-m", "agent", "simulate", "--config", str(agent.config),
                          "--sessions", "3", "--service", "pension_record_print"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert sim.returncode == 0, sim.stdout + sim.stderr[-2000:]
    txs = sorted((m.data for m in subscriber.matching("/tx")), key=lambda d: d["seq"])
    assert [t["seq"] for t in txs] == list(range(1, len(txs) + 1)) and len(txs) >= 3
    return agent, device, txs


def test_verify_takes_the_private_key_and_points_a_tail_at_its_options(
        agent_factory: type[AgentProcess], subscriber: Subscriber, tmp_path: Path) -> None:
    _agent, device, txs = simulated_journal(agent_factory, subscriber, tmp_path)
    capture = tmp_path / "tx.jsonl"
    capture.write_text("".join(json.dumps({"topic": "kiosk/v1/dev/sim-0001/tx", "payload": t}) + "\n"
                               for t in txs))
    ok = kioskctl("verify", "--public-key", str(device), str(capture))
    assert ok.returncode == 0 and f"OK: {len(txs)} record(s)" in ok.stdout, ok
    tail = tmp_path / "tail.jsonl"
    tail.write_text("".join(capture.read_text().splitlines(keepends=True)[1:]))
    mid = kioskctl("verify", "--public-key", str(device), str(tail))
    assert mid.returncode == 1 and "mid-stream" in mid.stdout, mid
    assert "--first-seq 2" in mid.stdout and "--prev" in mid.stdout, mid.stdout
    prev = hashlib.sha256(canonical(txs[0])).hexdigest()
    resumed = kioskctl("verify", "--public-key", str(device), "--first-seq", "2", "--prev", prev, str(tail))
    assert resumed.returncode == 0 and f"OK: {len(txs) - 1} record(s)" in resumed.stdout, resumed


def test_tx_ack_says_what_the_kiosk_confirmed_or_refused(agent_factory: type[AgentProcess], broker: DevBroker,
                                                         subscriber: Subscriber, tmp_path: Path) -> None:
    agent, _device, txs = simulated_journal(agent_factory, subscriber, tmp_path)
    agent.start()
    wait_online(subscriber)
    settled = subscriber.wait_for("/health", lambda d: d["outbox"]["tx"]["unacked"] == len(txs), timeout=60)
    assert settled.data["outbox"]["tx"]["acks_refused"] == 0
    ack = ["tx", "ack", "--broker", broker.url, "--fleet", "dev", "--wait", "60", KIOSK]
    done = kioskctl(*ack, txs[0]["id"], "--key", str(tmp_path / "keys" / "bo-ack.key"))
    assert done.returncode == 0, done
    assert f"confirmed: {len(txs) - 1} transaction(s) still unacknowledged (was {len(txs)})" in done.stderr, done
    refused = kioskctl(*ack, txs[1]["id"], "--key", str(tmp_path / "keys" / "stranger.key"))
    assert refused.returncode == 3, refused
    assert "REFUSED" in refused.stderr and "stranger" in refused.stderr, refused.stderr
    subscriber.assert_valid()
