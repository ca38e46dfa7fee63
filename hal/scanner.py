# SPDX-License-Identifier: Apache-2.0
"""QR / barcode scanner on a serial line: driver and supervised device.

``Scanner`` takes an opened port: ``trigger(True/False)`` sends ``SYN T CR`` /
``SYN U CR``, ``read_scans()`` returns the reads that arrived, split at CR or
CR LF by ``hal.protocols.scanner``.

    scanner = Scanner(open_port("/dev/kiosk/scanner", baudrate=115200))
    scanner.trigger(True)
    for scan in scanner.read_scans(timeout=5.0): print(scan)   # Scan('13**********6789', payment='wechat')

``ScannerDevice`` emits ``scan`` events with ``{"code": str, "payment":
"wechat" | "alipay" | None}``. Payment codes are bearer tokens: logs carry
only ``mask_code`` of them, and the code is a ``MaskedCode`` (a ``str``
whose ``repr`` is masked) so a logged event does not leak it either. The
alarm is ``scanner_offline``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import serial

from hal.device import OK, SelftestResult
from hal.exc import HalError
from hal.protocols import scanner as codec
from hal.protocols.scanner import Scan, ScannerProtocolError
from hal.supervisor import SerialPeripheral

__all__ = ["Scanner", "ScannerDevice"]

log = logging.getLogger(__name__)


class Scanner:
    """A serial scanner over an opened port."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.decoder = codec.LineDecoder()

    def trigger(self, on: bool) -> None:
        """Start (``SYN T CR``) or stop (``SYN U CR``) a scan in serial-trigger mode."""
        self.port.write(codec.TRIGGER_ON if on else codec.TRIGGER_OFF)
        self.port.flush()

    def feed(self, data: bytes) -> list[Scan | ScannerProtocolError]:
        return [Scan.of(item) if isinstance(item, str) else item for item in self.decoder.feed(data)]

    def read_scans(self, timeout: float = 0.0) -> list[Scan | ScannerProtocolError]:
        """What arrived, waiting up to ``timeout`` for at least one complete read."""
        deadline = time.monotonic() + timeout
        out: list[Scan | ScannerProtocolError] = []
        while True:
            data = self.port.read(max(1, self.port.in_waiting))
            out += self.feed(data)
            if out or time.monotonic() >= deadline:
                return out


class ScannerDevice(SerialPeripheral):
    """The supervised scanner.

        dev = ScannerDevice("scanner", "/dev/kiosk/scanner", baudrate=115200)
        dev.start(emit)           # DeviceEvent("scanner", "scan", {"code": ..., "payment": "wechat"})
        dev.trigger(True)         # for scanners in serial-trigger mode
    """

    kind = "scanner"
    offline_alarm = "scanner_offline"

    def __init__(self, name: str = "scanner", url: str = "/dev/kiosk/scanner", *, baudrate: int = 115200,
                 **kwargs: Any) -> None:
        kwargs.pop("poll_interval_s", None)     # reads are pushed; nothing to poll
        super().__init__(name, url, baudrate=baudrate, **kwargs)
        self.driver: Scanner | None = None
        self.scans = 0

    def _attach(self, port: serial.Serial) -> None:
        self.driver = Scanner(port)
        self._info = {"model": "serial scanner", "trigger": "SYN T/U CR"}
        # A scanner has no status query: an open, writable port is all we can know.
        self._set(OK)

    def _detach(self) -> None:
        self.driver = None

    def _step(self) -> None:
        self._idle(1.0)

    def _unsolicited(self, data: bytes) -> None:
        if self.driver is None:
            return
        for item in self.driver.feed(data):
            if isinstance(item, ScannerProtocolError):
                log.warning("%s: unreadable scan (%s)", self.name, item)
                self._emit_event("scan_error", {"code": item.code})
                continue
            self.scans += 1
            log.info("%s: scan %s%s", self.name, codec.mask_code(item.code),
                     f" ({item.payment} payment code)" if item.payment else "")
            self._emit_event("scan", {"code": item.code, "payment": item.payment})

    def trigger(self, on: bool) -> None:
        with self._use():
            assert self.driver is not None
            self.driver.trigger(on)

    def selftest(self) -> SelftestResult:
        try:
            self.trigger(True)
            self.trigger(False)
        except HalError as exc:
            return SelftestResult(self.name, False, f"{exc.code}: {exc}")
        return SelftestResult(self.name, True, "trigger on/off sent")
