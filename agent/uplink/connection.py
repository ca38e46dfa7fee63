# SPDX-License-Identifier: Apache-2.0
"""The one MQTT 5 connection, driven from the asyncio event loop.

paho-mqtt 2.x does the protocol; this module owns the socket's place in the
loop (``add_reader``/``add_writer``, as paho's asyncio example and aiomqtt
v2 do), the reconnect policy, and the futures that resolve on PUBACK.

    uplink = Uplink(cfg.mqtt, will=lambda: (topic, payload))
    uplink.add_connect_listener(publish_birth)
    await uplink.start()
    code = await uplink.publish("kiosk/v1/f/k/tx", payload)   # PUBACK reason code

Decisions:

- **MQTT 5 only.** Under 3.1.1 a broker acknowledges and silently drops a
  publish its ACL denies; under 5 it says 0x87, and a reason code >= 0x80
  never counts as delivered.
- **A fresh paho client per connection attempt.** paho keeps unacknowledged
  messages in memory and resends them on its own; the outbox owns delivery,
  so nothing may be queued behind its back.
- **Full-jitter backoff**, capped: ``uniform(0, min(max, min * 2**attempt))``.
  paho's own backoff has no jitter, so a fleet would reconnect in lockstep
  after a broker restart.
- **The in-flight window is ours**: at most ``mqtt.max_inflight`` QoS 1
  publishes, and never more than the Receive Maximum the broker announced
  in its CONNACK (exceeding it is a protocol error that drops the
  connection; paho 2.2 ignores it). Publishes beyond the window wait here,
  in memory, and fail with NotConnected if the connection goes; paho's own
  limit is off, which also spares it a scan of its queue per PUBACK.
- **Persistent session** (``clean_start=False``, one day's expiry) so QoS 1
  commands sent while the kiosk was briefly away still arrive.
- **Every subscription has a size limit**, checked on the raw payload before
  its handler (or any parser) sees it; an oversized message is logged and
  dropped, and ``on_oversized`` may answer it. The CONNECT also announces a
  Maximum Packet Size (``MAX_PACKET_BYTES``), so an MQTT 5 broker never
  sends a packet bigger than that and it never enters memory at all.
- **The connection task never dies**: whatever fails while building the
  client or connecting (a TLS file missing, DNS, refused, no CONNACK) is one
  log line with its cause and a retry with backoff.
- **Batched socket I/O** (:class:`_BatchedClient`). Stock paho makes one
  ``send()`` per packet, three ``recv()`` calls per PUBACK and builds two
  property objects for every PUBACK; on a two-core Pi that competes for the
  interpreter with the journal's writer thread, and was most of the cost of
  a durable transaction. The subclass reads the socket in 64 KiB chunks,
  sends every queued packet in one ``send()``, and decodes a plain success
  PUBACK without building objects. It overrides three paho internals, so
  setup.cfg pins paho to the exact version they were written for
  (``PAHO_WRITTEN_FOR``) and any other version, or missing internals, falls
  back to stock paho's public API with a logged warning: correct, but at
  ~70 % of the batched rate, below the budget of half raw paho's.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, overload

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig, tls_context
from agent.errors import AgentError, ConfigError, NotConnected
from agent.tasks import spawn
from hal.backoff import backoff_delay

__all__ = ["Uplink", "Message", "Oversized", "ConnectFailed", "backoff_delay", "DEFAULT_MAX_BYTES",
           "MAX_PACKET_BYTES"]

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600
CONNACK_TIMEOUT_S = 15.0
# A subscription that names no limit gets this one.
DEFAULT_MAX_BYTES = 256 * 1024
# Announced in CONNECT: above every per-topic limit (commands.max_size_bytes
# is at most 1 MiB), so a message a little over its limit still reaches us
# and is answered, while a huge one is dropped by the broker.
MAX_PACKET_BYTES = 4 * 1024 * 1024


READ_CHUNK = 65536
# The paho release _BatchedClient's overrides were read against; setup.cfg
# pins exactly this one (tests/test_uplink.py checks the two agree).
PAHO_WRITTEN_FOR = "2.2.0"


class _BatchedClient(paho.Client):
    """paho with batched socket I/O; the MQTT protocol is paho's, unchanged.

    Packets that need work when they are fully written (a QoS 0 PUBLISH
    tells ``on_publish``, a DISCONNECT closes) are never merged, so paho's
    bookkeeping sees exactly what it would have seen.
    """

    _HOOKS = ("_sock_recv", "_sock_close", "_packet_write", "_handle_pubackcomp", "_out_packet",
              "_out_message_mutex", "_do_on_publish", "_in_packet")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    @classmethod
    def supported(cls, version: str | None = None) -> bool:
        """True only on the paho release the overrides were written for, with its internals present."""
        if (version or paho_version()) != PAHO_WRITTEN_FOR:
            return False
        probe = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        return all(hasattr(probe, name) for name in cls._HOOKS)

    def buffered(self) -> bool:
        """Bytes read from the socket but not yet parsed (epoll will not report them)."""
        return self._rpos < len(self._rbuf)

    def _sock_recv(self, bufsize: int) -> bytes:
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
        # Bytes read on a lost connection must never be parsed as the start of the next one.
        self._rbuf = b""
        self._rpos = 0
        super()._sock_close()

    def _packet_write(self) -> MQTTErrorCode:
        out = self._out_packet
        if len(out) > 1 and out[0]["pos"] == 0:
            merged = []
            while out and out[0]["pos"] == 0 and _mergeable(out[0]):
                merged.append(out.popleft())
            if len(merged) > 1:
                data = b"".join(p["packet"] for p in merged)
                out.appendleft({"command": 0, "mid": 0, "qos": 1, "pos": 0, "to_process": len(data),
                                "packet": data, "info": None})
            elif merged:
                out.appendleft(merged[0])
        rc: MQTTErrorCode = super()._packet_write()
        return rc

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        # The common case: a PUBACK without properties (2 to 4 bytes: the
        # packet id, then maybe a reason code and an empty property list).
        reason = _puback_reason(packet[2] if len(packet) > 2 else 0) \
            if cmd == "PUBACK" and 2 <= len(packet) <= 4 and not any(packet[3:]) else None
        if reason is None:
            rc: MQTTErrorCode = super()._handle_pubackcomp(cmd)
            return rc
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                rc = self._do_on_publish(mid, reason, _NO_PROPERTIES)
                return rc
        return MQTTErrorCode.MQTT_ERR_SUCCESS


_PUBLISH, _DISCONNECT = 0x30, 0xE0
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)
_PUBACK_REASONS: dict[int, ReasonCode] = {}


def _puback_reason(code: int) -> ReasonCode | None:
    """A shared ReasonCode per PUBACK code (nobody mutates them); None for a code paho refuses."""
    reason = _PUBACK_REASONS.get(code)
    if reason is None:
        try:
            reason = _PUBACK_REASONS[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
        except Exception:  # noqa: BLE001 - paho's own path reports the bad packet
            return None
    return reason


def _mergeable(packet: Any) -> bool:      # paho's _OutPacket
    kind = packet["command"] & 0xF0
    return not (kind == _DISCONNECT or (kind == _PUBLISH and packet["qos"] == 0))


def paho_version() -> str:
    """The installed paho-mqtt release, as its package metadata says."""
    return importlib.metadata.version("paho-mqtt")


def select_client_class(version: str | None = None) -> type[paho.Client]:
    """The batched client on the paho it was written for; stock paho (public API only) otherwise."""
    if _BatchedClient.supported(version):
        return _BatchedClient
    version = version or paho_version()
    why = (f"paho-mqtt {version} is not {PAHO_WRITTEN_FOR}, the release the batched socket I/O was written for"
           if version != PAHO_WRITTEN_FOR else f"paho-mqtt {version} lacks the internals the batched socket I/O uses")
    log.warning("%s: using stock paho (correct, ~70 %% of the batched durable publish rate)", why)
    return paho.Client


_CLIENT_CLASS: type[paho.Client] = select_client_class()


class Message:
    """An incoming message, as handlers receive it."""

    __slots__ = ("topic", "payload", "qos", "retain", "correlation_data", "response_topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool,
                 correlation_data: bytes | None, response_topic: str | None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.correlation_data = correlation_data
        self.response_topic = response_topic


class Oversized:
    """A message dropped unread because it exceeds its subscription's limit."""

    __slots__ = ("topic", "size", "limit", "correlation_data")

    def __init__(self, topic: str, size: int, limit: int, correlation_data: bytes | None) -> None:
        self.topic = topic
        self.size = size
        self.limit = limit
        self.correlation_data = correlation_data


class ConnectFailed(AgentError):
    """A connection attempt failed after the TCP connect (no CONNACK, or the broker closed it)."""

    code = "agent.uplink.connect_failed"


def describe_failure(exc: BaseException) -> str:
    """One line naming the cause of a failed attempt, without nesting earlier ones."""
    if isinstance(exc, (ConnectFailed, ConfigError)):
        return str(exc)
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.__class__.__name__}: {exc.strerror}"
    return f"{exc.__class__.__name__}: {exc}"


Handler = Callable[[Message], Awaitable[None] | None]
OversizedHandler = Callable[[Oversized], Any]
Outcome = Callable[[int | BaseException], None]
Waiter = asyncio.Future[int] | Outcome


def _resolve(waiter: Waiter, outcome: int | BaseException) -> None:
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        return
    try:
        waiter(outcome)
    except Exception:  # one bad callback must not kill the connection
        log.exception("publish outcome callback %r failed", waiter)


Listener = Callable[[], Any]


class Uplink:
    """Owner of the broker connection. Use from the event loop's thread only."""

    def __init__(self, cfg: MqttConfig, *, will: Callable[[], tuple[str, bytes]] | None = None,
                 batched: bool = True) -> None:
        self.cfg = cfg
        # batched=False forces stock paho (the fall-back path), for benches and tests.
        self._client_class = _CLIENT_CLASS if batched else paho.Client
        self._will = will
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._loop_thread: int | None = None
        self._flush_scheduled = False
        self._stopping = False
        self._session_over: asyncio.Event = asyncio.Event()
        self._pending: dict[int, Waiter] = {}
        self._held: collections.deque[tuple[str, bytes, bool, Properties | None, Waiter]] = collections.deque()
        self.window = cfg.max_inflight
        self._early: dict[int, int] = {}
        self._subs: dict[str, tuple[int, Handler, int, OversizedHandler | None]] = {}
        self._on_connect: list[Listener] = []
        self._on_disconnect: list[Listener] = []
        self.connected = False
        self.connected_at: float | None = None
        self.connects = 0
        self.last_error: str | None = None
        self._attempt_error: str | None = None      # why the current attempt failed, if the broker said
        self.refused: dict[int, int] = {}

    # -- public API -----------------------------------------------------------

    def add_connect_listener(self, cb: Listener) -> None:
        """Call ``cb()`` on the loop after every successful CONNACK."""
        self._on_connect.append(cb)

    def add_disconnect_listener(self, cb: Listener) -> None:
        self._on_disconnect.append(cb)

    def subscribe(self, topic: str, handler: Handler, qos: int = 1, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  on_oversized: OversizedHandler | None = None) -> None:
        """Route messages on ``topic`` (wildcards allowed) to ``handler``; kept across reconnects.

        A payload over ``max_bytes`` never reaches ``handler``: it is logged,
        dropped, and passed to ``on_oversized`` (size and properties only).
        """
        self._subs[topic] = (qos, handler, max_bytes, on_oversized)
        if self.connected and self._client is not None:
            self._client.subscribe(topic, qos=qos)

    def unsubscribe(self, topic: str) -> None:
        """Stop routing ``topic`` and tell the broker (for short-lived subscriptions)."""
        if self._subs.pop(topic, None) is not None and self.connected and self._client is not None:
            self._client.unsubscribe(topic)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="uplink")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.connected:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    @overload
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation_data: bytes | None = None, on_done: None = None) -> asyncio.Future[int]: ...

    @overload
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation_data: bytes | None = None, on_done: Outcome) -> None: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation_data: bytes | None = None, on_done: Outcome | None = None) -> asyncio.Future[int] | None:
        """Send one message; the future gives the PUBACK reason code.

        For QoS 0 it resolves once paho has the message. Raises NotConnected
        (through the future) if the connection is down or drops before the ack.
        With ``on_done``, no future: ``on_done(code or exception)`` is called
        right where the future would have been resolved (the outbox's hot
        path: no loop callback per message).
        """
        assert self._loop is not None, "Uplink.start() first"
        waiter: Waiter = self._loop.create_future() if on_done is None else on_done
        client = self._client
        if not self.connected or client is None:
            _resolve(waiter, NotConnected("not connected to the broker"))
        else:
            props = None
            if correlation_data is not None:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = correlation_data
            if qos > 0 and (self._held or len(self._pending) >= self.window):
                self._held.append((topic, payload, retain, props, waiter))
            else:
                self._send(client, topic, payload, qos, retain, props, waiter)
        return waiter if on_done is None else None  # type: ignore[return-value]

    def _send(self, client: paho.Client, topic: str, payload: bytes, qos: int, retain: bool,
              props: Properties | None, waiter: Waiter) -> None:
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            _resolve(waiter, NotConnected(f"publish failed: {paho.error_string(info.rc)}"))
        elif qos == 0:
            _resolve(waiter, 0)
        else:
            early = self._early.pop(info.mid, None)
            if early is not None:
                _resolve(waiter, early)
            else:
                self._pending[info.mid] = waiter

    def _release_held(self) -> None:
        client = self._client
        while self._held and len(self._pending) < self.window and self.connected and client is not None:
            topic, payload, retain, props, waiter = self._held.popleft()
            if not (isinstance(waiter, asyncio.Future) and waiter.done()):   # one that gave up is not sent
                self._send(client, topic, payload, 1, retain, props, waiter)

    async def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        """Publish ``final`` (the offline state) if connected, then disconnect cleanly."""
        self._stopping = True
        if final is not None and self.connected:
            try:
                await asyncio.wait_for(self.publish(final[0], final[1], qos=1, retain=True), timeout)
            except (TimeoutError, NotConnected) as exc:
                log.warning("offline state not acknowledged: %s", exc)
        client = self._client
        if client is not None and self.connected:
            client.disconnect()
            # Let the loop flush the DISCONNECT before the socket is dropped.
            for _ in range(50):
                if not self.connected:
                    break
                await asyncio.sleep(0.01)
        self._session_over.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - its failures were logged per attempt
                pass
        self._teardown(client)

    # -- connection loop ------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        assert self._loop is not None
        while not self._stopping:
            self._session_over = asyncio.Event()
            self._attempt_error = None
            client: paho.Client | None = None
            self._client = None
            try:
                # Inside the try: a TLS file that is missing today may be
                # there after the next provisioning step; retry, never die.
                client = self._client = self._new_client()
                await self._loop.run_in_executor(None, self._connect_blocking, client)
                try:
                    await asyncio.wait_for(self._wait_connack(), CONNACK_TIMEOUT_S)
                except TimeoutError:
                    raise ConnectFailed(f"TCP connected, but no CONNACK within {CONNACK_TIMEOUT_S:g} s") from None
                attempt = 0
                await self._session_over.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to connect means retry
                if not self._stopping:          # stop() ends an attempt in progress: not a failure
                    self.last_error = describe_failure(exc)
                    log.warning("broker %s:%s unreachable: %s", self.cfg.host, self.cfg.port, self.last_error)
            finally:
                self._teardown(client)
            if self._stopping:
                break
            delay = backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
            attempt += 1
            log.info("reconnecting in %.1fs (attempt %d)", delay, attempt)
            await asyncio.sleep(delay)

    async def _wait_connack(self) -> None:
        while not self.connected:
            if self._session_over.is_set():
                raise ConnectFailed(self._attempt_error or "the broker closed the connection before CONNACK")
            await asyncio.sleep(0.01)

    def _new_client(self) -> paho.Client:
        client = self._client_class(CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                                    protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=False)
        client.max_inflight_messages_set(0)         # the window is ours (see the module docstring)
        client.max_queued_messages_set(0)
        if self.cfg.tls_enabled:
            client.tls_set_context(tls_context(self.cfg))      # ConfigError names the key and the file
        if self._will is not None:
            topic, payload = self._will()
            client.will_set(topic, payload, qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        return client

    def _connect_blocking(self, client: paho.Client) -> None:
        # Runs in an executor: TCP connect and the TLS handshake block.
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.MaximumPacketSize = MAX_PACKET_BYTES
        client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive,
                       clean_start=False, properties=props)

    def _teardown(self, client: paho.Client | None) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if client is not None:
            sock = client.socket()
            if sock is not None and self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
                try:
                    sock.close()
                except OSError:
                    pass
        self._mark_disconnected("connection closed")

    def _mark_disconnected(self, why: str) -> None:
        was = self.connected
        self.connected = False
        pending, self._pending = list(self._pending.values()), {}
        for waiter in pending:
            _resolve(waiter, NotConnected(why))
        self._early.clear()
        while self._held:
            _resolve(self._held.popleft()[-1], NotConnected(why))
        if was:
            for cb in self._on_disconnect:
                self._call(cb)

    # -- socket plumbing (called by paho; may run in the executor thread) ------

    def _threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._threadsafe(self._add_reader, client, sock)

    def _add_reader(self, client: paho.Client, sock: Any) -> None:
        if client is not self._client or sock.fileno() < 0:
            return
        assert self._loop is not None
        self._loop.add_reader(sock, self._on_readable, client)
        self._schedule_misc(client)

    def _on_readable(self, client: paho.Client) -> None:
        client.loop_read()
        # paho stops after a few packets per call; what it left in our read
        # buffer would never wake epoll again.
        if isinstance(client, _BatchedClient) and client.buffered() and client is self._client:
            assert self._loop is not None
            self._loop.call_soon(self._on_readable, client)

    def _socket_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if self._loop is None:
            return
        try:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        except (RuntimeError, ValueError, OSError):
            self._threadsafe(self._remove_fd, sock)

    def _remove_fd(self, sock: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    def _register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if threading.get_ident() != self._loop_thread:
            self._threadsafe(self._add_writer, client, sock)
        elif not self._flush_scheduled:
            # Publishes made in this loop iteration leave in one send at its
            # end; epoll is asked only if the socket's buffer is full.
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        # The connection of the moment (not the one that asked): one flush
        # pending for a closed connection must not swallow the next one's.
        self._flush_scheduled = False
        client = self._client
        sock = client.socket() if client is not None else None
        if client is None or sock is None or sock.fileno() < 0:
            return
        client.loop_write()
        if client.want_write() and client is self._client and sock.fileno() >= 0:
            self._add_writer(client, sock)

    def _add_writer(self, client: paho.Client, sock: Any) -> None:
        if client is self._client and sock.fileno() >= 0:
            assert self._loop is not None
            self._loop.add_writer(sock, client.loop_write)

    def _unregister_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self._drop_writer(sock)
        else:
            self._threadsafe(self._drop_writer, sock)

    def _drop_writer(self, sock: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    def _schedule_misc(self, client: paho.Client) -> None:
        # Keepalive pings and ping timeouts; a second's granularity is plenty
        # for keepalives measured in tens of seconds, and costs ~nothing idle.
        assert self._loop is not None
        if client is not self._client:
            return
        client.loop_misc()
        self._misc = self._loop.call_later(1.0, self._schedule_misc, client)

    # -- paho callbacks (run on the loop thread, inside loop_read/loop_misc) ---

    def _handle_connect(self, client: paho.Client, _u: Any, _flags: Any, reason: Any, props: Any) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self._attempt_error = f"CONNACK refused: {reason}"
            log.error("broker refused the connection: %s", reason)
            self._session_over.set()
            return
        announced = getattr(props, "ReceiveMaximum", None)
        self.window = min(self.cfg.max_inflight, announced or self.cfg.max_inflight)
        self.connected = True
        self.connected_at = time.time()
        self.connects += 1
        self.last_error = None
        log.info("connected to %s:%s", self.cfg.host, self.cfg.port)
        for topic, (qos, *_rest) in self._subs.items():
            client.subscribe(topic, qos=qos)
        for cb in self._on_connect:
            self._call(cb)

    def _handle_disconnect(self, client: paho.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if client is not self._client:
            return
        if not self._stopping:
            log.warning("disconnected from broker: %s", reason)
        self._mark_disconnected(f"disconnected: {reason}")
        self._session_over.set()

    def _handle_publish(self, client: paho.Client, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        code = int(getattr(reason, "value", reason) or 0)
        if code >= 0x80:
            self.refused[code] = self.refused.get(code, 0) + 1
        waiter = self._pending.pop(mid, None)
        if waiter is None:
            self._early[mid] = code
        else:
            _resolve(waiter, code)
        if self._held:
            self._release_held()

    def _handle_message(self, _client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props else None
        size = len(msg.payload)
        message: Message | None = None
        for pattern, (_qos, handler, limit, on_oversized) in self._subs.items():
            if not paho.topic_matches_sub(pattern, msg.topic):
                continue
            if size > limit:
                # The pattern, not the topic: a topic level is untrusted text.
                log.warning("message on %s dropped unread: %d bytes, over the limit of %d", pattern, size, limit)
                if on_oversized is not None:
                    self._call(on_oversized, Oversized(msg.topic, size, limit, correlation))
                continue
            if message is None:
                message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), correlation,
                                  getattr(props, "ResponseTopic", None) if props else None)
            self._call(handler, message)

    def _call(self, cb: Callable[..., Any], *args: Any) -> None:
        try:
            result = cb(*args)
            if asyncio.iscoroutine(result):
                spawn(result, name="uplink-handler")        # referenced until done, a failure logged
        except Exception:  # one bad handler must not kill the connection
            log.exception("uplink listener %r failed", cb)
