# SPDX-License-Identifier: Apache-2.0
"""Receipt printer driver and device against the ESC/POS simulator on a real pty."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from haltest import Recorder, wait_for

from hal.device import DEGRADED, FAULT, OFFLINE, OK
from hal.exc import DeviceOffline
from hal.printer import PrinterDevice, PrinterNotReady, ReceiptPrinter
from hal.protocols.escpos import Receipt
from hal.serial import open_port
from hal.sim import PrinterSim


@pytest.fixture
def printer(printer_sim: PrinterSim) -> Iterator[ReceiptPrinter]:
    port = open_port(printer_sim.url, baudrate=9600)
    yield ReceiptPrinter(port, reply_timeout_s=0.5)
    port.close()


def test_print_receipt_with_chinese_qr_and_cut(printer: ReceiptPrinter, printer_sim: PrinterSim) -> None:
    printer.print(Receipt().line("养老金领取记录 Pension record").line("回执号 000042").qr("https://example.invalid/r/42")
                  .cut())
    wait_for(lambda: printer_sim.transcript[-1:] == ["[CUT partial]"], what="cut")
    assert printer_sim.transcript == ["养老金领取记录 Pension record", "回执号 000042", "[QR] https://example.invalid/r/42",
                                      "", "[CUT partial]"]
    assert printer_sim.errors == []


@pytest.mark.parametrize("flags, check", [
    ({}, lambda s: s.ready and not s.paper_near_end),
    ({"paper_near_end": True}, lambda s: s.ready and s.paper_near_end),
    ({"paper_out": True}, lambda s: s.paper_out and s.offline and not s.ready),
    ({"cover_open": True}, lambda s: s.cover_open and not s.ready),
    ({"cutter_error": True}, lambda s: s.cutter_error and not s.ready),
])
def test_status_poll(printer: ReceiptPrinter, printer_sim: PrinterSim, flags: dict, check) -> None:  # type: ignore[no-untyped-def]
    printer_sim.set_state(**flags)
    st = printer.status()
    assert st.responding and check(st)


def test_silent_printer_is_unknown_never_paper_fine(printer: ReceiptPrinter, printer_sim: PrinterSim) -> None:
    printer_sim.silence(True)
    st = printer.status()
    assert not st.responding and not st.ready
    assert printer.query(4) is None


def test_device_alarms_follow_the_paper(printer_sim: PrinterSim, recorder: Recorder) -> None:
    dev = PrinterDevice("printer", printer_sim.url, poll_interval_s=0.3)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OK, what="printer OK")
        printer_sim.set_state(paper_near_end=True)
        wait_for(lambda: dev.status().alarms == {"paper_low"}, what="paper_low")
        assert dev.status().state == DEGRADED
        printer_sim.set_state(paper_out=True)
        # Within two poll intervals (plus generous slack for a loaded machine).
        wait_for(lambda: "paper_out" in dev.status().alarms, timeout=5.0, what="paper_out")
        assert dev.status().state == FAULT and dev.status().alarms == {"paper_out"}
        with pytest.raises(PrinterNotReady):
            dev.print_receipt(["不会打印"])
        printer_sim.refill()
        wait_for(lambda: dev.status().state == OK, what="refilled")
        assert dev.status().alarms == frozenset()
        printer_sim.set_state(cover_open=True)
        wait_for(lambda: dev.status().alarms == {"printer_fault"}, what="printer_fault")
        printer_sim.set_state(cover_open=False)
        wait_for(lambda: dev.status().state == OK, what="cover closed")
        states = iter(e.data["state"] for e in recorder.of("status"))
        # In this order (a slow poll on a loaded machine may add states between).
        assert all(s in states for s in ("ok", "degraded", "fault", "ok"))
    finally:
        dev.stop()


def test_device_print_receipt_and_test_page(printer_sim: PrinterSim, recorder: Recorder) -> None:
    dev = PrinterDevice("printer", printer_sim.url, poll_interval_s=0.5)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OK, what="printer OK")
        dev.print_receipt(["交易 Transaction: tx-1", "网点 Outlet: 测试"], qr="tx-1")
        wait_for(lambda: "[QR] tx-1" in printer_sim.transcript, what="QR printed")
        assert printer_sim.transcript[:2] == ["交易 Transaction: tx-1", "网点 Outlet: 测试"]
        result = dev.selftest()
        assert result.passed, result.reason
        wait_for(lambda: "[QR] kiosk-agent printer self-test" in printer_sim.transcript, what="test page")
    finally:
        dev.stop()


def test_silent_printer_raises_printer_offline(printer_sim: PrinterSim, recorder: Recorder) -> None:
    printer_sim.silence(True)
    dev = PrinterDevice("printer", printer_sim.url, poll_interval_s=0.3, reply_timeout_s=0.2)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OFFLINE, what="offline")
        assert dev.status().alarms == {"printer_offline"}
        with pytest.raises(DeviceOffline):
            dev.print_receipt(["x"])
        assert not dev.selftest().passed
        printer_sim.silence(False)
        wait_for(lambda: dev.status().state == OK, what="answering again")
    finally:
        dev.stop()
