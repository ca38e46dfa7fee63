# SPDX-License-Identifier: Apache-2.0
"""Uplink policies that are not visible end to end in a second."""

from __future__ import annotations

import asyncio
import random
import statistics
import socket
import time

from agent.config import MqttConfig
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


# -- the batched socket I/O and the in-flight window, against a real broker ------

def _mqtt_cfg(port: int, client_id: str, max_inflight: int = 50) -> MqttConfig:
    return MqttConfig(url=f"mqtt://127.0.0.1:{port}", host="127.0.0.1", port=port, tls_enabled=False,
                      client_id=client_id, reconnect_min_s=0.05, reconnect_max_s=0.2, max_inflight=max_inflight)


def _paho_client(port: int, client_id: str):  # type: ignore[no-untyped-def]
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_the_uplink_uses_the_batched_client() -> None:
    """If a paho upgrade removed the internals it leans on, this says so (stock paho would still work)."""
    from agent.uplink import _CLIENT_CLASS, _BatchedClient
    assert _CLIENT_CLASS is _BatchedClient


def test_a_burst_of_incoming_messages_all_reach_the_handler(tmp_path) -> None:
    """2,000 QoS 1 messages arrive in a few big reads; paho parses one packet per call when
    nothing is in flight, so what it leaves in the read buffer must be parsed without a new epoll event."""
    from agent.devbroker import DevBroker
    from agent.uplink import Uplink

    with DevBroker(tmp_path / "broker", persistence=False) as broker:
        async def scenario() -> list[bytes]:
            got: list[bytes] = []
            uplink = Uplink(_mqtt_cfg(broker.port, "k-burst"))
            uplink.subscribe("burst/#", lambda m: got.append(m.payload), qos=1)
            await uplink.start()
            assert await uplink.wait_connected(10)
            await asyncio.sleep(0.3)                       # SUBACK
            sender = _paho_client(broker.port, "burst-sender")
            for i in range(2000):
                sender.publish("burst/x", b"%05d" % i, qos=1)
            deadline = time.monotonic() + 20
            while len(got) < 2000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            sender.disconnect()
            sender.loop_stop()
            await uplink.stop()
            return got

        got = asyncio.run(scenario())
    assert got == [b"%05d" % i for i in range(2000)]


def test_publishes_beyond_the_window_wait_and_all_arrive_in_order(tmp_path) -> None:
    """max_inflight 20: 500 publishes at once; never more than 20 unacknowledged, every one acked, in order."""
    from agent.devbroker import DevBroker
    from agent.uplink import Uplink

    with DevBroker(tmp_path / "broker", persistence=False) as broker:
        arrived: list[bytes] = []
        watcher = _paho_client(broker.port, "watcher")
        watcher.on_message = lambda _c, _u, msg: arrived.append(msg.payload)
        watcher.subscribe("win/#", qos=1)
        time.sleep(0.3)

        async def scenario() -> tuple[list[int], int]:
            uplink = Uplink(_mqtt_cfg(broker.port, "k-window", max_inflight=20))
            await uplink.start()
            assert await uplink.wait_connected(10)
            most = 0
            futures = [uplink.publish("win/x", b"%04d" % i) for i in range(500)]
            while not all(f.done() for f in futures):
                most = max(most, len(uplink._pending))
                await asyncio.sleep(0)
            codes = [f.result() for f in futures]
            await uplink.stop()
            return codes, most

        codes, most = asyncio.run(scenario())
        deadline = time.monotonic() + 10
        while len(arrived) < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher.disconnect()
        watcher.loop_stop()
    assert codes == [0] * 500                       # a subscriber exists: plain success
    assert 1 < most <= 20
    assert arrived == [b"%04d" % i for i in range(500)]


def test_the_window_shrinks_to_the_brokers_receive_maximum(tmp_path) -> None:
    """A broker announcing Receive Maximum 5 gets at most 5 unacknowledged publishes (more is a protocol error)."""
    from agent.devbroker import DevBroker
    from agent.uplink import Uplink

    with DevBroker(tmp_path / "broker", persistence=False, extra_conf="max_inflight_messages 5") as broker:
        async def scenario() -> tuple[int, list[int], int]:
            uplink = Uplink(_mqtt_cfg(broker.port, "k-recvmax", max_inflight=50))
            await uplink.start()
            assert await uplink.wait_connected(10)
            window = uplink.window
            most = 0
            futures = [uplink.publish("rm/x", b"x" * 100) for _ in range(300)]
            while not all(f.done() for f in futures):
                most = max(most, len(uplink._pending))
                await asyncio.sleep(0)
            codes = [f.result() for f in futures]
            await uplink.stop()
            return window, codes, most

        window, codes, most = asyncio.run(scenario())
    assert window == 5
    assert most <= 5
    assert all(code < 0x80 for code in codes) and len(codes) == 300


def test_held_publishes_fail_cleanly_when_the_broker_goes(tmp_path) -> None:
    """Publishes waiting for the window fail with NotConnected when the connection drops; none hangs."""
    from agent.devbroker import DevBroker
    from agent.errors import NotConnected
    from agent.uplink import Uplink

    broker = DevBroker(tmp_path / "broker", persistence=False).start()
    try:
        async def scenario() -> tuple[int, int]:
            uplink = Uplink(_mqtt_cfg(broker.port, "k-drop", max_inflight=20))
            await uplink.start()
            assert await uplink.wait_connected(10)
            futures = [uplink.publish("drop/x", b"x" * 1000) for _ in range(2000)]
            broker.stop()
            done, pending = await asyncio.wait(futures, timeout=15)
            await uplink.stop()
            refused = sum(1 for f in done if isinstance(f.exception(), NotConnected))
            return len(pending), refused

        pending, refused = asyncio.run(scenario())
    finally:
        broker.stop()
    assert pending == 0
    assert refused > 0
