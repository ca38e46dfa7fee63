# SPDX-License-Identifier: Apache-2.0
"""A serial device simulated on a pseudo-terminal, with a stable path and faults.

The simulator keeps the pty's master side and serves the device's real wire
protocol on it; the driver opens the slave through pyserial like any tty.
``<dev_dir>/<name>`` is a symlink to the current slave, so an unplug/replug
keeps the URL, as udev's ``/dev/kiosk/<name>`` does on a kiosk.

    sim = PrinterSim(dev_dir=tmp)          # a PtySimulator subclass
    url = sim.start()                      # "<tmp>/printer"
    dev = PrinterDevice("printer", url)
    sim.unplug(); sim.replug()             # the driver sees the device vanish and return
    sim.inject(b"\\xff\\x00")               # garbage on the line
    sim.split(3, delay=0.01)               # replies in 3-byte chunks, 10 ms apart
    sim.silence(True)                      # stop answering

Subclasses implement ``on_data(bytes)`` (called on the simulator's thread)
and answer with ``send(bytes)``; ``control_actions()`` feeds
``kiosk-agent sim DEVICE ACTION``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Action", "PtySimulator", "then"]

log = logging.getLogger(__name__)

Action = Callable[[list[str]], dict[str, Any]]


def then(effect: Callable[[list[str]], object], report: Callable[[], dict[str, Any]]) -> Action:
    """An action that applies ``effect(args)`` and answers ``report()``."""
    def action(args: list[str]) -> dict[str, Any]:
        effect(args)
        return report()
    return action


class PtySimulator:
    """Base of every serial simulator. See the module docstring."""

    name = "device"

    def __init__(self, name: str | None = None, *, dev_dir: str | Path) -> None:
        if name:
            self.name = name
        self.dev_dir = Path(dev_dir)
        self._link = self.dev_dir / self.name
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_path: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Wakes the serving thread's select on unplug/replug/stop, so it can
        # sleep long between bytes (idle CPU) yet follow the line at once.
        self._wake_r = self._wake_w = -1
        self._silent = False
        self._chunk: int | None = None
        self._chunk_delay = 0.0
        self.received = 0         # bytes read from the driver, for tests and benches
        self.sent = 0

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self._link)

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def start(self) -> str:
        """Open the pty, link it, start serving; returns the stable path."""
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        self.replug()
        if self._thread is None:
            if self._wake_r < 0:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
            self._stop.clear()
            self._thread = threading.Thread(target=self._serve, name=f"sim-{self.name}", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stop.set()
        self.unplug()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if not self._thread.is_alive():
                for fd in (self._wake_r, self._wake_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._wake_r = self._wake_w = -1
            self._thread = None

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"w")

    def unplug(self) -> None:
        """Close the pty and remove the link: the driver's reads and writes fail."""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                if self._link.is_symlink():
                    self._link.unlink()
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
            self.slave_path = None
        self._wake()

    def replug(self) -> None:
        """A new pty behind the same link (a no-op when plugged)."""
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            # Raw before anyone opens it: a cooked tty echoes and rewrites CR/LF.
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._master, self._slave = master, slave
            self.slave_path = os.ttyname(slave)
            tmp = self._link.with_name(f".{self.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            os.replace(tmp, self._link)
            self.on_plug()
        self._wake()

    # -- fault injection ---------------------------------------------------------------

    def inject(self, data: bytes) -> None:
        """Put ``data`` on the line now, as line noise would."""
        self._write(data)

    def split(self, chunk: int | None, delay: float = 0.0) -> None:
        """Send replies in ``chunk``-byte pieces ``delay`` seconds apart (None: whole)."""
        self._chunk, self._chunk_delay = chunk, delay

    def silence(self, on: bool = True) -> None:
        """Stop (or resume) answering; what the driver sends is dropped."""
        self._silent = on

    @property
    def silent(self) -> bool:
        return self._silent

    # -- for subclasses ----------------------------------------------------------------

    def on_plug(self) -> None:
        """A fresh line: reset parser state."""

    def on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Answer the driver, honouring ``silence`` and ``split``."""
        if self._silent or not data:
            return
        chunk = self._chunk
        if not chunk:
            self._write(data)
            return
        for i in range(0, len(data), chunk):
            if i and self._chunk_delay:
                time.sleep(self._chunk_delay)
            self._write(data[i:i + chunk])

    def control_actions(self) -> dict[str, Action]:
        """``kiosk-agent sim NAME ACTION [ARGS]`` controls common to every simulator."""
        def line() -> dict[str, Any]:
            return {"plugged": self.plugged, "silent": self._silent}

        return {
            "unplug": then(lambda _a: self.unplug(), line),
            "replug": then(lambda _a: self.replug(), line),
            "silence": then(lambda a: self.silence(not a or a[0] not in ("off", "0", "false")), line),
            "inject": then(lambda a: self.inject(bytes.fromhex("".join(a))), line),
        }

    # -- internals ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 2.0
        while view:
            with self._lock:
                fd = self._master
                if fd is None:
                    return          # unplugged: bytes go nowhere, as on a pulled cable
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return
            self.sent += n
            view = view[n:]
            if view:
                if time.monotonic() > deadline:
                    log.warning("%s sim: driver not reading, %d bytes dropped", self.name, len(view))
                    return
                time.sleep(0.002)

    def _serve(self) -> None:
        wake = self._wake_r
        while not self._stop.is_set():
            fd = self._master
            try:
                ready, _, _ = select.select([wake] + ([fd] if fd is not None else []), [], [], 5.0)
            except (OSError, ValueError):
                self._stop.wait(0.05)       # closed under us by unplug
                continue
            if wake in ready:
                with contextlib.suppress(OSError):
                    os.read(wake, 64)
            if fd is None or fd not in ready:
                continue
            with self._lock:
                if self._master != fd:
                    continue
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        log.warning("%s sim: read failed: %s", self.name, exc)
                    data = b""
            if not data:
                self._stop.wait(0.02)
                continue
            self.received += len(data)
            if self._silent:
                continue
            try:
                self.on_data(data)
            except Exception:
                log.exception("%s sim: handler failed", self.name)
