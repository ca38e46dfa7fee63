# SPDX-License-Identifier: Apache-2.0
"""Helpers for the co-processor tests: a rig of firmware process, cable and driver."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosktest import wait_until as _wait_until

from hal.coproc import CoprocDevice
from hal.device import DeviceEvent
from hal.sim.coproc import MACHINE_DIR, FirmwareRunner


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """kiosktest.wait_until with the longer default a booting MicroPython needs."""
    return _wait_until(predicate, timeout, interval, message)


class Rig:
    """One simulated Pico (flash dir + micropython process) and agent-side drivers."""

    def __init__(self, tmp: Path, micropython: str) -> None:
        self.tmp = tmp
        self.runner = FirmwareRunner(tmp / "flash", machine_dir=MACHINE_DIR, io_dir=tmp / "io",
                                     micropython=micropython)
        self.events: list[DeviceEvent] = []
        self._lock = threading.Lock()
        self.devices: list[CoprocDevice] = []

    @property
    def flash(self) -> Path:
        return self.runner.flash

    def boot(self, image: bytes | None = None, wdt: dict[str, int] | None = None) -> None:
        self.runner.install(image)
        if wdt is not None:
            (self.flash / "wdt.json").write_text(json.dumps(wdt))
        self.runner.start()

    def emit(self, ev: DeviceEvent) -> None:
        with self._lock:
            self.events.append(ev)

    def device(self, **kwargs: Any) -> CoprocDevice:
        kwargs.setdefault("heartbeat_s", 0.5)
        kwargs.setdefault("reconnect_min_s", 0.1)
        kwargs.setdefault("reconnect_max_s", 1.0)
        dev = CoprocDevice(self.runner.agent_path, **kwargs)
        dev.start(self.emit)
        self.devices.append(dev)
        return dev

    def of_kind(self, kind: str) -> list[DeviceEvent]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def wait_event(self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda d: True,
                   timeout: float = 20.0) -> DeviceEvent:
        return wait_until(lambda: next((e for e in self.of_kind(kind) if pred(e.data)), None),
                          timeout, message=f"{kind} event")

    def output_lines(self, *words: str) -> list[int]:
        """Stamps (ns) of stand-in output lines starting with ``words``."""
        n = len(words)
        return [stamp for stamp, w in self.runner.outputs() if tuple(w[:n]) == words]

    def boot_record(self) -> dict[str, Any]:
        return json.loads((self.flash / "boot.json").read_text())

    def close(self) -> None:
        for dev in self.devices:
            dev.stop()
        self.runner.close()
