# SPDX-License-Identifier: Apache-2.0
"""The ledger's MQTT client: paho, with a receive path for thousands of messages a second.

    client = receiver_client(client_id, deliver)      # deliver(mid, qos, topic, payload), on paho's thread
    ...
    puback_all(client, mids)                           # PUBACKs of QoS 1 messages, one packet, one wake-up

Stock paho reads each packet with a ``select()`` and three ``recv()``
calls (the first byte, the length, the rest), builds an ``MQTTMessage``
and takes two locks per callback, then writes each PUBACK with its own
``send()``: about 60 us of CPU per message here, a quarter of what a
ledger worker spends on a record. :class:`BulkReceiver` reads the socket
in large chunks, decodes every whole PUBLISH in the chunk straight from
the buffer (QoS 0 or 1, no properties: what a kiosk publishes) and hands
it to ``deliver``; anything else -- CONNACK, SUBACK, PUBACK of the ledger's
own ``tx/ack``, a PUBLISH with properties (a topic alias would change its
topic), QoS 2, a packet split across reads -- goes through paho's own code,
unchanged, from the same buffer. PUBACKs for a committed batch go out
as one write.

It overrides paho internals, so it is used only on the paho release it was
written for (``PAHO_WRITTEN_FOR``, which setup.cfg pins for the agent's
publish path too) with those internals present; any other paho gets the
stock client through its public API (``on_message``, ``ack``) with a
logged warning: correct, only slower.
"""

from __future__ import annotations

import importlib.metadata
import logging
import ssl
import struct
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet.ledger.config import MqttConfig

__all__ = ["BulkReceiver", "Deliver", "PAHO_WRITTEN_FOR", "receiver_client", "puback_all", "READ_CHUNK",
           "use_tls", "connect_persistent"]

log = logging.getLogger("fleet.ledger.receiver")

# ``deliver(mid, qos, topic, payload)``: one received PUBLISH, on paho's network thread.
Deliver = Callable[[int, int, str, bytes], None]

# The paho release BulkReceiver's overrides were read against (the same pin as agent/uplink/connection.py's).
PAHO_WRITTEN_FOR = "2.2.0"
READ_CHUNK = 256 * 1024
_PUBACK = struct.Struct("!BBH")
_PUBACK_COMMAND = 0x40


class BulkReceiver(paho.Client):
    """paho whose socket reads are chunked and whose plain PUBLISH packets skip its per-packet machinery."""

    _HOOKS = ("_sock_recv", "_sock_close", "_packet_read", "_packet_queue", "_loop_rc_handle", "_in_packet",
              "_msgtime_mutex", "_last_bytes_received", "_sock", "_manual_ack")

    def __init__(self, *args: Any, deliver: Deliver, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._deliver = deliver

    @classmethod
    def supported(cls, version: str | None = None) -> bool:
        """True only on the paho release the overrides were written for, with its internals present."""
        if (version or importlib.metadata.version("paho-mqtt")) != PAHO_WRITTEN_FOR:
            return False
        probe = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        return all(hasattr(probe, name) for name in cls._HOOKS)

    # -- reading ------------------------------------------------------------------

    def buffered(self) -> bool:
        """Bytes read from the socket and not yet parsed (select() will not report them)."""
        return self._rpos < len(self._rbuf)

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho's own packet reader takes its bytes from the buffer first.
        if self._rpos >= len(self._rbuf):
            self._rbuf = super()._sock_recv(READ_CHUNK)     # raises BlockingIOError when dry
            self._rpos = 0
            if not self._rbuf:
                return b""                                    # EOF: paho sees the lost connection
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos:end]
        self._rpos = end
        return chunk

    def _sock_close(self) -> None:
        # Bytes of a lost connection must never be read as the start of the next one.
        self._rbuf = b""
        self._rpos = 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Everything readable now: whole PUBLISH packets decoded here, the rest by paho's reader."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self._rpos >= len(self._rbuf):
            try:
                self._rbuf = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError as err:
                log.warning("failed to receive on socket: %s", err)
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            self._rpos = 0
            if not self._rbuf:
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
        while self._rpos < len(self._rbuf):
            if self._in_packet["command"] == 0 and self._publishes():
                continue
            rc = self._packet_read()        # one packet, paho's way (it reads the socket if the buffer runs dry)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return self._loop_rc_handle(rc)
        # A packet handled above may have closed the connection (which also empties the buffer).
        return MQTTErrorCode.MQTT_ERR_NO_CONN if self._sock is None else MQTTErrorCode.MQTT_ERR_SUCCESS

    def _publishes(self) -> bool:
        """Deliver the whole, plain PUBLISH packets at the buffer's head; False if the next one is not such."""
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        deliver = self._deliver
        delivered = False
        while pos + 2 <= end:
            first = buf[pos]
            qos = (first >> 1) & 3
            if first >> 4 != 3 or qos > 1:
                break
            # Remaining length: 1 to 4 bytes of 7 bits, least significant first.
            length, shift, at = 0, 0, pos + 1
            while at < end and at < pos + 5:
                byte = buf[at]
                length |= (byte & 0x7F) << shift
                shift += 7
                at += 1
                if not byte & 0x80:
                    break
            else:
                break                       # the length is cut by the read, or longer than 4 bytes
            stop = at + length
            if stop > end or length < 3:
                break                       # not all here yet (or too short to be sane): paho's reader
            topic_end = at + 2 + (buf[at] << 8 | buf[at + 1])
            head = topic_end + (2 if qos else 0)
            if head >= stop or buf[head] != 0 or topic_end == at + 2:
                break                       # properties, no topic (an alias) or malformed: paho decides
            try:
                topic = buf[at + 2:topic_end].decode("utf-8")
            except UnicodeDecodeError:
                break
            mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0
            deliver(mid, qos, topic, buf[head + 1:stop])
            pos = stop
            delivered = True
        self._rpos = pos
        return delivered

    # -- acknowledging ------------------------------------------------------------

    def puback_all(self, mids: Iterable[int]) -> None:
        """A PUBACK (success, no properties) for each QoS 1 ``mid``, queued as one packet."""
        data = b"".join([_PUBACK.pack(_PUBACK_COMMAND, 2, mid) for mid in mids])
        if data:
            self._packet_queue(_PUBACK_COMMAND, data, 0, 0)


def receiver_client(client_id: str, deliver: Deliver) -> paho.Client:
    """An MQTT 5 client with manual PUBACKs that calls ``deliver`` for each PUBLISH it receives."""
    client: paho.Client
    if BulkReceiver.supported():
        client = BulkReceiver(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5,
                              deliver=deliver)
    else:
        log.warning("paho-mqtt %s is not %s, the release the ledger's bulk receive path was written for (or "
                    "lacks its internals): using stock paho (correct, slower)",
                    importlib.metadata.version("paho-mqtt"), PAHO_WRITTEN_FOR)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    # paho's own reader (every packet of the stock client; the unusual ones of BulkReceiver) ends here.
    client.on_message = lambda _c, _u, msg: deliver(msg.mid, msg.qos, msg.topic, bytes(msg.payload))
    client.manual_ack_set(True)
    return client


def puback_all(client: paho.Client, mids: list[int]) -> None:
    """PUBACK these QoS 1 messages: one write on BulkReceiver, paho's ``ack`` each on the stock client."""
    if isinstance(client, BulkReceiver):
        client.puback_all(mids)
    else:
        for mid in mids:
            client.ack(mid, 1)


def use_tls(client: paho.Client, mq: MqttConfig) -> None:
    """TLS (and the client certificate, when configured) for an ``mqtts://`` broker; nothing otherwise."""
    if mq.url.startswith("mqtts://"):
        ctx = ssl.create_default_context(cafile=str(mq.ca_file) if mq.ca_file else None)
        if mq.cert_file:
            ctx.load_cert_chain(str(mq.cert_file), str(mq.key_file) if mq.key_file else None)
        client.tls_set_context(ctx)


def connect_persistent(client: paho.Client, mq: MqttConfig, *, receive_maximum: int) -> None:
    """Connect in the background with a kept session (``clean_start`` off) and start paho's loop thread.

    The broker keeps what a dead worker had not PUBACKed for ``mq.session_expiry_s``; ``receive_maximum``
    bounds what it sends before the first PUBACK.
    """
    parts = urlsplit(mq.url)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = mq.session_expiry_s
    props.ReceiveMaximum = min(65_535, max(100, receive_maximum))
    client.connect_async(parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                         keepalive=mq.keepalive, clean_start=False, properties=props)
    client.loop_start()
