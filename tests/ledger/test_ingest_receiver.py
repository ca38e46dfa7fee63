# SPDX-License-Identifier: Apache-2.0
"""The ledger's bulk MQTT receive path (fleet/ledger/receiver.py) against stock paho and a real broker.

Its own PUBLISH decoder must deliver exactly what paho's reader would, whatever
the packets (QoS 0 and 1, with and without properties, long remaining lengths)
and however the byte stream is cut into reads; its batched PUBACKs must
settle exactly the messages named, on a real Mosquitto.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.sim.devbroker import DevBroker
from fleet.ledger import receiver
from fleet.ledger.receiver import BulkReceiver, puback_all, receiver_client

Delivery = tuple[int, int, str, bytes]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes, qos: int, mid: int, properties: bytes = b"\x00") -> bytes:
    """An MQTT 5 PUBLISH as a broker sends it (``properties``: the length-prefixed property block)."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + (struct.pack("!H", mid) if qos else b"") + properties + payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


USER_PROPERTY = b"\x0c" + b"\x26" + b"\x00\x03key" + b"\x00\x04val1"         # length 12: one user property
EXPIRY = b"\x05" + b"\x02" + struct.pack("!I", 60)                             # message expiry interval


def unconnected(client_class: str) -> tuple[paho.Client, list[Delivery], socket.socket]:
    """A receiving client reading one end of a socket pair (the test writes the broker's bytes to the other)."""
    delivered: list[Delivery] = []
    if client_class == "stock":
        saved = BulkReceiver.supported
        BulkReceiver.supported = classmethod(lambda cls, version=None: False)  # type: ignore[method-assign]
        try:
            client = receiver_client("test", lambda *d: delivered.append(d))
        finally:
            BulkReceiver.supported = saved      # type: ignore[method-assign]
        assert type(client) is paho.Client
    else:
        client = receiver_client("test", lambda *d: delivered.append(d))
        assert isinstance(client, BulkReceiver)
    ours, broker_end = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # as paho's connect() would
    return client, delivered, broker_end


def feed(client: paho.Client, broker_end: socket.socket, chunks: list[bytes]) -> None:
    for chunk in chunks:
        broker_end.sendall(chunk)
        sock = client._sock
        while select.select([sock], [], [], 0)[0] or (isinstance(client, BulkReceiver) and client.buffered()):
            assert client.loop_read() == paho.MQTT_ERR_SUCCESS


packets = st.lists(st.tuples(
    st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    st.binary(max_size=600) | st.binary(min_size=16_300, max_size=16_500),     # 2- and 3-byte lengths
    st.sampled_from([0, 1]),
    st.integers(1, 65_535),
    st.sampled_from([b"\x00", b"\x00", b"\x00", USER_PROPERTY, EXPIRY]),
), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(packets=packets, cuts=st.lists(st.integers(0, 20_000), max_size=8))
def test_the_bulk_reader_delivers_what_paho_delivers_however_the_stream_is_cut(
        packets: list[tuple[str, bytes, int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(publish_packet(topic, payload, qos, mid, props) for topic, payload, qos, mid, props in packets)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    got = {}
    for kind in ("stock", "bulk"):
        client, delivered, broker_end = unconnected(kind)
        try:
            feed(client, broker_end, chunks)
        finally:
            client._sock.close()
            broker_end.close()
        got[kind] = delivered
    expected = [(mid if qos else 0, qos, topic, payload) for topic, payload, qos, mid, _p in packets]
    assert got["stock"] == expected
    assert got["bulk"] == expected


def test_whole_plain_publishes_never_go_through_pahos_reader() -> None:
    sizes = [0, 1, 120, 121, 122, 16_370, 16_380, 16_390, 60_000, 5]        # around the 1/2/3-byte lengths
    stream = b"".join(publish_packet(f"kiosk/v1/f/k-{i}/tx", bytes([i]) * n, i % 2, 100 + i)
                      for i, n in enumerate(sizes))
    client, delivered, broker_end = unconnected("bulk")
    through_paho: list[object] = []
    stock_path = client.on_message
    client.on_message = lambda *a: (through_paho.append(a), stock_path(*a))     # type: ignore[misc]
    try:
        feed(client, broker_end, [stream])
    finally:
        client._sock.close()
        broker_end.close()
    assert delivered == [((100 + i) if i % 2 else 0, i % 2, f"kiosk/v1/f/k-{i}/tx", bytes([i]) * n)
                         for i, n in enumerate(sizes)]
    assert through_paho == []       # the point of the bulk reader; anything else would still be correct, but slow


def test_a_four_byte_remaining_length_split_over_many_reads() -> None:
    payload = bytes(range(256)) * 8200          # 2.1 MB: a 4-byte remaining length
    stream = publish_packet("kiosk/v1/f/k/tx", payload, 1, 7) + publish_packet("kiosk/v1/f/k/tx", b"{}", 1, 8)
    client, delivered, broker_end = unconnected("bulk")
    try:
        feed(client, broker_end, [stream[i:i + 100_000] for i in range(0, len(stream), 100_000)])
    finally:
        client._sock.close()
        broker_end.close()
    assert delivered == [(7, 1, "kiosk/v1/f/k/tx", payload), (8, 1, "kiosk/v1/f/k/tx", b"{}")]


def test_bytes_left_from_a_lost_connection_are_not_read_on_the_next() -> None:
    client, delivered, broker_end = unconnected("bulk")
    whole = publish_packet("kiosk/v1/f/k/tx", b"a", 1, 1)
    broker_end.sendall(whole + publish_packet("kiosk/v1/f/k/tx", b"cut short", 1, 2)[:9])
    client.loop_read()
    assert delivered == [(1, 1, "kiosk/v1/f/k/tx", b"a")]
    client._sock_close()  # what paho does when the connection is lost
    broker_end.close()
    assert not client.buffered()


def test_another_paho_release_gets_the_stock_client(caplog: pytest.LogCaptureFixture) -> None:
    assert BulkReceiver.supported(receiver.PAHO_WRITTEN_FOR)
    assert not BulkReceiver.supported("2.1.0")
    client, _delivered, broker_end = unconnected("stock")
    client._sock.close()
    broker_end.close()
    assert "using stock paho" in caplog.text


class Consumer:
    """A persistent-session subscriber through ``receiver_client`` on a real broker."""

    def __init__(self, port: int, client_id: str, stock: bool = False) -> None:
        self.delivered: list[Delivery] = []
        self.arrived = threading.Condition()
        if stock:
            saved = BulkReceiver.supported
            BulkReceiver.supported = classmethod(lambda cls, version=None: False)  # type: ignore[method-assign]
        try:
            self.client = receiver_client(client_id, self._deliver)
        finally:
            if stock:
                BulkReceiver.supported = saved      # type: ignore[method-assign]
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe("kiosk/v1/f/+/tx", qos=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _deliver(self, *d: Any) -> None:
        with self.arrived:
            self.delivered.append(d)
            self.arrived.notify_all()

    def wait(self, count: int) -> list[Delivery]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.delivered) >= count, 20), \
                f"{len(self.delivered)} of {count} delivered"
            return list(self.delivered)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("stock", [False, True], ids=["bulk", "stock"])
def test_pubacks_settle_exactly_the_messages_named_on_a_real_broker(tmp_path: Path, stock: bool) -> None:
    with DevBroker(tmp_path / "broker") as broker:
        client_id = f"ledger-{uuid.uuid4().hex[:6]}"
        first = Consumer(broker.port, client_id, stock)
        publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        # Fewer than the broker's 100 in flight to one client: none is acknowledged before all arrived.
        sent = [(f"kiosk/v1/f/k-{i % 7}/tx", f"record {i}".encode() * (1 + i % 50)) for i in range(90)]
        for topic, payload in sent:
            publisher.publish(topic, payload, qos=1).wait_for_publish(10)
        got = first.wait(90)
        assert sorted(d[3] for d in got) == sorted(p for _t, p in sent)
        assert all(d[1] == 1 for d in got)
        # Acknowledge all but every tenth; the broker must give exactly those again to the same session.
        kept = [d for i, d in enumerate(got) if i % 10 == 0]
        puback_all(first.client, [d[0] for i, d in enumerate(got) if i % 10])
        first.client.publish("kiosk/v1/f/probe", b"", qos=1).wait_for_publish(10)     # PUBACKs written before
        first.close()
        again = Consumer(broker.port, client_id, stock)
        redelivered = again.wait(len(kept))
        puback_all(again.client, [d[0] for d in redelivered])
        again.client.publish("kiosk/v1/f/probe", b"", qos=1).wait_for_publish(10)
        again.close()
        assert sorted(d[3] for d in redelivered) == sorted(d[3] for d in kept)
        third = Consumer(broker.port, client_id, stock)
        publisher.publish("kiosk/v1/f/k-0/tx", b"last", qos=1).wait_for_publish(10)
        assert [d[3] for d in third.wait(1)] == [b"last"]      # nothing acknowledged came back
        third.close()
        publisher.disconnect()
        publisher.loop_stop()
