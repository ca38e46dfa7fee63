# SPDX-License-Identifier: Apache-2.0
"""kioskctl's broker connection: a thin, blocking paho MQTT 5 client.

    with FleetClient("mqtt://127.0.0.1:1883") as client:
        client.subscribe(Topics.fleet_filter("north"))
        for msg in client.messages(timeout=5):
            print(msg.topic)

The client reconnects by itself (paho's loop thread, 1 to 5 s apart) and
subscribes again; ``stream()`` yields the messages and a ``LinkEvent``
when the broker is lost and when it is back, so ``watch`` can say so.
"""

from __future__ import annotations

import dataclasses
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from fleet.errors import BrokerError, FleetError

__all__ = ["FleetClient", "FleetError", "BrokerError", "LinkEvent"]


@dataclasses.dataclass(frozen=True)
class LinkEvent:
    """The broker connection changed: ``kind`` is ``lost`` or ``back``."""

    kind: str
    detail: str


Item = paho.MQTTMessage | LinkEvent


class FleetClient:
    """Connects on ``__enter__``; messages arrive on a queue."""

    def __init__(self, url: str, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, client_id: str | None = None, timeout: float = 10.0,
                 keepalive: int = 30) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BrokerError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.timeout = timeout
        self.keepalive = keepalive
        self.queue: queue.Queue[Item] = queue.Queue()
        self._connected = threading.Event()
        self._error: str | None = None
        self._subscriptions: dict[str, int] = {}
        self._closing = False
        self._lost = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"kioskctl-{uuid.uuid4().hex[:12]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if parts.scheme == "mqtts":
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
            self.client.tls_set_context(ctx)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, msg: self.queue.put(msg)
        # paho's loop thread reconnects after a loss; a fleet manager wants
        # to see the fleet again within seconds of the broker's return.
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            self._error = str(reason)
            self._connected.set()
            return
        if self._lost:
            # A new session on a restarted broker has no subscriptions.
            for topic, qos in self._subscriptions.items():
                self.client.subscribe(topic, qos=qos)
            self._lost = False
            self.queue.put(LinkEvent("back", f"{self.host}:{self.port}"))
        self._connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode,
                       _p: object) -> None:
        if self._closing or self._lost or not self._connected.is_set():
            return
        self._lost = True
        detail = "connection closed" if reason.value == 0 else str(reason)
        self.queue.put(LinkEvent("lost", f"{self.host}:{self.port}: {detail}"))

    def __enter__(self) -> FleetClient:
        try:
            self.client.connect(self.host, self.port, keepalive=self.keepalive)
        except OSError as exc:
            raise BrokerError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from exc
        self.client.loop_start()
        if not self._connected.wait(self.timeout) or self._error:
            self.client.loop_stop()
            raise BrokerError(f"broker {self.host}:{self.port} refused or did not answer: {self._error or 'timeout'}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscriptions[topic] = qos
        self.client.subscribe(topic, qos=qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: object | None = None) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)  # type: ignore[arg-type]
        info.wait_for_publish(self.timeout)
        return int(info.rc)

    def messages(self, timeout: float | None = None, idle: float | None = None) -> Iterator[paho.MQTTMessage]:
        """Yield messages until ``timeout`` in all, or ``idle`` seconds without one."""
        for item in self.stream(timeout, idle):
            if not isinstance(item, LinkEvent):
                yield item

    def stream(self, timeout: float | None = None, idle: float | None = None) -> Iterator[Item]:
        """``messages``, with a ``LinkEvent`` in order wherever the connection was lost or came back."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = idle
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                if idle is not None:
                    return
                continue
            yield item
