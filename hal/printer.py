# SPDX-License-Identifier: Apache-2.0
"""Thermal receipt printer (ESC/POS): driver and supervised device.

``ReceiptPrinter`` takes an opened port; the commands are built by
``hal.protocols.escpos`` (we do not use python-escpos, see docs/architecture.md).

    printer = ReceiptPrinter(open_port("/dev/kiosk/printer", baudrate=9600))
    printer.status().paper_near_end      # DLE EOT 1..4; silent printer -> responding=False
    printer.print(Receipt().line("回执 Receipt").qr("https://…").cut())

``PrinterDevice`` polls the status every ``poll_interval_s`` and asserts
``paper_low``, ``paper_out``, ``printer_fault`` (cover open, cutter,
unrecoverable) or ``printer_offline`` (no answer, port gone). A printer that
does not answer is never "paper fine".
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import serial

from hal.device import DEGRADED, FAULT, OFFLINE, OK, SelftestResult
from hal.exc import DeviceOffline, HalError
from hal.protocols import escpos
from hal.protocols.escpos import PrinterStatus, Receipt
from hal.supervisor import SerialPeripheral

__all__ = ["PrinterDevice", "PrinterNotReady", "ReceiptPrinter", "status_alarms"]

log = logging.getLogger(__name__)


class PrinterNotReady(HalError):
    """The printer answers but cannot print now (paper out, cover open, error)."""

    code = "hal.printer.not_ready"


class ReceiptPrinter:
    """ESC/POS over an opened port.

    Args:
        port: a pyserial port.
        reply_timeout_s: how long to wait for a one-byte real-time status reply.
    """

    def __init__(self, port: serial.Serial, *, reply_timeout_s: float = 0.5) -> None:
        self.port = port
        self.reply_timeout_s = reply_timeout_s

    def query(self, n: int) -> int | None:
        """One ``DLE EOT n`` reply byte, or None when the printer says nothing."""
        self.port.reset_input_buffer()     # a late reply to an earlier query is not this one
        self.port.write(escpos.status_request(n))
        deadline = time.monotonic() + self.reply_timeout_s
        while time.monotonic() < deadline:
            data = self.port.read(1)
            if data:
                byte = int(data[0])
                escpos.decode_status(n, byte)     # EscposError on a byte of the wrong form
                return byte
        return None

    def status(self) -> PrinterStatus:
        """All four status bytes; ``responding=False`` as soon as one is missing."""
        replies: dict[int, int | None] = {}
        for n in (1, 2, 3, 4):
            replies[n] = self.query(n)
            if replies[n] is None:
                break
        return PrinterStatus.from_replies(replies)

    def print(self, receipt: Receipt | bytes) -> int:
        """Send a receipt; returns the byte count. Waits until the bytes left the port."""
        data = receipt.encode() if isinstance(receipt, Receipt) else bytes(receipt)
        self.port.write(data)
        self.port.flush()
        return len(data)


def status_alarms(st: PrinterStatus) -> tuple[str, set[str], str]:
    """(state, alarms, detail) for a status; shared by the poll and tests."""
    if not st.responding:
        return OFFLINE, {"printer_offline"}, "no answer to DLE EOT"
    alarms: set[str] = set()
    if st.paper_out:
        alarms.add("paper_out")
    elif st.paper_near_end:
        alarms.add("paper_low")
    errors = [e for e in st.errors if e != "paper_out"]
    if errors:
        alarms.add("printer_fault")
    state = FAULT if (st.paper_out or errors) else DEGRADED if alarms else OK
    flags = [f for f in ("cover_open", "cutter_error", "mechanical_error", "unrecoverable", "auto_recoverable",
                         "paper_out", "paper_near_end", "offline") if getattr(st, f)]
    return state, alarms, ", ".join(flags)


class PrinterDevice(SerialPeripheral):
    """The supervised receipt printer.

        dev = PrinterDevice("printer", "/dev/kiosk/printer", baudrate=9600, poll_interval_s=2.0)
        dev.start(emit)                       # "status" events on every change
        dev.print_receipt(["回执号 Receipt: 42", "OK"], qr="https://…")
    """

    kind = "printer"
    offline_alarm = "printer_offline"

    def __init__(self, name: str = "printer", url: str = "/dev/kiosk/printer", *, baudrate: int = 9600,
                 poll_interval_s: float = 2.0, reply_timeout_s: float = 0.5, partial_cut: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(name, url, baudrate=baudrate, **kwargs)
        self.poll_interval_s = poll_interval_s
        self.reply_timeout_s = reply_timeout_s
        self.partial_cut = partial_cut
        self.driver: ReceiptPrinter | None = None
        self.printer_status = PrinterStatus()
        self.printed = 0

    def _attach(self, port: serial.Serial) -> None:
        self.driver = ReceiptPrinter(port, reply_timeout_s=self.reply_timeout_s)
        self._info = {"model": "ESC/POS", "protocol": "DLE EOT"}
        self.poll()

    def _detach(self) -> None:
        self.driver = None

    def _step(self) -> None:
        self._idle(self.poll_interval_s)
        if self._running():
            self.poll()

    def poll(self) -> PrinterStatus:
        """Query the status now and update state and alarms."""
        try:
            with self._use():
                assert self.driver is not None
                st = self.driver.status()
        except escpos.EscposError as exc:
            log.warning("%s: status reply not understood: %s", self.name, exc)
            st = PrinterStatus(responding=False)
        self.printer_status = st
        state, alarms, detail = status_alarms(st)
        self._set(state, alarms, code=None if state == OK else f"hal.printer.{state}", detail=detail)
        return st

    def print_receipt(self, lines: list[str] | Receipt, *, qr: str | None = None) -> dict[str, Any]:
        """Print ``lines`` (Chinese allowed), an optional QR code, and cut.

        Raises DeviceOffline (no port, no answer) or PrinterNotReady (paper out, cover open).
        """
        if isinstance(lines, Receipt):
            receipt = lines
        else:
            receipt = Receipt().lines(list(lines))
            if qr:
                receipt.qr(qr)
            receipt.feed(2).cut(partial=self.partial_cut)
        with self._use():
            st = self.poll()
            if not st.responding:
                raise DeviceOffline(f"{self.name}: no answer to status request")
            if not st.ready:
                raise PrinterNotReady(f"{self.name}: {status_alarms(st)[2]}")
            assert self.driver is not None
            n = self.driver.print(receipt)
            self.printed += 1
        self.poll()
        return {"bytes": n}

    def print_test_page(self) -> dict[str, Any]:
        """A short page exercising Chinese text, QR and the cutter."""
        receipt = (Receipt().line("打印机自检 Printer self-test", align=escpos.CENTER, bold=True)
                   .line(f"{dt.datetime.now():%Y-%m-%d %H:%M:%S}")
                   .line("中文 GB18030 测试行").qr("kiosk-agent printer self-test").feed(2)
                   .cut(partial=self.partial_cut))
        return self.print_receipt(receipt)

    def selftest(self) -> SelftestResult:
        try:
            info = self.print_test_page()
        except HalError as exc:
            return SelftestResult(self.name, False, f"{exc.code}: {exc}")
        return SelftestResult(self.name, True, "status ok, test page printed", info)
