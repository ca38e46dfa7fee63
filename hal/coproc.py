# SPDX-License-Identifier: Apache-2.0
"""The I/O co-processor (RP2040 running ``firmware/``), agent side.

``CoprocDriver`` speaks the link (``firmware/lib/link.py``, the same file
the firmware runs) on an opened port and does nothing else.
``CoprocDevice`` is the supervised peripheral, a ``SerialPeripheral`` like
every serial device (open, reopen with capped jittered backoff, stop); it
heartbeats the firmware's host watchdog, turns inputs into ``DeviceEvent``s,
asserts alarms, drives the LED ring from the agent's mode and pushes signed
firmware images.

    dev = CoprocDevice("/dev/kiosk/coproc", public_keys=[release_key])
    dev.start(emit)                 # events: hello, key, joystick, tamper, env, status
    dev.set_mode("maintenance")     # ring pulses amber
    dev.update_firmware(image, sig, lambda done, total: print(done, total))
    dev.status().alarms             # {"coproc_offline"} while the link is down
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import serial
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from firmware.lib import link as L
from hal.device import (
    DEGRADED,
    OFFLINE,
    OK,
    UNKNOWN,
    DeviceEvent,
    DeviceStatus,
    Emit,
    SelftestResult,
)
from hal.exc import DeviceOffline, DeviceTimeout, HalError, ProtocolError
from hal.serial import wake_reader
from hal.supervisor import SerialPeripheral

__all__ = [
    "MODES",
    "CoprocBusy",
    "CoprocDevice",
    "CoprocDriver",
    "CoprocError",
    "CoprocProtocolError",
    "CoprocRejected",
    "FirmwareImageError",
    "RolledBack",
    "SignatureInvalid",
    "UpdateFailed",
    "build_image",
    "image_files",
    "image_version",
    "shipped_firmware",
    "sign_image",
    "verify_image",
]

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
# The loader and the package glue stay out of the image: the loader is the
# part that must survive a bad update, and is installed once with mpremote.
_NOT_IN_IMAGE = {"main.py", "__init__.py", "lib/__init__.py", "README.md"}
_MAGIC = b"KFW1"
CHUNK = 512

# What the ring shows for each agent mode.
MODES: dict[str, dict[str, Any]] = {
    "in_service": {"p": "solid", "c": [0, 160, 0]},
    "maintenance": {"p": "pulse", "c": [255, 140, 0]},
    "out_of_service": {"p": "blink", "c": [255, 0, 0]},
}


class CoprocError(HalError):
    """The co-processor could not do what was asked."""

    code = "hal.coproc.error"


class CoprocProtocolError(ProtocolError):
    """The firmware sent something the link contract does not allow."""

    code = "hal.coproc.protocol"


class CoprocRejected(CoprocError):
    """The firmware acknowledged a request with an error code."""

    code = "hal.coproc.rejected"

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} rejected by the firmware: {reason}")
        self.reason = reason


class CoprocBusy(CoprocError):
    """Too many requests are waiting for the co-processor."""

    code = "hal.coproc.busy"


class FirmwareImageError(CoprocError):
    """A firmware image is malformed."""

    code = "hal.coproc.image"


class SignatureInvalid(FirmwareImageError):
    """A firmware image's Ed25519 signature does not verify with a trusted key."""

    code = "hal.coproc.signature"


class UpdateFailed(CoprocError):
    """The new firmware did not come up."""

    code = "hal.coproc.update_failed"


class RolledBack(UpdateFailed):
    """The new firmware never confirmed and the device went back to the old one."""

    code = "hal.coproc.rolled_back"


# -- images ------------------------------------------------------------------

def build_image(root: Path | None = None) -> bytes:
    """Pack the firmware files under ``root`` into an update image (deterministic)."""
    root = Path(root or FIRMWARE_DIR)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts)
    out = bytearray(_MAGIC)
    for name in names:
        if name in _NOT_IN_IMAGE:
            continue
        data = (root / name).read_bytes()
        raw = name.encode()
        out += len(raw).to_bytes(2, "big") + raw + len(data).to_bytes(4, "big") + data
    return bytes(out)


def image_files(image: bytes) -> dict[str, bytes]:
    """The files in an image; FirmwareImageError if it is not one."""
    if not image.startswith(_MAGIC):
        raise FirmwareImageError("not a firmware image (bad magic)")
    files: dict[str, bytes] = {}
    i = len(_MAGIC)
    while i < len(image):
        if i + 2 > len(image):
            raise FirmwareImageError("truncated image")
        n = int.from_bytes(image[i:i + 2], "big")
        name = image[i + 2:i + 2 + n].decode("utf-8", "replace")
        i += 2 + n
        if i + 4 > len(image):
            raise FirmwareImageError("truncated image")
        size = int.from_bytes(image[i:i + 4], "big")
        i += 4
        if i + size > len(image):
            raise FirmwareImageError("truncated image")
        files[name] = image[i:i + size]
        i += size
    if "app.py" not in files or "manifest.json" not in files:
        raise FirmwareImageError("image lacks app.py or manifest.json")
    return files


def image_version(image: bytes) -> str:
    import json
    try:
        return str(json.loads(image_files(image)["manifest.json"])["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FirmwareImageError(f"manifest.json: {exc}") from exc


SHIPPED_SIGNATURE = FIRMWARE_DIR / "image.sig"


def shipped_firmware(signature: Path | None = None) -> tuple[bytes, bytes] | None:
    """``(image, signature)`` of the firmware shipped in this package, or None.

    The release signs ``build_image()`` of the exact files it ships and puts
    the 64-byte signature in ``firmware/image.sig``; the image is rebuilt
    here, byte for byte, from the installed files.
    """
    path = Path(signature or SHIPPED_SIGNATURE)
    if not path.exists():
        return None
    return build_image(), path.read_bytes()


def sign_image(image: bytes, key: Ed25519PrivateKey) -> bytes:
    """Release tooling: the detached Ed25519 signature of ``image``."""
    return key.sign(image)


def verify_image(image: bytes, signature: bytes, public_keys: Iterable[bytes]) -> None:
    """Raise SignatureInvalid unless one of the raw 32-byte keys verifies ``signature``."""
    for raw in public_keys:
        try:
            Ed25519PublicKey.from_public_bytes(bytes(raw)).verify(bytes(signature), bytes(image))
            return
        except (InvalidSignature, ValueError):
            continue
    raise SignatureInvalid("firmware image signature does not verify with any trusted key")


# -- the driver ----------------------------------------------------------------

Handler = Callable[[int, int, bytes], "str | None"]


class Pending:
    """One request in flight: ``event`` is set once ``ok``/``err`` are known."""

    __slots__ = ("err", "event", "ok", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.event = threading.Event()
        self.ok = False
        self.err: str | None = None


class CoprocDriver:
    """The link on an opened port: framing, acks, retransmission. No threads.

    ``handler(mtype, seq, payload)`` handles each new request from the
    firmware and returns None or an error code for its ack.

        drv = CoprocDriver(open_port(url, timeout=0.1), handler)
        seq = drv.send(L.HEARTBEAT, {})
        while True:
            drv.pump()
    """

    def __init__(self, port: serial.Serial, handler: Handler, *, retry_ms: int = 250,
                 retries: int = 8, queue: int = 64) -> None:
        self.port = port
        self.handler = handler
        self.link = L.Link(queue=queue, retry_ms=retry_ms, retries=retries)
        self.lock = threading.RLock()
        self._waiters: dict[int, Pending] = {}
        self.link.on_result = self._on_result
        self.last_rx = 0.0

    def _on_result(self, seq: int, mtype: int, ok: bool, err: str | None) -> None:
        pending = self._waiters.pop(seq, None)
        if pending is not None:
            pending.ok, pending.err = ok, err
            pending.event.set()

    def send(self, mtype: int, obj: dict[str, Any] | bytes) -> Pending:
        """Queue a request; ``Pending.event`` is set when it is acked or fails."""
        payload = obj if isinstance(obj, bytes) else L.dumps(obj)
        with self.lock:
            try:
                seq = self.link.send(mtype, payload)
            except L.LinkBusy as exc:
                raise CoprocBusy(f"{L.NAMES.get(mtype, mtype)}: {exc}") from exc
            pending = self._waiters[seq] = Pending(seq)
        wake_reader(self.port)  # so the frame goes out now, not at the read timeout
        return pending

    def request(self, mtype: int, obj: dict[str, Any] | bytes, what: str, timeout: float = 15.0) -> None:
        """Send and wait for the ack; raise DeviceTimeout or CoprocRejected."""
        pending = self.send(mtype, obj)
        if not pending.event.wait(timeout):
            raise DeviceTimeout(f"{what}: no acknowledgement in {timeout}s")
        if not pending.ok:
            if pending.err in ("timeout", "reset"):
                raise DeviceTimeout(f"{what}: not acknowledged ({pending.err})")
            raise CoprocRejected(what, str(pending.err))

    def pump(self) -> None:
        """Read what is there (up to the port timeout), dispatch, write. May raise SerialException."""
        data = self.port.read(max(1, self.port.in_waiting))
        with self.lock:
            now = L.ticks_ms()
            if data:
                before = self.link.decoder.frames
                for mtype, seq, payload in self.link.feed(data, now):
                    try:
                        err = self.handler(mtype, seq, payload)
                    except CoprocProtocolError as exc:
                        log.warning("coproc: %s", exc)
                        err = "payload"
                    self.link.ack(seq, err)
                if self.link.decoder.frames != before:
                    self.last_rx = time.monotonic()
            out = self.link.poll(now)
        if out:
            self.port.write(out)

    def close(self) -> None:
        with self.lock:
            self.link.reset_tx()
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass


# -- the supervised peripheral ---------------------------------------------------

SELFTEST_HELLO_S = 15.0
# How long the reader may block. With a request or retransmission pending it
# wakes often enough for the link's 250 ms retry timer; idle it sleeps until
# the next heartbeat is due (idle CPU budget), at most IDLE_WAIT_S so the
# offline check and a stop() that lost its wake-up still come round.
BUSY_WAIT_S = 0.05
IDLE_WAIT_S = 1.0


class CoprocDevice(SerialPeripheral):
    """The co-processor as the agent supervises it. See the module docstring.

    The supervision (thread, open, reopen with backoff, wake on stop) is
    ``SerialPeripheral``'s; this class attaches a ``CoprocDriver`` and runs
    one step of the link at a time. Its status is computed, not set: the link
    is up while frames keep arriving.

    Args:
        url: port URL for ``hal.serial.open_port`` (``/dev/kiosk/coproc``, a pty, ``socket://``).
        heartbeat_s: how often the host watchdog is fed.
        offline_after_s: no frame from the firmware for this long is ``coproc_offline``.
        temp_high_c: enclosure temperature above which ``temp_high`` is asserted.
        watchdog: host watchdog policy sent at every hello (``timeout_s``, ``grace_s``,
            ``max_per_hour``, ``pulse_ms``, ``enabled``); None leaves the firmware's own.
        public_keys: raw Ed25519 keys an image must be signed by to be pushed.
        firmware: ``(image, signature)`` to push at hello when the versions differ.
        reconnect_min_s, reconnect_max_s: reopen delays; they reset only after a hello.
        alive: heartbeats are sent only while this returns True (wire it to the
            agent's event loop, so a hung agent gets power-cycled).
    """

    kind = "coproc"
    offline_alarm = "coproc_offline"
    # Near-full jitter, so a fleet does not retry in lockstep; the tenth of
    # the cap kept as a floor means a dead link is never a busy loop.
    backoff_spread = 0.9
    # A firmware update in flight may hold the reader for a moment.
    stop_timeout_s = 5.0

    def __init__(self, url: str, *, name: str = "coproc", baudrate: int = 115200,
                 heartbeat_s: float = 1.0, offline_after_s: float = 4.0, temp_high_c: float = 50.0,
                 watchdog: dict[str, int] | None = None, public_keys: Iterable[bytes] = (),
                 firmware: tuple[bytes, bytes] | None = None, confirm_s: int = 60,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 alive: Callable[[], bool] | None = None) -> None:
        super().__init__(name, url, baudrate=baudrate, timeout=BUSY_WAIT_S,
                         backoff_min_s=reconnect_min_s, backoff_max_s=reconnect_max_s)
        self.heartbeat_s = heartbeat_s
        self.offline_after_s = offline_after_s
        self.temp_high_c = temp_high_c
        self.watchdog = dict(watchdog) if watchdog else None
        self.public_keys = [bytes(k) for k in public_keys]
        self.firmware = firmware
        self.confirm_s = confirm_s
        self.alive = alive
        self.mode = "out_of_service"
        self._drv: CoprocDriver | None = None
        self._cond = threading.Condition()
        self._hello: dict[str, Any] | None = None
        self._hellos = 0
        self._hello_at = 0.0
        self._seen_hello = False        # on this connection
        self._next_beat = 0.0
        self._beat: Pending | None = None
        self._fw_beat: dict[str, Any] = {}
        self._tamper: bool | None = None
        self._env: dict[str, float] = {}
        self._temp_high = False
        self._connects = 0
        self._detail = "not started"
        self._started_at = 0.0
        self._last_status: DeviceStatus | None = None
        self._update: dict[str, Any] | None = None
        self._auto_tried: set[str] = set()
        self._counters: dict[str, int] = {}
        self.last_heartbeat = 0.0   # wall clock of the last heartbeat queued

    # -- lifecycle (the loop is SerialPeripheral's) ------------------------------
    def start(self, emit: Emit) -> None:
        if self._thread is not None:
            return
        self._detail = "connecting"
        self._started_at = time.monotonic()
        super().start(emit)

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.status().info}

    def _attach(self, port: serial.Serial) -> None:
        self._connects += 1
        drv = CoprocDriver(port, self._handle)
        drv.last_rx = time.monotonic()
        self._seen_hello = False
        self._drv = drv
        drv.send(L.HELLO, {"agent": "kiosk-agent"})
        self._next_beat = time.monotonic()
        self._beat = None

    def _step(self) -> None:
        drv = self._drv
        assert drv is not None
        drv.pump()
        now = time.monotonic()
        beat = self._beat
        if now >= self._next_beat and (beat is None or beat.event.is_set()):
            self._next_beat = now + self.heartbeat_s
            if self.alive is None or self.alive():
                try:
                    self._beat = drv.send(L.HEARTBEAT, {})
                    self.last_heartbeat = time.time()
                except CoprocBusy:
                    self._beat = None   # the firmware is not draining; offline shows it
        self._counters = drv.link.counters()
        self._publish()
        self._set_read_wait(drv, self._next_beat - time.monotonic())

    def _proven(self) -> bool:
        # An open port proves nothing: only a hello resets the reopen backoff.
        return self._seen_hello

    def _detach(self) -> None:
        drv = self._drv
        if drv is not None:
            self._counters = drv.link.counters()
            self._drv = None
            drv.close()
        with self._cond:
            self._hello = None
            self._cond.notify_all()
        self._publish()

    @staticmethod
    def _set_read_wait(drv: CoprocDriver, until_beat: float) -> None:
        wait = BUSY_WAIT_S if drv.link.pending() else min(max(until_beat, BUSY_WAIT_S), IDLE_WAIT_S)
        port = drv.port
        # Each change is a tcsetattr on a tty: skip the ones that change nothing.
        if port.timeout is None or abs(port.timeout - wait) > 0.02:
            port.timeout = wait

    def _offline(self, exc: BaseException) -> None:
        if isinstance(exc, HalError):
            self._detail = str(exc)             # the port would not open, or the firmware refused
        elif isinstance(exc, (serial.SerialException, OSError)):
            self._detail = f"link lost: {exc}"
        else:
            self._detail = f"reader failed: {exc}"
        self._publish()

    # -- messages from the firmware ---------------------------------------------
    def _handle(self, mtype: int, seq: int, payload: bytes) -> str | None:
        try:
            msg = L.loads(payload)
        except L.LinkError as exc:
            raise CoprocProtocolError(f"{L.NAMES.get(mtype, mtype)}: {exc}") from exc
        if mtype == L.HELLO:
            self._on_hello(msg)
        elif mtype == L.HEARTBEAT:
            self._fw_beat = msg
        elif mtype == L.INPUT:
            self._on_input(msg)
        elif mtype == L.ENV:
            self._on_env(msg)
        elif mtype == L.LOG:
            log.info("coproc: %s", msg.get("m"))
            self._emit(DeviceEvent(self.name, "log", {"level": str(msg.get("l", "info")),
                                                      "message": str(msg.get("m", ""))}))
        elif mtype == L.ERROR:
            log.warning("coproc error %s: %s", msg.get("code"), msg.get("m"))
        else:
            return "unknown_type"
        return None

    def _on_hello(self, msg: dict[str, Any]) -> None:
        self._seen_hello = True
        with self._cond:
            self._hello = msg
            self._hellos += 1
            self._hello_at = time.monotonic()
            self._cond.notify_all()
        self._detail = ""
        data = {"version": str(msg.get("v", "")), "slot": msg.get("slot"), "trial": bool(msg.get("trial")),
                "reset_cause": msg.get("rc"), "host_watchdog": msg.get("host", {})}
        self._emit(DeviceEvent(self.name, "hello", data))
        drv = self._drv
        if drv is None:
            return
        # Runs on the reader thread: queue, never wait.
        try:
            if self.watchdog:
                drv.send(L.WDT_POLICY, self.watchdog)
            drv.send(L.SET_OUTPUT, {"led": MODES[self.mode]})
        except CoprocBusy as exc:
            log.warning("coproc: %s", exc)
        if self.firmware is not None and not msg.get("trial"):
            want = image_version(self.firmware[0])
            if want != data["version"] and want not in self._auto_tried and self._update is None:
                self._auto_tried.add(want)
                threading.Thread(target=self._auto_update, name=f"coproc-{self.name}-update",
                                 daemon=True).start()

    def _auto_update(self) -> None:
        assert self.firmware is not None
        try:
            self.update_firmware(*self.firmware)
        except HalError as exc:
            log.warning("coproc: firmware update failed: %s (%s)", exc, exc.code)

    def _on_input(self, msg: dict[str, Any]) -> None:
        kind, value = msg.get("k"), msg.get("v")
        if kind == "key":
            self._emit(DeviceEvent(self.name, "key", {"key": str(value)}))
        elif kind == "joy":
            self._emit(DeviceEvent(self.name, "joystick", {"direction": str(value)}))
        elif kind == "tamper":
            self._tamper = bool(value)
            self._emit(DeviceEvent(self.name, "tamper", {"open": self._tamper}))
            self._publish()
        else:
            raise CoprocProtocolError(f"unknown input kind {kind!r}")

    def _on_env(self, msg: dict[str, Any]) -> None:
        try:
            temp, hum = float(msg["t"]), float(msg["h"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CoprocProtocolError(f"env: {exc}") from exc
        self._env = {"temp_c": temp, "humidity": hum}
        # 1 degree of hysteresis so a reading hovering at the limit does not flap.
        if temp > self.temp_high_c:
            self._temp_high = True
        elif temp < self.temp_high_c - 1.0:
            self._temp_high = False
        self._emit(DeviceEvent(self.name, "env", dict(self._env)))
        self._publish()

    # -- status ---------------------------------------------------------------------
    def _online(self) -> bool:
        drv = self._drv
        return (drv is not None and self._hello is not None
                and time.monotonic() - drv.last_rx < self.offline_after_s)

    def status(self) -> DeviceStatus:
        hello = self._hello or {}
        info: dict[str, Any] = {"link": dict(self._counters), "connects": self._connects}
        if hello:
            info.update({"firmware": str(hello.get("v", "")), "slot": hello.get("slot"),
                         "reset_cause": hello.get("rc"), "host_watchdog": hello.get("host", {}),
                         "uptime_s": round(hello.get("up", 0) / 1000 + time.monotonic() - self._hello_at, 1)})
        if self._fw_beat.get("link"):
            info["fw_link"] = self._fw_beat["link"]
        if self._env:
            info.update(self._env)
        if self._tamper is not None:
            info["tamper"] = self._tamper
        if self._update is not None:
            info["update"] = dict(self._update)
        alarms = set()
        if self._tamper:
            alarms.add("tamper")
        if self._temp_high:
            alarms.add("temp_high")
        if self._drv is None and self._thread is None and self._detail == "not started":
            return DeviceStatus(UNKNOWN, frozenset(alarms), None, self._detail, info)
        if self._hello is None and time.monotonic() - self._started_at < self.offline_after_s:
            # The first hello takes a moment after every start: not an outage to page anyone about.
            return DeviceStatus(UNKNOWN, frozenset(alarms), None, self._detail, info)
        if not self._online():
            alarms.add("coproc_offline")
            return DeviceStatus(OFFLINE, frozenset(alarms), DeviceOffline.code,
                                self._detail or "no frames from the co-processor", info)
        return DeviceStatus(DEGRADED if alarms else OK, frozenset(alarms), None, "", info)

    def _publish(self) -> None:
        st = self.status()
        last = self._last_status
        if last is None or (st.state, st.alarms) != (last.state, last.alarms):
            self._last_status = st
            self._emit(DeviceEvent(self.name, "status", st.as_dict()))

    # -- commands ---------------------------------------------------------------------
    def _driver(self) -> CoprocDriver:
        drv = self._drv
        if drv is None or not self._online():
            raise DeviceOffline(f"{self.name}: co-processor is offline")
        return drv

    def set_mode(self, mode: str) -> None:
        """Show the agent's mode on the ring; kept and re-sent at every hello."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        self.mode = mode
        drv = self._drv
        if drv is not None and self._hello is not None:
            try:
                drv.send(L.SET_OUTPUT, {"led": MODES[mode]})
            except CoprocBusy:
                pass    # sent again at the next hello

    def set_led(self, mode_or_pattern: str | dict[str, Any], timeout: float = 10.0) -> None:
        """A mode name, or ``{"p": "blink", "c": [r, g, b]}``; waits for the ack."""
        led = MODES[mode_or_pattern] if isinstance(mode_or_pattern, str) else dict(mode_or_pattern)
        self._driver().request(L.SET_OUTPUT, {"led": led}, "set_led", timeout)

    def set_relay(self, n: int, on: bool, timeout: float = 10.0) -> None:
        """Switch relay ``n`` (1 or 2; relay 0 is the watchdog's power relay)."""
        self._driver().request(L.SET_OUTPUT, {"relay": int(n), "on": 1 if on else 0}, "set_relay", timeout)

    def set_watchdog(self, policy: dict[str, int], timeout: float = 10.0) -> None:
        """Change the host watchdog policy now (and at every later hello)."""
        self.watchdog = dict(policy)
        self._driver().request(L.WDT_POLICY, self.watchdog, "set_watchdog", timeout)

    def wait_hello(self, timeout: float, after: int = 0) -> dict[str, Any] | None:
        """Block until the ``after``-th+1 hello; return it (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._hellos <= after or self._hello is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return dict(self._hello)

    def update_firmware(self, image: bytes, signature: bytes,
                        progress_cb: Callable[[int, int], None] | None = None,
                        *, confirm_s: int | None = None, boot_timeout_s: float = 30.0) -> str:
        """Verify, push and boot ``image``; return the version that said hello.

        Raises SignatureInvalid before anything is sent when no trusted key
        verifies the image, DeviceOffline, DeviceTimeout or CoprocRejected when
        the transfer fails (the old firmware keeps running), and RolledBack
        when the new firmware never confirmed.
        """
        verify_image(image, signature, self.public_keys)
        version = image_version(image)
        confirm = int(confirm_s or self.confirm_s)
        drv = self._driver()
        total = len(image)
        self._update = {"version": version, "sent": 0, "size": total}
        try:
            drv.request(L.FW_BEGIN, {"size": total, "sha256": hashlib.sha256(image).hexdigest(),
                                     "version": version, "confirm_s": confirm}, "fw_begin")
            for offset in range(0, total, CHUNK):
                drv.request(L.FW_CHUNK, L.chunk_payload(offset, image[offset:offset + CHUNK]), "fw_chunk")
                sent = min(total, offset + CHUNK)
                self._update["sent"] = sent
                if progress_cb is not None:
                    progress_cb(sent, total)
            hellos = self._hellos
            drv.request(L.FW_COMMIT, {}, "fw_commit")
            # The trial image must say hello; if it does not, the loader rolls
            # back after confirm_s and the old one says hello instead.
            deadline = time.monotonic() + confirm + boot_timeout_s
            while True:
                hello = self.wait_hello(max(0.0, deadline - time.monotonic()), hellos)
                if hello is None:
                    raise UpdateFailed(f"no hello from the co-processor after installing {version}")
                hellos = self._hellos
                if str(hello.get("v")) == version:
                    return version
                if hello.get("rc") == "rollback":
                    raise RolledBack(f"firmware {version} did not confirm; back on {hello.get('v')}")
        finally:
            self._update = None

    def selftest(self) -> SelftestResult:
        # A co-processor that was just (re)connected says hello within a
        # boot; judging it before that would fail a healthy board.
        if self._hello is None:
            self.wait_hello(SELFTEST_HELLO_S)
        st = self.status()
        passed = st.state in (OK, DEGRADED)
        return SelftestResult(self.name, passed, st.detail or st.state,
                              {"firmware": st.info.get("firmware"), "alarms": sorted(st.alarms)})
