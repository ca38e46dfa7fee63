# SPDX-License-Identifier: Apache-2.0
"""The scanner codec: suffixes, payment codes, masking."""

from __future__ import annotations

import pytest

from hal.protocols import scanner as codec

WECHAT = "134567890123456789"        # 18 digits, 10-15 prefix (synthetic)
ALIPAY = "2812345678901234"          # 16 digits, 25-30 prefix (synthetic)


def test_trigger_bytes() -> None:
    assert codec.TRIGGER_ON == bytes.fromhex("16540d") and codec.TRIGGER_OFF == bytes.fromhex("16550d")


@pytest.mark.parametrize("code, kind", [
    (WECHAT, "wechat"), ("154567890123456789", "wechat"), ("164567890123456789", None),
    ("13456789012345678", None), (ALIPAY, "alipay"), ("301234567890123456789012", "alipay"),
    ("3012345678901234567890123", None), ("241234567890123456", None), ("6901234567892", None),
    ("https://example.invalid", None),
])
def test_payment_patterns(code: str, kind: str | None) -> None:
    assert codec.classify(code) == kind


def test_mask() -> None:
    assert codec.mask_code(WECHAT) == "13************6789"
    assert codec.mask_code("1234") == "****"
    scan = codec.Scan.of(WECHAT)
    assert WECHAT not in repr(scan) and scan.payment == "wechat"


def test_cr_and_crlf_including_split_across_reads() -> None:
    d = codec.LineDecoder()
    assert d.feed(b"AAA\r") == ["AAA"]
    assert d.feed(b"\nBBB\r\nCC") == ["BBB"]
    assert d.feed(b"C\n\n") == ["CCC"]
    assert codec.encode_scan("X", "CRLF") == b"X\r\n" and codec.encode_scan("X") == b"X\r"


def test_bad_lines_are_errors_not_exceptions() -> None:
    d = codec.LineDecoder()
    out = d.feed(b"\xff\xfe\rok\r" + b"9" * (codec.MAX_LINE + 5) + b"\rafter\r")
    assert isinstance(out[0], codec.ScannerProtocolError) and out[1] == "ok"
    assert isinstance(out[2], codec.ScannerProtocolError) and out[3] == "after"
    with pytest.raises(codec.ScannerProtocolError):
        codec.decode_line(b"a\x01b")
