# SPDX-License-Identifier: Apache-2.0
"""The ESC/POS codec: exact receipt bytes, status bytes, the parser."""

from __future__ import annotations

import pytest

from hal.protocols import escpos
from hal.protocols.escpos import PrinterStatus, Receipt


def test_receipt_bytes_are_exact() -> None:
    r = (Receipt().line("回执 Receipt", align=escpos.CENTER, bold=True).line("OK")
         .qr("AB", size=4, ec="M").feed(2).cut())
    parts = [
        "1b40",
        "1b6101", "1b4501", "1c26", "bbd8d6b4", "2052656365697074", "1c2e", "0a", "1b4500", "1b6100",
        "4f4b0a",
        "1b6101", "1d286b0400314132 00", "1d286b03003143 04", "1d286b03003145 31",
        "1d286b0500315030 4142", "1d286b03003151 30", "0a", "1b6100",
        "1b6402",
        "1d564203",
    ]
    assert r.encode() == bytes.fromhex("".join(parts).replace(" ", ""))


def test_chinese_is_gb18030_between_fs_and_fs_dot() -> None:
    assert escpos.encode_text("汉字") == b"\x1c\x26" + "汉字".encode("gb18030") + b"\x1c\x2e\x0a"
    assert escpos.encode_text("plain") == b"plain\n"
    # A 4-byte GB18030 character (rare name glyph) is not sent: many firmwares reject it.
    assert escpos.encode_text("𠀀") == b"\x1c\x26?\x1c\x2e\x0a"
    with pytest.raises(ValueError):
        escpos.encode_text("two\nlines")


def test_cut_variants() -> None:
    assert Receipt().cut(partial=False, feed=0).encode()[2:] == b"\x1d\x56\x41\x00"
    assert Receipt().cut().encode()[2:] == b"\x1d\x56\x42\x03"


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_status_requests(n: int) -> None:
    assert escpos.status_request(n) == bytes([0x10, 0x04, n])


def test_status_reference_vector_and_all_ok() -> None:
    out = PrinterStatus.from_replies({1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x7E})
    assert out.responding and out.offline and out.paper_out and out.paper_stop and not out.cover_open
    ok = PrinterStatus.from_replies({1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12})
    assert ok.ready and not ok.errors
    near = PrinterStatus.from_replies({1: 0x12, 2: 0x12, 3: 0x12, 4: 0x1E})
    assert near.paper_near_end and not near.paper_out and near.ready
    cutter = PrinterStatus.from_replies({1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12})
    assert cutter.cutter_error and "cutter_error" in cutter.errors


def test_no_answer_is_unknown_never_paper_fine() -> None:
    for missing in (1, 2, 3, 4):
        replies: dict[int, int | None] = {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}
        replies[missing] = None
        st = PrinterStatus.from_replies(replies)
        assert not st.responding and not st.ready


def test_status_bytes_with_wrong_fixed_bits_are_rejected() -> None:
    for byte in (0x00, 0xFF, 0x13, 0x92):
        with pytest.raises(escpos.EscposError):
            escpos.decode_status(1, byte)


def test_parser_reads_back_a_receipt() -> None:
    data = Receipt().line("你好 kiosk", align=escpos.CENTER).qr("https://example.invalid/tx/1").cut(partial=False).encode()
    items = escpos.EscposParser(strict=True).feed(data)
    assert escpos.Text("你好 kiosk", escpos.CENTER) in items
    assert escpos.Qr("https://example.invalid/tx/1") in items
    assert items[-1] == escpos.Cut(partial=False)


def test_parser_handles_split_input_and_realtime_status() -> None:
    data = b"\x1b\x40" + escpos.encode_text("分段") + b"\x10\x04\x04" + b"\x1d\x56\x01"
    p = escpos.EscposParser(strict=True)
    items = [i for b in data for i in p.feed(bytes([b]))]
    assert items == [escpos.Init(), escpos.Text("分段"), escpos.StatusRequest(4), escpos.Cut(True)]


def test_parser_reports_errors_and_continues_when_lenient() -> None:
    p = escpos.EscposParser()
    items = p.feed(b"\x1b\x99ok\n")
    assert isinstance(items[0], escpos.EscposError) and items[-1] == escpos.Text("ok")
    with pytest.raises(escpos.EscposError):
        escpos.EscposParser(strict=True).feed(b"\x07\x00")
