# SPDX-License-Identifier: Apache-2.0
"""Hot-plug supervision shared by every serial peripheral.

``SerialPeripheral`` owns one thread per device: it opens the configured URL
with ``hal.serial.open_port`` (the only place ports are opened), hands the
port to the subclass (``_attach``: build the driver, probe), then calls
``_step`` until the port fails. A port that vanishes (pty closed, USB
unplugged) makes reads and writes raise; the device then goes ``offline``
with its offline alarm and reopening is retried with capped, jittered
backoff. The alarm clears when ``_attach`` succeeds again.

    class Thing(SerialPeripheral):
        offline_alarm = "thing_offline"
        def _attach(self, port): self.driver = ThingDriver(port); self._set(OK)
        def _step(self): self._idle(1.0)

    dev = Thing("thing", "/dev/kiosk/thing", baudrate=9600)
    dev.start(print); ...; dev.stop()

Calls from other threads (print a receipt, trigger the scanner) go through
``with self._use() as port:``, which serialises them with the device thread
and turns a vanished port into ``DeviceOffline``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import serial

from hal.backoff import backoff_delay
from hal.device import OFFLINE, UNKNOWN, DeviceEvent, DeviceStatus, Emit, Peripheral
from hal.exc import DeviceOffline, HalError
from hal.serial import open_port, wake_reader

__all__ = ["SerialPeripheral", "backoff_delay"]

log = logging.getLogger(__name__)


class SerialPeripheral(Peripheral):
    """A supervised serial device; subclasses implement ``_attach`` and ``_step``.

    Args:
        name: device name (``"printer"``), used in events and alarms.
        url: anything ``open_port`` takes (``/dev/kiosk/printer``, a pty link, ``socket://``).
        baudrate: line speed.
        timeout: the port's read timeout; also how often an idle device checks its port.
        backoff_min_s, backoff_max_s: reopen delays (the cap keeps a replug noticed within seconds).
    """

    kind = "serial"
    offline_alarm = "device_offline"
    # Reopen delays are jittered in [50 %, 100 %] of the cap: never zero, never a busy loop.
    backoff_spread = 0.5
    stop_timeout_s = 3.0

    def __init__(self, name: str, url: str, *, baudrate: int, timeout: float = 0.2,
                 backoff_min_s: float = 0.25, backoff_max_s: float = 2.0) -> None:
        self.name = name
        self.url = url
        self.baudrate = baudrate
        self.timeout = timeout
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._emit: Emit = lambda _e: None
        self._status = DeviceStatus(UNKNOWN, frozenset({self.offline_alarm}), detail="not started")
        self._info: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._waiters = 0
        self._waiters_lock = threading.Lock()
        self._port: serial.Serial | None = None
        self._stop = threading.Event()
        self._broken = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconnects = 0

    # -- Peripheral --------------------------------------------------------------------

    def start(self, emit: Emit) -> None:
        if self._thread is not None:
            return
        self._emit = emit
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"hal-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        port = self._port
        if port is not None:
            wake_reader(port)
        if self._thread is not None:
            self._thread.join(timeout=self.stop_timeout_s)
            self._thread = None

    def status(self) -> DeviceStatus:
        return self._status

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._info}

    # -- for subclasses ------------------------------------------------------------------

    def _attach(self, port: serial.Serial) -> None:
        """Build the driver on ``port`` and probe it; raise to reject the port."""
        raise NotImplementedError

    def _detach(self) -> None:
        """The port is gone (already closed); drop the driver."""

    def _proven(self) -> bool:
        """Whether this connection showed the device is there, so the reopen backoff starts over.

        A successful ``_attach`` (the probe answered) is enough unless a subclass says otherwise.
        """
        return True

    def _step(self) -> None:
        """One unit of work; return within about a second. Raise when the port fails."""
        self._idle(1.0)

    def _unsolicited(self, data: bytes) -> None:
        """Bytes that arrived while idle (override to use them)."""
        log.debug("%s: %d unsolicited bytes ignored", self.name, len(data))

    def _set(self, state: str, alarms: set[str] | frozenset[str] = frozenset(), *, code: str | None = None,
             detail: str = "") -> None:
        """Publish a new status; emits a ``status`` event when state, alarms or code change."""
        new = DeviceStatus(state, frozenset(alarms), code, detail, dict(self._info))
        old, self._status = self._status, new
        if (old.state, old.alarms, old.code) != (new.state, new.alarms, new.code):
            level = logging.INFO if not new.alarms else logging.WARNING
            log.log(level, "%s: %s%s%s", self.name, state, f" {sorted(new.alarms)}" if new.alarms else "",
                    f" ({detail})" if detail else "")
            self._emit_event("status", new.as_dict())

    def _emit_event(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self._emit(DeviceEvent(self.name, kind, data))
        except Exception:
            log.exception("%s: event listener failed", self.name)

    @contextlib.contextmanager
    def _use(self) -> Iterator[serial.Serial]:
        """Exclusive use of the open port from any thread; DeviceOffline when there is none."""
        with self._waiters_lock:
            self._waiters += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiters_lock:
                self._waiters -= 1
        try:
            port = self._port
            if port is None or self._broken.is_set():
                detail = self._status.detail
                raise DeviceOffline(f"{self.name} is offline" + (f" ({detail})" if detail else ""))
            try:
                yield port
            except (serial.SerialException, OSError) as exc:
                if isinstance(exc, HalError):
                    raise
                self._broken.set()   # the device thread reopens
                raise DeviceOffline(f"{self.name}: port failed: {exc}") from exc
        finally:
            self._lock.release()

    def _idle(self, seconds: float) -> None:
        """Wait, watching the port so that an unplug is noticed at once.

        On a POSIX tty we select on its descriptor without holding the port:
        a hang-up (pty closed, USB gone) makes it readable and the read then
        fails; otherwise the thread sleeps until data or the deadline (idle
        CPU budget). Other ports fall back to reads of ``timeout`` each.
        """
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and not self._broken.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            port = self._port
            fd = getattr(port, "fd", None)
            if isinstance(fd, int):
                try:
                    ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
                except (OSError, ValueError):
                    ready = [fd]          # closed under us: let the read below report it
                if not ready:
                    continue
            while self._waiters and not self._stop.is_set():
                time.sleep(0.005)     # let a caller from another thread have the port
            with self._use() as port:
                data = port.read(max(1, port.in_waiting))
            if data:
                self._unsolicited(data)

    def _running(self) -> bool:
        return not self._stop.is_set() and not self._broken.is_set()

    # -- the supervision loop ------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                port = open_port(self.url, baudrate=self.baudrate, timeout=self.timeout)
            except HalError as exc:
                self._offline(exc)
            else:
                attempt = self._serve(port, attempt)
            if not self._stop.is_set():
                self._stop.wait(backoff_delay(attempt, self.backoff_min_s, self.backoff_max_s,
                                              spread=self.backoff_spread))
                attempt += 1

    def _serve(self, port: serial.Serial, attempt: int) -> int:
        self._broken.clear()
        with self._lock:
            self._port = port
        attached = False
        try:
            self._attach(port)
            attached = True
            if attempt:
                self.reconnects += 1
            while self._running():
                self._step()
        except DeviceOffline as exc:
            self._offline(exc)
        except (serial.SerialException, OSError, HalError) as exc:
            self._offline(exc)
        except Exception as exc:
            log.exception("%s: driver failed", self.name)
            self._offline(exc)
        finally:
            if attached and self._proven():
                attempt = 0
            with self._lock:
                self._port = None
                with contextlib.suppress(Exception):
                    port.close()
            self._detach()
        return attempt

    def _offline(self, exc: BaseException) -> None:
        if self._stop.is_set():
            return
        code = getattr(exc, "code", DeviceOffline.code)
        text = str(exc) if self.url in str(exc) else f"{self.url}: {exc}"
        self._set(OFFLINE, {self.offline_alarm}, code=str(code), detail=text[:200])
