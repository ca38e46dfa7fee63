# SPDX-License-Identifier: Apache-2.0
"""``kioskctl watch`` and ``tx tail`` as a fleet manager reads them.

GIVEN a real agent on simulated hardware serving simulated citizens, WHEN
``kioskctl watch`` follows its fleet, THEN every kind of message the agent
publishes (state, health, alarm, tx, evidence, command result,
config/reported) shows as a line with what a fleet manager needs and
nothing unmasked; and WHEN the broker stops, watch says so and, once the
broker is back, shows messages again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from cmdkit import KIOSK, KIOSKCTL, Keys, Sender, start_agent, wait_online
from conftest import Follower, FollowerFactory
from kiosktest import AgentProcess, Subscriber, wait_until
from sessions.sesskit import find_pii

from agent.sim.devbroker import DevBroker
from hal.sim.idcard import SAMPLE_KINDS, sample_card

FAST_READER = "\n[devices.idcard]\npoll_interval_s = 0.2\n"
CONTENTS = {"card": "card", "photo_wlt": "ID photo", "face_jpeg": "face photo", "mailing": "address"}


def lines_with(follower: Follower, *words: str) -> list[str]:
    return [line for line in follower.lines() if all(w in line for w in words)]


def test_watch_renders_every_message_kind(agent_factory: type[AgentProcess], broker: DevBroker,
                                          subscriber: Subscriber, follower: FollowerFactory, tmp_path: Path) -> None:
    keys = Keys()
    key_files = keys.write(tmp_path / "keys")
    watch = follower("watch", "--broker", broker.url, "--fleet", "dev")
    tail = follower("tx", "tail", "--broker", broker.url, "--fleet", "dev")
    wait_until(lambda: watch.err and tail.err, 30, message="kioskctl following")
    agent = start_agent(agent_factory, keys, extra=FAST_READER,
                        overrides={"interval_s": "5", "sessions_per_minute": "60"})
    wait_online(subscriber)

    # Citizens until a session with a card and payment, and its evidence, went out.
    def session_txs() -> list[dict[str, Any]]:
        return [m.data for m in subscriber.matching("/tx") if m.data["data"].get("type") == "session"]

    wait_until(lambda: any(t["data"]["evidence"] for t in session_txs())
               and any(t["data"]["payment"] for t in session_txs()), 120, message="sessions with evidence and payment")
    agent.sim("door", "open")
    subscriber.wait_for("/alarm/door_open", lambda d: d["active"])
    ping = subprocess.run(
        [KIOSKCTL, "cmd", "--broker", broker.url, "--fleet", "dev", "--key", str(key_files["operator"]),
         "--timeout", "60", KIOSK, "ping"], capture_output=True, text=True, timeout=90)
    assert ping.returncode == 0, ping.stderr
    subscriber.wait_for("/cmd/ping/result", lambda d: d["status"] == "succeeded")
    txs = session_txs()
    evidence = [m.data for m in subscriber.matching("/evidence")]
    wait_until(lambda: all(lines_with(watch, f"seq={t['seq']} ") for t in txs)
               and all(lines_with(watch, f"tx={e['tx']}") for e in evidence)
               and lines_with(watch, "result  ping succeeded") and lines_with(watch, "RAISED", "door_open"),
               30, message=f"watch lines for every message; got:\n{watch.out}")

    who = f"dev/{KIOSK}"
    assert lines_with(watch, who, "ONLINE", "mode=in_service", "agent=")
    assert lines_with(watch, who, "health", "mode=in_service", "idcard=ok")
    assert lines_with(watch, who, "alarm", "RAISED", "door_open [")
    config = subscriber.wait_for("/config/reported").data
    assert lines_with(watch, who, "config", f"v{config['version']} {config['status']}")
    assert lines_with(watch, who, "command ping signed by op-1")
    for tx in txs:
        record = tx["data"]
        for follower_ in (watch, tail):
            found = lines_with(follower_, f"seq={tx['seq']} ", f"id={tx['id']}")
            assert found, f"no line for seq {tx['seq']}:\n{follower_.out}"
            line = found[0]
            assert f"service={record['service']}" in line and f"outcome={record['outcome']}" in line, line
            assert f"card={record['id_masked'] or '-'}" in line, line
            if record["payment"]:
                assert f"paid={record['payment']['method']}:{record['payment']['ref_masked']}" in line, line
            if record["receipt"]:
                assert re.search(rf"receipt={re.escape(record['receipt'])}\((printing|printed|not printed)\)",
                                 line), line
            assert ("evidence=sealed" in line) == record["evidence"], line
            assert "None" not in line, line
    for bundle in evidence:
        line = lines_with(watch, "evidence", f"tx={bundle['tx']}")[0]
        assert f"service={bundle['service']}" in line and re.search(r"sealed \d+(\.\d)? (B|KB):", line), line
        assert all(CONTENTS[c] in line for c in bundle["contents"]), line
    for m in subscriber.matching("/tx"):
        # Whatever else the kiosk journals (receipt outcomes, ...) shows with its seq and id.
        assert lines_with(watch, f"seq={m.data['seq']} ", f"id={m.data['id']}"), m.data
        record = m.data["data"]
        if record["type"] == "receipt":
            status = record["status"] if record["status"] == "printed" else record["status"].upper()
            assert lines_with(watch, f"id={m.data['id']}", f"receipt={record['receipt'] or '-'}({status}",
                              f"for tx={record['tx']}"), (m.data, watch.out)
    # No card holder's number, name or address reaches a fleet manager's screen.
    secrets = [field for kind in SAMPLE_KINDS for field in
               (sample_card(kind).id_number, sample_card(kind).name, sample_card(kind).address)]
    assert not find_pii((watch.out + tail.out).encode("utf-8"), secrets)
    # The tail follows transaction records only.
    assert not [line for line in tail.lines() if " tx " not in line], tail.out
    subscriber.assert_valid()


def test_watch_says_when_the_broker_goes_and_comes_back(agent_factory: type[AgentProcess], broker: DevBroker,
                                                        subscriber: Subscriber, follower: FollowerFactory) -> None:
    agent = start_agent(agent_factory, Keys())
    wait_online(subscriber)
    watch = follower("watch", "--broker", broker.url, "--fleet", "dev")
    wait_until(lambda: lines_with(watch, "ONLINE"), 30, message="the retained birth")
    shown = len(watch.lines())

    broker.stop()
    wait_until(lambda: "broker lost" in watch.err and "reconnecting" in watch.err, 30,
               message=f"watch noticing the broker is gone; stderr:\n{watch.err}")
    assert watch.proc.poll() is None, "watch gave up instead of reconnecting"
    broker.start()
    wait_until(lambda: "broker back" in watch.err, 60, message=f"watch reconnecting; stderr:\n{watch.err}")
    # Messages flow again: the retained birth on the new subscription, the agent's own new birth.
    wait_until(lambda: [line for line in watch.lines()[shown:] if "ONLINE" in line], 60,
               message=f"messages after the broker came back:\n{watch.out}")
    assert agent.proc is not None and agent.proc.poll() is None


def test_watch_outlives_payloads_off_the_contract(broker: DevBroker, follower: FollowerFactory) -> None:
    watch = follower("watch", "--broker", broker.url, "--fleet", "dev")
    wait_until(lambda: watch.err, 30, message="kioskctl following")
    sender = Sender(broker.url)
    try:
        sender.publish("kiosk/v1/dev/k-odd/health", b'{"ts": 1, "alarms": 5}')
        sender.publish("kiosk/v1/dev/k-odd/evidence", b"\xff not JSON")
        sender.publish("kiosk/v1/dev/k-odd/state", b'{"ts": 1, "online": true, "bdSeq": 3}')
    finally:
        sender.close()
    wait_until(lambda: lines_with(watch, "k-odd", "ONLINE", "bdSeq=3"), 30,
               message=f"the state after the bad payloads:\n{watch.out}\n{watch.err}")
    assert lines_with(watch, "k-odd", "health", "off the contract"), watch.out
    assert lines_with(watch, "k-odd", "evidence", "not JSON"), watch.out
    assert watch.proc.poll() is None
