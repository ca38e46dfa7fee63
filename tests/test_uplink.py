# SPDX-License-Identifier: Apache-2.0
"""Uplink policies that are not visible end to end in a second."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import statistics
import threading
import time

import pytest

from agent.config import MqttConfig
from agent.runtime.sdnotify import notify
from agent.uplink.connection import backoff_delay


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
    from agent.config import DEFAULT_SIM_CONFIG, load_config
    from agent.runtime.daemon import Agent

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
        time.sleep(0.6)            # the loop hangs  # noqa: ASYNC251 - the hang is the point
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


async def _until_routed(port: int, topic: str, got: list[bytes]) -> None:
    """Wait until the uplink's subscription covering ``topic`` routes messages, then forget the probes.

    The uplink does not expose SUBACK: probes go until one reaches the handler, then a last one
    fences the stragglers (one sender, one topic: in order), and ``got`` is cleared.
    """
    probe = _paho_client(port, "probe")
    try:
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline, f"no probe on {topic} reached the handler"
            probe.publish(topic, b"probe", qos=1).wait_for_publish(5)
            await asyncio.sleep(0.05)
        probe.publish(topic, b"fence", qos=1).wait_for_publish(5)
        while b"fence" not in got:
            assert time.monotonic() < deadline, "the fence probe did not arrive"
            await asyncio.sleep(0.02)
        got.clear()
    finally:
        probe.disconnect()
        probe.loop_stop()


def _subscribe_and_wait(client, topic: str) -> None:  # type: ignore[no-untyped-def]
    """Subscribe a paho test client and wait for its SUBACK."""
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(10), f"no SUBACK for {topic}"


def test_the_uplink_uses_the_batched_client() -> None:
    """If a paho upgrade removed the internals it leans on, this says so (stock paho would still work)."""
    from agent.uplink.connection import _CLIENT_CLASS, _BatchedClient
    assert _CLIENT_CLASS is _BatchedClient


def test_bytes_read_on_a_lost_connection_are_not_parsed_on_the_next() -> None:
    """The batched reader reads ahead; what it read from a connection that then broke must go with it."""
    import socket

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from agent.uplink.connection import _BatchedClient

    client = _BatchedClient(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    ours, broker_end = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    # A whole PUBACK and the first bytes of a PUBLISH the connection lost before the rest came.
    broker_end.sendall(bytes([0x40, 0x02, 0x00, 0x01]) + bytes([0x30, 0x20, 0x00]))
    assert client._sock_recv(1) == bytes([0x40])
    assert client.buffered()
    client._sock_close()        # what paho does when the connection is lost
    broker_end.close()
    assert not client.buffered()
    assert isinstance(client, paho.Client)


def test_paho_is_pinned_to_exactly_the_release_the_overrides_were_written_for() -> None:
    """setup.cfg's pin, the installed paho and PAHO_WRITTEN_FOR are one version, and the
    override check accepts that one only: a paho bump must be a deliberate re-read of the overrides."""
    import configparser
    import importlib.metadata
    import re
    from pathlib import Path

    from agent.uplink.connection import PAHO_WRITTEN_FOR, _BatchedClient

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    pins = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if "paho" in line]
    assert len(pins) == 1 and re.fullmatch(r"paho-mqtt==\d+\.\d+\.\d+", pins[0]), pins
    pinned = pins[0].split("==")[1]
    assert pinned == PAHO_WRITTEN_FOR
    assert importlib.metadata.version("paho-mqtt") == pinned
    assert _BatchedClient.supported(pinned)
    major, minor, patch = (int(part) for part in pinned.split("."))
    for other in (f"{major}.{minor}.{patch + 1}", f"{major}.{minor + 1}.0", f"{major + 1}.0.0",
                  f"{major}.{minor}.{patch}rc1", f"{major}.{minor}"):
        assert not _BatchedClient.supported(other), other


def test_any_other_paho_falls_back_to_stock_paho_with_a_warning(caplog) -> None:
    import paho.mqtt.client as paho

    from agent.uplink.connection import PAHO_WRITTEN_FOR, _BatchedClient, select_client_class

    caplog.set_level(logging.WARNING, logger="agent.uplink.connection")
    assert select_client_class(PAHO_WRITTEN_FOR) is _BatchedClient and not caplog.records
    assert select_client_class("2.3.0") is paho.Client
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "paho-mqtt 2.3.0 is not " + PAHO_WRITTEN_FOR in caplog.records[0].getMessage()


def test_a_burst_of_incoming_messages_all_reach_the_handler(tmp_path) -> None:
    """2,000 QoS 1 messages arrive in a few big reads; paho parses one packet per call when
    nothing is in flight, so what it leaves in the read buffer must be parsed without a new epoll event."""
    from agent.sim.devbroker import DevBroker
    from agent.uplink.connection import Uplink

    with DevBroker(tmp_path / "broker", persistence=False) as broker:
        async def scenario() -> list[bytes]:
            got: list[bytes] = []
            uplink = Uplink(_mqtt_cfg(broker.port, "k-burst"))
            uplink.subscribe("burst/#", lambda m: got.append(m.payload), qos=1)
            await uplink.start()
            assert await uplink.wait_connected(10)
            await _until_routed(broker.port, "burst/probe", got)
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


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "stock-paho"])
def test_publishes_beyond_the_window_wait_and_all_arrive_in_order(tmp_path, batched: bool) -> None:
    """max_inflight 20: 500 publishes at once; never more than 20 unacknowledged, every one acked, in order.
    Also on stock paho, the fall-back when the installed paho is not the pinned one."""
    import paho.mqtt.client as paho

    from agent.sim.devbroker import DevBroker
    from agent.uplink.connection import Uplink, _BatchedClient

    with DevBroker(tmp_path / "broker", persistence=False) as broker:
        arrived: list[bytes] = []
        watcher = _paho_client(broker.port, "watcher")
        watcher.on_message = lambda _c, _u, msg: arrived.append(msg.payload)
        _subscribe_and_wait(watcher, "win/#")

        async def scenario() -> tuple[list[int], int]:
            uplink = Uplink(_mqtt_cfg(broker.port, "k-window", max_inflight=20), batched=batched)
            await uplink.start()
            assert await uplink.wait_connected(10)
            assert isinstance(uplink._client, _BatchedClient) is batched
            assert isinstance(uplink._client, paho.Client)
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
    from agent.sim.devbroker import DevBroker
    from agent.uplink.connection import Uplink

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
    from agent.errors import NotConnected
    from agent.sim.devbroker import DevBroker
    from agent.uplink.connection import Uplink

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


# -- untrusted input: size limits and connection failures ------------------------------

def test_oversized_messages_never_reach_the_handler(tmp_path) -> None:
    """Over its subscription's limit: dropped unread and reported; far over the CONNECT's
    Maximum Packet Size: the broker does not even send it. Messages around them still arrive."""
    from agent.sim.devbroker import DevBroker
    from agent.uplink.connection import MAX_PACKET_BYTES, Uplink

    with DevBroker(tmp_path / "broker", persistence=False) as broker:
        async def scenario() -> tuple[list[bytes], list[tuple[str, int, int, bytes | None]]]:
            got: list[bytes] = []
            over: list[tuple[str, int, int, bytes | None]] = []
            uplink = Uplink(_mqtt_cfg(broker.port, "k-limits"))
            uplink.subscribe("lim/#", lambda m: got.append(m.payload), max_bytes=1000,
                             on_oversized=lambda o: over.append((o.topic, o.size, o.limit, o.correlation_data)))
            await uplink.start()
            assert await uplink.wait_connected(10)
            await _until_routed(broker.port, "lim/probe", got)
            sender = _paho_client(broker.port, "lim-sender")
            for topic, size in (("lim/a", 1000), ("lim/b", 1001), ("lim/c", MAX_PACKET_BYTES + 1), ("lim/d", 3)):
                sender.publish(topic, b"x" * size, qos=1).wait_for_publish(10)
            deadline = time.monotonic() + 20
            # lim/d, sent last by the one sender, arrives last: with it, whatever came before has.
            while len(got) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            sender.disconnect()
            sender.loop_stop()
            await uplink.stop()
            return got, over

        got, over = asyncio.run(scenario())
        broker_log = broker.log_path.read_text(errors="replace")
    assert got == [b"x" * 1000, b"xxx"]
    assert over == [("lim/b", 1001, 1000, None)]
    assert "Dropping too large outgoing PUBLISH for k-limits" in broker_log


def _vm_hwm_kib(pid: int) -> int:
    """Peak resident memory of ``pid`` so far (kernel's high-water mark), KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/pid/status")


def test_an_80_mb_tx_ack_leaves_the_agent_small_and_serving(agent_factory, broker) -> None:
    """Issue 12 #6: an 80 MB tx/ack once took the agent from 47 MB to ~500 MB. Now the broker
    drops it (Maximum Packet Size) and one just over tx/ack's own limit is logged and dropped unread."""
    from kiosktest import Subscriber, wait_until

    from agent.wire.contract import TX_ACK_MAX_BYTES, Topics

    agent = agent_factory().start()
    births = Subscriber(broker.url, "kiosk/v1/+/+/state")     # not tx/ack: the junk below breaks its schema
    births.wait_for("/sim-0001/state", lambda d: d.get("online") is True, timeout=30)
    births.close()
    assert agent.proc is not None
    before = _vm_hwm_kib(agent.proc.pid)
    sender = _paho_client(broker.port, "ack-flood")
    try:
        topic = Topics("dev", "sim-0001").tx_ack
        huge = b'{"v":1,"ts":1,"kiosk":"sim-0001","ids":[' + b'"0123456789abcdef",' * 4_400_000 + b'"x"]}'
        assert len(huge) > 80_000_000
        sender.publish(topic, huge, qos=1).wait_for_publish(60)
        del huge
        just_over = b'{"ids":["' + b"a" * TX_ACK_MAX_BYTES + b'"]}'
        sender.publish(topic, just_over, qos=1).wait_for_publish(10)
        wait_until(lambda: f"tx/ack dropped unread: {len(just_over)} bytes, over the limit of {TX_ACK_MAX_BYTES}"
                   in agent.log, 30, message="the oversized tx/ack logged")
    finally:
        sender.disconnect()
        sender.loop_stop()
    # Still serving: the simulator socket answers from the event loop.
    assert agent.sim("light_tower", "status")["lit"]["green"] is True
    grew_mib = (_vm_hwm_kib(agent.proc.pid) - before) / 1024
    assert grew_mib < 20, f"peak RSS grew by {grew_mib:.0f} MiB"
    assert agent.proc.poll() is None and "Traceback" not in agent.log


def _listener(mode: str) -> tuple[socket.socket, threading.Event]:
    """A TCP port that accepts and reads the CONNECT, then closes ("close") or stays silent ("silent")."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    done = threading.Event()

    def serve() -> None:
        held = []
        server.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                conn.recv(1024)
            except OSError:
                pass
            if mode == "close":
                conn.close()
            else:
                held.append(conn)
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, done


@pytest.mark.parametrize("mode, cause", [("close", "the broker closed the connection before CONNACK"),
                                         ("silent", "TCP connected, but no CONNACK within 0.5 s")])
def test_a_broker_that_never_answers_is_named_and_the_line_stays_the_same(caplog, monkeypatch, mode: str,
                                                                          cause: str) -> None:
    """Issue 12 #12: the line grew by "ConnectionError: " each attempt and said "connection refused"
    when the TCP connection had been accepted."""
    import agent.uplink.connection
    from agent.uplink.connection import Uplink

    monkeypatch.setattr(agent.uplink.connection, "CONNACK_TIMEOUT_S", 0.5)
    caplog.set_level(logging.INFO, logger="agent.uplink.connection")
    server, done = _listener(mode)
    port = server.getsockname()[1]

    def unreachable() -> list[str]:
        return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]

    async def scenario() -> None:
        uplink = Uplink(_mqtt_cfg(port, "k-noack"))
        await uplink.start()
        deadline = time.monotonic() + 30
        while len(unreachable()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await uplink.stop()

    try:
        asyncio.run(scenario())
    finally:
        done.set()
    lines = unreachable()
    assert len(lines) >= 3, lines
    assert set(lines) == {f"broker 127.0.0.1:{port} unreachable: {cause}"}, lines
