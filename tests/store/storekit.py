# SPDX-License-Identifier: Apache-2.0
"""Helpers for the store tests: a durable subscriber and the checker of what it saw.

``DurableSubscriber`` holds an MQTT 5 session on the broker (clean start
off, a day's expiry, QoS 1), so messages the broker accepted while the
subscriber was away -- a broker restart, say -- still reach it.
``check_delivery`` is the end-of-test oracle.

    sub = DurableSubscriber(broker.port, "kiosk/v1/f/k-1/tx")
    ...
    report = check_delivery(sub.payloads(), recorded_ids, public_key)
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttConfig
from agent.sim.devbroker import DevBroker
from agent.store.journal import verify_chain

__all__ = ["DurableSubscriber", "check_delivery", "mqtt_config", "start_broker"]


def start_broker(workdir: Path, extra_conf: str = "") -> DevBroker:
    """A DevBroker whose persistence really works when the tests run as root.

    Started as root, mosquitto drops to the ``mosquitto`` user and then
    cannot reach pytest's 0700 ``/tmp/pytest-of-root``: it runs without its
    log and persistence file, so a broker restart silently forgets every
    session. ``user root`` keeps it able to write its own directory.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        extra_conf = "user root\n" + extra_conf
    return DevBroker(workdir, extra_conf=extra_conf).start()


def mqtt_config(port: int, client_id: str = "k-1") -> MqttConfig:
    return MqttConfig(url=f"mqtt://127.0.0.1:{port}", host="127.0.0.1", port=port, tls_enabled=False,
                      client_id=client_id, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive=10)


class DurableSubscriber:
    """Collects (topic, payload) of every message, across broker restarts."""

    def __init__(self, port: int, *topics: str) -> None:
        self.port = port
        self.topics = topics
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 86400
        self.client.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("subscriber did not connect")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def payloads(self, suffix: str = "/tx") -> list[bytes]:
        with self._lock:
            return [p for t, p in self.received if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_delivery(payloads: Iterable[bytes], recorded: Iterable[str], public_key: Any) -> dict[str, Any]:
    """Every recorded id arrived; one payload per id; seq gapless; chain and signatures hold.

    Returns a summary; raises AssertionError naming the first problem.
    """
    by_id: dict[str, bytes] = {}
    copies = 0
    for payload in payloads:
        rec = json.loads(payload)
        old = by_id.setdefault(rec["id"], payload)
        if old != payload:
            raise AssertionError(f"id {rec['id']} arrived with two different payloads")
        copies += 1
    missing = [i for i in recorded if i not in by_id]
    assert not missing, f"{len(missing)} recorded ids never arrived, e.g. {missing[:3]}"
    ordered = sorted(by_id.values(), key=lambda p: json.loads(p)["seq"])
    seqs = [json.loads(p)["seq"] for p in ordered]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq not gapless from 1: {_gaps(seqs)}"
    report = verify_chain(ordered, public_key)
    assert report.ok, str(report)
    return {"unique": len(by_id), "copies": copies, "duplicates": copies - len(by_id), "last_seq": report.last_seq}


def _gaps(seqs: list[int]) -> str:
    have = set(seqs)
    missing = [s for s in range(1, max(seqs) + 1) if s not in have] if seqs else []
    return f"missing {missing[:10]}"
