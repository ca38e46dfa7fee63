# SPDX-License-Identifier: Apache-2.0
"""The walking skeleton from outside: a real agent process against a real broker."""

from __future__ import annotations

import os
import random
import signal
import socket
from pathlib import Path

from kiosktest import AgentProcess, Subscriber, wait_until

from agent.sim.devbroker import DevBroker


def online(data: dict) -> bool:
    return data.get("online") is True


def test_birth_health_retained_and_clean_stop(agent_factory: type[AgentProcess], broker: DevBroker,
                                              subscriber: Subscriber) -> None:
    agent = agent_factory().start()
    birth = subscriber.wait_for("/state", online, timeout=15)
    assert birth.data["mode"] == "in_service" and birth.data["versions"]["agent"]
    assert {"door", "tamper", "presence", "light_tower"} <= set(birth.data["peripherals"])
    subscriber.wait_for("/health", timeout=10)

    # A subscriber arriving later sees the retained state and health (what make run promises).
    late = Subscriber(broker.url, "kiosk/#")
    try:
        retained = late.wait_for("/state", online, timeout=5)
        assert retained.retain
        wait_until(lambda: [m for m in late.matching("/health") if m.retain], 5, message="a retained health")
    finally:
        late.close()

    assert agent.terminate(timeout=10) == 0     # how fast: bench/footprint.py's "SIGTERM to exit" figure
    gone = subscriber.wait_for("/state", lambda d: d["online"] is False, timeout=5)
    assert gone.data["bdSeq"] == birth.data["bdSeq"] and gone.data["reason"] == "shutdown"


def test_kill_9_publishes_the_will_with_the_births_bdseq(agent_factory: type[AgentProcess],
                                                          subscriber: Subscriber) -> None:
    agent = agent_factory().start()
    first = subscriber.wait_for("/state", online, timeout=15)
    agent.kill()
    will = subscriber.wait_for("/state", lambda d: d["online"] is False, timeout=10)
    assert will.data["bdSeq"] == first.data["bdSeq"] and will.data["reason"] == "will"
    agent.start()
    second = subscriber.wait_for("/state", lambda d: online(d) and d["bdSeq"] > first.data["bdSeq"], timeout=15)
    assert second.data["boot_id"] != first.data["boot_id"]


def test_door_and_tamper_alarms_raise_and_clear(agent_factory: type[AgentProcess], broker: DevBroker,
                                                subscriber: Subscriber) -> None:
    agent = agent_factory().start()
    subscriber.wait_for("/state", online, timeout=15)
    for device, code in (("door", "door_open"), ("tamper", "tamper")):
        assert agent.sim(device, "open")["ok"]
        raised = subscriber.wait_for(f"/alarm/{code}", lambda d: d["active"], timeout=5)
        assert raised.data["code"] == code and raised.data["severity"] == "critical"
        health = subscriber.wait_for("/health", lambda d, c=code: c in d["alarms"], timeout=5)
        assert health.data["reason"] == "change"
        assert agent.sim(device, "close")["ok"]
        if code == "tamper":      # latching: stays raised until ack-alarm (tests/commands/test_cmd_alarms.py)
            subscriber.wait_for(f"/alarm/{code}", lambda d: d["active"] and d.get("latched"), timeout=5)
            continue
        subscriber.wait_for(f"/alarm/{code}", lambda d: not d["active"], timeout=5)

    # The retained message is the alarm's current state.
    late = Subscriber(broker.url, "kiosk/v1/+/+/alarm/#")
    try:
        assert late.wait_for("/alarm/door_open", timeout=5).data["active"] is False
    finally:
        late.close()


def test_reconnects_after_broker_outage_with_a_new_bdseq(agent_factory: type[AgentProcess],
                                                         broker: DevBroker) -> None:
    agent = agent_factory(overrides={"keepalive": "5"}).start()
    sub = Subscriber(broker.url, "kiosk/#")
    first = sub.wait_for("/state", online, timeout=15)
    sub.close()
    broker.stop()
    # An alarm raised while the broker is away is delivered when it is back.
    assert agent.sim("door", "open")["ok"]
    wait_until(lambda: "alarm raised: door_open" in agent.log, 10, message="the door alarm raised offline")
    broker.start()
    sub = Subscriber(broker.url, "kiosk/#")
    try:
        sub.wait_for("/state", lambda d: online(d) and d["bdSeq"] > first.data["bdSeq"], timeout=60)
        sub.wait_for("/alarm/door_open", lambda d: d["active"], timeout=10)
    finally:
        sub.close()
    assert agent.proc is not None and agent.proc.poll() is None


def test_sighup_reload(agent_factory: type[AgentProcess], subscriber: Subscriber) -> None:
    agent = agent_factory().start()
    subscriber.wait_for("/state", online, timeout=15)
    good = agent.config.read_text()

    agent.config.write_text(good.replace("keepalive = 60", 'keepalive = "soon"'))
    agent.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in agent.log, 10, message="reload refused in the log")
    assert "mqtt.keepalive" in agent.log
    assert agent.proc is not None and agent.proc.poll() is None

    # A hot-reloadable change applies in place: health now every 5 s.
    agent.config.write_text(good.replace("interval_s = 30", "interval_s = 5"))
    agent.signal(signal.SIGHUP)
    before = len(subscriber.matching("/health", lambda d: d["reason"] == "periodic"))
    wait_until(lambda: len(subscriber.matching("/health", lambda d: d["reason"] == "periodic")) >= before + 2,
               20, message="two periodic health messages at the new interval")

    # A change that needs a restart restarts the components in-process.
    agent.config.write_text(good.replace('site = "Simulated outlet, bench 1"', 'site = "Moved to bench 2"'))
    agent.signal(signal.SIGHUP)
    subscriber.wait_for("/state", lambda d: online(d) and d["site"] == "Moved to bench 2", timeout=15)
    assert agent.terminate() == 0


def test_sd_notify_ready_watchdog_stopping(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    agent = agent_factory(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}).start()
    assert agent.proc is not None
    os.environ.pop("WATCHDOG_PID", None)
    got: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                got.extend(sock.recv(4096).decode().splitlines())
        except BlockingIOError:
            return got

    wait_until(lambda: "READY=1" in drain(), 20, message="READY=1")
    wait_until(lambda: drain().count("WATCHDOG=1") >= 5, 10, message="repeated WATCHDOG=1")
    agent.terminate()
    wait_until(lambda: "STOPPING=1" in drain(), 5, message="STOPPING=1")
    sock.close()


def test_alarm_left_active_is_cleared_after_a_restart(agent_factory: type[AgentProcess],
                                                      subscriber: Subscriber) -> None:
    agent = agent_factory().start()
    subscriber.wait_for("/state", online, timeout=15)
    assert agent.sim("door", "open")["ok"]
    subscriber.wait_for("/alarm/door_open", lambda d: d["active"], timeout=5)
    agent.kill()
    # The door is shut while the agent is down (the simulated pin starts low).
    agent.start()
    subscriber.wait_for("/alarm/door_open", lambda d: not d["active"], timeout=15)


def test_disk_low_alarm(agent_factory: type[AgentProcess], subscriber: Subscriber) -> None:
    agent = agent_factory()
    text = agent.config.read_text().replace('dir = "', 'min_free_mb = 99999999\ndir = "', 1)
    agent.config.write_text(text)
    agent.start()
    # A watermark of ~100 TB: every disk is below it.
    raised = subscriber.wait_for("/alarm/disk_low", lambda d: d["active"], timeout=15)
    # The outbox's own watermark check or the minutely system check, whichever is first.
    assert raised.data["device"] in ("system", "outbox") and raised.data["detail"]


def test_corrupt_store_is_salvaged_alarmed_and_its_transactions_still_delivered(
        agent_factory: type[AgentProcess], subscriber: Subscriber, rng: random.Random) -> None:
    import asyncio
    import sqlite3

    from agent.runtime.keys import load_or_create
    from agent.store.database import DB_NAME, Store
    from agent.store.journal import Journal, synthetic_tx, verify_chain

    agent = agent_factory()
    # What an earlier run left: 300 transactions recorded while the broker was
    # away, then the outbox's pages damaged on the SD card.
    key = load_or_create(None, agent.state_dir, production=False)
    store = Store.open(agent.state_dir)

    async def record() -> list[bytes]:
        journal = Journal(store, key, "sim-0001", fleet="dev")
        txs = random.Random(7)
        return [(await journal.record(synthetic_tx(txs, i))).payload for i in range(300)]
    recorded = asyncio.run(record())
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = agent.state_dir / DB_NAME
    root = sqlite3.connect(db).execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[(root - 1) * 4096:(root - 1) * 4096 + 400] = rng.randbytes(400)     # damage from the run's seed
    db.write_bytes(bytes(data))

    agent.start()
    alarm = subscriber.wait_for("/alarm/store_corrupt", lambda d: d["active"], timeout=30).data
    assert "salvaged 300 journal records" in alarm["detail"] and "kept as agent.db.corrupt-" in alarm["detail"]
    wait_until(lambda: len({m.payload for m in subscriber.matching("/tx")}) >= 300, 60,
               message="the 300 salvaged transactions")
    arrived = list(dict.fromkeys(m.payload for m in subscriber.matching("/tx")))
    assert arrived == recorded                                  # all of them, in order, byte for byte
    assert verify_chain(arrived, key.public_key()).ok
    assert list(agent.state_dir.glob("agent.db.corrupt-*"))      # the damaged file is kept


def test_only_a_signed_tx_ack_marks_transactions(agent_factory: type[AgentProcess], broker: DevBroker,
                                                 subscriber: Subscriber, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    kioskctl = str(Path(sys.executable).with_name("kioskctl"))
    made = subprocess.run([kioskctl, "keys", "init", "--dir", str(tmp_path / "bo"), "--id", "bo-1",
                           "--role", "backoffice", "--json"], capture_output=True, text=True, check=True)
    backoffice = json.loads(made.stdout)
    agent = agent_factory(overrides={"tx_per_minute": "600", "interval_s": "5"})
    agent.config.write_text(agent.config.read_text() +
                            f'\n[evidence]\nack_public_keys = ["{backoffice["public_key"]}"]\n')
    agent.start()
    wait_until(lambda: len(subscriber.matching("/tx")) >= 5, 30, message="five transactions")
    ids = sorted({m.data["id"] for m in subscriber.matching("/tx")})[:5]

    def tx_stats(data: dict) -> dict:
        return data.get("outbox", {}).get("tx", {}) if isinstance(data, dict) else {}

    # Anyone with broker access can publish an unsigned ack: it marks nothing.
    forger = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    forger.connect("127.0.0.1", broker.port)
    forger.loop_start()
    forger.publish("kiosk/v1/dev/sim-0001/tx/ack", json.dumps({"v": 1, "ts": 1, "ids": ids}).encode(),
                   qos=1).wait_for_publish(10)
    forger.disconnect()
    forger.loop_stop()
    subscriber.wait_for("/health", lambda d: tx_stats(d).get("acks_refused") == 1, timeout=30)
    assert "refused" in agent.log and "unsigned" in agent.log

    def acked() -> list[str]:
        import sqlite3
        with sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True) as db:
            return sorted(r[0] for r in db.execute("SELECT id FROM journal WHERE acked_ms IS NOT NULL"))
    assert acked() == []
    marked = subprocess.run([kioskctl, "tx", "ack", "--broker", broker.url, "--fleet", "dev",
                             "--key", backoffice["private"], "sim-0001", *ids],
                            capture_output=True, text=True, timeout=60)
    assert marked.returncode == 0, marked.stderr
    wait_until(lambda: acked() == ids, 30, message="the five signed acks marked")
    assert tx_stats(subscriber.wait_for("/health").data)["acks_refused"] == 1


def test_restart_agent_under_make_run_keeps_the_run_going(tmp_path: Path) -> None:
    import re

    from system.test_devrun import DevRun, _agent_online, _paste

    run = DevRun(tmp_path)
    try:
        ping = run.after("send a command:")
        _agent_online(run.port)
        # restart-agent exits 75 for systemd; under make run, devrun plays systemd.
        restarted = _paste(re.sub(r" ping$", " restart-agent", ping))
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        wait_until(lambda: "starting it again" in run.output, 60, message="the agent started again")
        assert run.proc.poll() is None, run.output
        _agent_online(run.port)
        again = _paste(ping)
        assert again.returncode == 0 and '"pong": true' in again.stdout, again.stdout + again.stderr
    finally:
        code = run.stop(signal.SIGINT)
    assert code == 0, run.output
    assert "stopped (agent exit" in run.output, run.output
