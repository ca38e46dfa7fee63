# SPDX-License-Identifier: Apache-2.0
"""A serial QR / barcode scanner on a pty.

    sim = ScannerSim(dev_dir=tmp, suffix="CRLF"); url = sim.start()
    sim.scan("134567890123456789")        # sends the code and its suffix
    sim.require_trigger = True            # serial-trigger mode: scans only after SYN T CR

It records the trigger commands it receives (``triggers``), and in trigger
mode drops a scan made while not triggered, as the engine would not read it;
a good read ends the trigger, as on Honeywell engines.
"""

from __future__ import annotations

from typing import Any

from hal.protocols import scanner as codec
from hal.sim.base import Action, PtySimulator

__all__ = ["ScannerSim"]


class ScannerSim(PtySimulator):
    """A scanner engine: trigger on/off, reads with a CR or CR LF suffix."""

    name = "scanner"

    def __init__(self, name: str | None = None, *, dev_dir: Any, suffix: str = "CR",
                 require_trigger: bool = False) -> None:
        super().__init__(name, dev_dir=dev_dir)
        if suffix not in codec.SUFFIXES:
            raise ValueError(f"suffix is one of {', '.join(codec.SUFFIXES)}")
        self.suffix = suffix
        self.require_trigger = require_trigger
        self.triggered = False
        self.triggers: list[bool] = []
        self._buf = b""

    def on_plug(self) -> None:
        self._buf = b""
        self.triggered = False

    def scan(self, code: str) -> bool:
        """Present ``code`` to the scanner; False when it was not triggered."""
        if self.require_trigger and not self.triggered:
            return False
        self.send(codec.encode_scan(code, self.suffix))
        self.triggered = False
        return True

    def on_data(self, data: bytes) -> None:
        self._buf = (self._buf + data)[-64:]
        while True:
            on, off = self._buf.find(codec.TRIGGER_ON), self._buf.find(codec.TRIGGER_OFF)
            hits = [(i, cmd) for i, cmd in ((on, True), (off, False)) if i >= 0]
            if not hits:
                return
            i, cmd = min(hits)
            self.triggered = cmd
            self.triggers.append(cmd)
            self._buf = self._buf[i + 3:]

    def control_actions(self) -> dict[str, Action]:
        actions = super().control_actions()
        actions.update({
            "scan": lambda a: {"sent": self.scan(a[0] if a else "6901234567892")},
            "status": lambda _a: {"plugged": self.plugged, "triggered": self.triggered,
                                  "suffix": self.suffix, "silent": self.silent},
        })
        return actions
