# SPDX-License-Identifier: Apache-2.0
"""ESC/POS bytes rendered as paper lines, and the printer simulator keeping its last receipts.

GIVEN the bytes a receipt printer receives, WHEN they are rendered for the
developer panel, THEN the lines are what the paper shows (alignment by
columns, CJK two columns wide, wrapping at the paper's edge, QR, cut); and
the simulated printer, fed by the real driver over a pty, keeps the bytes of
the receipts it printed (not of those it could not print).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from haltest import wait_for
from hypothesis import given
from hypothesis import strategies as st

from hal.printer import ReceiptPrinter
from hal.protocols import escpos
from hal.protocols.escpos import CENTER, RIGHT, Receipt, render_receipt, text_columns
from hal.serial import open_port
from hal.sim import PrinterSim


def test_render_aligns_by_columns_wraps_and_shows_qr_feed_and_cut() -> None:
    data = (Receipt().line("回执", align=CENTER, bold=True).line("OK", align=RIGHT)
            .line("交易号：0123456789").qr("https://example.invalid/r/1").feed(1).cut().encode())
    assert render_receipt(data, width=12) == [
        "    回执",            # 4 columns centred in 12: 4 spaces before
        "          OK",        # right-aligned
        "交易号：0123",         # 8 + 4 columns: the paper's edge
        "456789",
        "[QR] https:/",
        "/example.inv",
        "alid/r/1",
        "",                    # the line feed that ends the QR code
        "",                    # feed(1)
        "------------",
    ]


def test_status_polls_print_nothing_and_two_receipts_render_in_order() -> None:
    poll = escpos.status_request(4) + b"\x1d\x72\x01"
    first = Receipt().line("first").cut().encode()
    second = Receipt().line("第二").cut().encode()
    assert render_receipt(poll + first + poll + second + poll, width=8) == ["first", "-" * 8, "第二", "-" * 8]


def test_unreadable_bytes_are_named_and_the_rest_still_renders() -> None:
    data = Receipt().line("before").encode() + b"\x1b\xff" + Receipt().line("after").encode()
    lines = render_receipt(data, width=16)
    assert lines[0] == "before" and lines[-1] == "after"
    assert any(line.startswith("[unreadable: ") for line in lines[1:-1])


def test_width_outside_a_paper_roll_is_refused() -> None:
    with pytest.raises(ValueError):
        render_receipt(b"", width=4)
    assert render_receipt(b"") == []


_TEXT = st.text(st.characters(codec="gb2312", min_codepoint=0x20, exclude_characters="\r\n\x7f"), max_size=60)


@given(st.lists(_TEXT, max_size=8), st.integers(8, 64))
def test_rendered_lines_fit_the_paper_and_keep_every_character(texts: list[str], width: int) -> None:
    lines = render_receipt(Receipt().lines(texts).encode(), width=width)
    assert all(text_columns(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == "".join(texts).replace(" ", "")


@pytest.fixture
def printer(printer_sim: PrinterSim) -> Iterator[ReceiptPrinter]:
    port = open_port(printer_sim.url, baudrate=9600)
    yield ReceiptPrinter(port, reply_timeout_s=0.5)
    port.close()


def test_the_simulator_keeps_the_receipts_it_printed(printer: ReceiptPrinter, printer_sim: PrinterSim) -> None:
    heard: list[bytes] = []
    printer_sim.add_receipt_listener(heard.append)
    printer.print(Receipt().line("第一张").cut())
    assert printer.status().ready                     # status polls between two receipts
    second = Receipt().line("回执号：000042", align=CENTER).qr("tx-42").cut()
    printer.print(second)
    wait_for(lambda: printer_sim.receipts_printed == 2, what="two receipts")

    assert printer_sim.last_receipt() == second.encode()
    assert printer_sim.receipt_lines(width=32) == render_receipt(second.encode(), width=32)
    assert printer_sim.receipt_lines(width=32)[0] == "         回执号：000042"
    assert heard == list(printer_sim.receipts) and len(heard) == 2
    action = printer_sim.control_actions()["receipt"](["32"])
    assert action == {"lines": printer_sim.receipt_lines(width=32), "receipts_printed": 2}


def test_a_job_sent_while_out_of_paper_is_not_kept(printer: ReceiptPrinter, printer_sim: PrinterSim) -> None:
    printer.print(Receipt().line("kept").cut())
    wait_for(lambda: printer_sim.receipts_printed == 1, what="the first receipt")
    printer_sim.set_state(paper_out=True)
    # Bytes straight to the port: the driver itself would refuse to print now.
    printer.port.write(Receipt().line("lost").cut().encode())
    wait_for(lambda: printer_sim.dropped >= 2, what="the job dropped")
    printer_sim.refill()
    printer.print(Receipt().line("after refill").cut())
    wait_for(lambda: printer_sim.receipts_printed == 2, what="the receipt after the refill")
    assert [render_receipt(r, width=16)[0] for r in printer_sim.receipts] == ["kept", "after refill"]


@given(st.binary(max_size=512), st.integers(8, 64))
def test_any_bytes_render_without_raising(data: bytes, width: int) -> None:
    lines = render_receipt(data, width=width)
    assert all(isinstance(line, str) for line in lines)
    assert all(text_columns(line) <= width or line.startswith("[unreadable: ") for line in lines)
