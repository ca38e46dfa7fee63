# SPDX-License-Identifier: Apache-2.0
"""The simulators themselves: stable links across replug, controls for ``kiosk-agent sim``."""

from __future__ import annotations

import os

import pytest
from haltest import wait_for

from hal.serial import open_port, wake_reader
from hal.sim import SIMULATORS, IdCardSim, PrinterSim, ScannerSim
from hal.sim.idcard import sample_card


def test_link_is_stable_across_replug(printer_sim: PrinterSim) -> None:
    url = printer_sim.url
    first = os.readlink(url)
    printer_sim.unplug()
    assert not os.path.lexists(url) and not printer_sim.plugged
    printer_sim.replug()
    assert printer_sim.url == url and os.path.exists(url)
    assert os.readlink(url) == printer_sim.slave_path
    del first   # the pty number may or may not be reused; the link is what matters


def test_registry() -> None:
    assert set(SIMULATORS) == {"idcard", "printer", "scanner"}


def test_printer_controls(printer_sim: PrinterSim) -> None:
    actions = printer_sim.control_actions()
    assert {"unplug", "replug", "silence", "inject", "paper_out", "paper_near_end", "cover_open",
            "cutter_error", "refill", "transcript", "status"} <= set(actions)
    assert actions["paper_out"]([])["paper_out"] is True
    assert actions["refill"]([])["paper_out"] is False
    assert actions["silence"](["on"])["silent"] is True
    assert actions["silence"](["off"])["silent"] is False


def test_idcard_controls(idcard_sim: IdCardSim) -> None:
    actions = idcard_sim.control_actions()
    assert actions["place"](["gat_permit", "bad"])["card"] == "gat_permit"
    assert idcard_sim.card is not None and not idcard_sim.card.check_ok
    assert actions["fail"](["41"])["fail_next"] == ["41"]
    assert actions["remove"]([])["card"] is None
    with pytest.raises(ValueError):
        actions["place"](["passport"])


def test_scanner_controls_and_split_garbage(scanner_sim: ScannerSim) -> None:
    port = open_port(scanner_sim.url, baudrate=115200)
    try:
        scanner_sim.control_actions()["inject"](["ff00"])
        scanner_sim.split(1, 0.0)
        assert scanner_sim.control_actions()["scan"](["ABC"])["sent"]
        got = bytearray()
        wait_for(lambda: got.extend(port.read(64)) or got.endswith(b"ABC\r\n"), what="scan bytes")
        assert bytes(got) == b"\xff\x00ABC\r\n"
    finally:
        port.close()


def test_idcard_sim_answers_garbage_with_checksum_error(idcard_sim: IdCardSim) -> None:
    from hal.protocols import sam
    port = open_port(idcard_sim.url, baudrate=115200)
    try:
        bad = bytearray(sam.encode_command(sam.FIND_CARD))
        bad[-1] ^= 0xFF
        port.write(bytes(bad))
        d = sam.Deframer()
        replies: list[object] = []
        wait_for(lambda: replies.extend(d.feed(port.read(64))) or replies, what="a reply")
        assert replies == [sam.Response(0x10)]
        idcard_sim.place(sample_card("resident"))
    finally:
        port.close()


def test_waking_a_reader_whose_port_is_closing_is_harmless(scanner_sim: ScannerSim) -> None:
    """A supervisor's stop() can wake the reader while the reader closes the port.

    pyserial checks ``is_open`` and then writes to its abort pipe; the closing
    thread may have closed that pipe in between. Reproduce that moment.
    """
    port = open_port(scanner_sim.url, baudrate=115200)
    live_fd = port.pipe_abort_read_w
    closed_r, closed_w = os.pipe()
    os.close(closed_r)
    os.close(closed_w)
    port.pipe_abort_read_w = closed_w       # the fd the closing thread just released
    try:
        with pytest.raises(OSError):
            port.cancel_read()              # what stop() used to call
        wake_reader(port)
    finally:
        port.pipe_abort_read_w = live_fd
        port.close()
    wake_reader(port)                       # after close: nothing to wake
