# SPDX-License-Identifier: Apache-2.0
"""Scanner driver and device against the scanner simulator on a real pty."""

from __future__ import annotations

import logging

import pytest
from haltest import Recorder, wait_for

from hal.device import OK
from hal.protocols.scanner import Scan
from hal.scanner import Scanner, ScannerDevice
from hal.serial import open_port
from hal.sim import ScannerSim

WECHAT = "134567890123456789"
ALIPAY = "2812345678901234"


@pytest.mark.parametrize("suffix", ["CR", "CRLF"])
def test_driver_reads_with_either_suffix(dev_dir, suffix: str) -> None:  # type: ignore[no-untyped-def]
    sim = ScannerSim(dev_dir=dev_dir, suffix=suffix, require_trigger=True)
    sim.start()
    port = open_port(sim.url, baudrate=115200)
    try:
        scanner = Scanner(port)
        assert sim.scan("6901234567892") is False          # not triggered: the engine reads nothing
        scanner.trigger(True)
        wait_for(lambda: sim.triggered, what="trigger on")
        sim.split(2, 0.001)
        assert sim.scan("6901234567892")
        got: list[object] = []
        wait_for(lambda: got.extend(scanner.read_scans(0.1)) or got, what="a scan")
        assert got == [Scan("6901234567892", None)]
        scanner.trigger(False)
        wait_for(lambda: sim.triggers == [True, False], what="trigger off")
    finally:
        port.close()
        sim.stop()


def test_device_emits_tagged_scans_and_masks_logs(scanner_sim: ScannerSim, recorder: Recorder,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dev = ScannerDevice("scanner", scanner_sim.url, baudrate=115200)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OK, what="scanner OK")
        for code in (WECHAT, ALIPAY, "https://example.invalid/q"):
            scanner_sim.scan(code)
        events = recorder.wait("scan", 3)
        assert [e.data for e in events] == [{"code": WECHAT, "payment": "wechat"},
                                            {"code": ALIPAY, "payment": "alipay"},
                                            {"code": "https://example.invalid/q", "payment": None}]
        assert WECHAT not in repr(events[0]) and "13************6789" in repr(events[0].data)
        assert str(events[0].data["code"]) == WECHAT and f"{events[0].data['code']}" == WECHAT
        scanner_sim.inject(b"\xff\xfe\r")
        recorder.wait("scan_error")
        result = dev.selftest()
        assert result.passed
        wait_for(lambda: scanner_sim.triggers[-2:] == [True, False], what="selftest trigger on/off")
    finally:
        dev.stop()
    assert WECHAT not in caplog.text and ALIPAY not in caplog.text
    assert "13************6789" in caplog.text
