# SPDX-License-Identifier: Apache-2.0
"""Property tests for every codec: round trips, and arbitrary bytes raise only the codec's error.

Example counts stay small for ``make test``; ``bench/fuzz_codecs.py`` is the
long mode (a million inputs per codec).
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal.camera import jpeg_size
from hal.exc import CameraError
from hal.protocols import escpos, sam
from hal.protocols import scanner as codec

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
byte = st.integers(0, 255)


# -- SAM -------------------------------------------------------------------------------

@SETTINGS
@given(byte, byte, st.binary(max_size=300))
def test_sam_command_round_trip(cmd: int, para: int, data: bytes) -> None:
    c = sam.Command(cmd, para, data)
    assert sam.decode_command(sam.encode_command(c)) == c


@SETTINGS
@given(byte, st.binary(max_size=600), byte, byte)
def test_sam_response_round_trip(sw3: int, data: bytes, sw1: int, sw2: int) -> None:
    r = sam.Response(sw3, data, sw1, sw2)
    assert sam.decode_response(sam.encode_response(r)) == r


@SETTINGS
@given(st.binary(max_size=400))
def test_sam_decode_arbitrary_bytes(data: bytes) -> None:
    for candidate in (data, sam.PREAMBLE + data):
        try:
            sam.decode_response(candidate)
        except sam.SamProtocolError:
            pass


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=8), byte, st.binary(max_size=50), st.integers(1, 17))
def test_deframer_finds_a_frame_after_any_garbage(garbage: list[bytes], sw3: int, data: bytes, step: int) -> None:
    noise = b"".join(garbage).replace(b"\xaa", b"\x55")   # noise that cannot hold a preamble
    frame = sam.encode_response(sam.Response(sw3, data))
    stream = noise + frame + noise
    d = sam.Deframer()
    items = []
    for i in range(0, len(stream), step):
        items += d.feed(stream[i:i + step])
    assert [i for i in items if isinstance(i, sam.Response)] == [sam.Response(sw3, data)]
    assert all(isinstance(i, (sam.Response, sam.SamProtocolError)) for i in items)


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_deframer_never_raises(chunks: list[bytes]) -> None:
    d = sam.Deframer()
    for chunk in chunks:
        for item in d.feed(sam.PREAMBLE[:len(chunk) % 6] + chunk):
            assert isinstance(item, (sam.Response, sam.SamProtocolError))


@SETTINGS
@given(st.binary(min_size=256, max_size=256))
def test_text_block_arbitrary_bytes(block: bytes) -> None:
    for candidate in (block, block[:248] + b" \x00" + block[250:], block[:248] + b"J\x00" + block[250:]):
        try:
            sam.parse_text_block(candidate)
        except sam.SamProtocolError:
            pass


@SETTINGS
@given(st.binary(max_size=1400))
def test_read_reply_arbitrary_bytes(data: bytes) -> None:
    for candidate in (data, b"\x01\x00\x04\x00" + data):
        try:
            sam.parse_read_response(sam.Response(sam.SW_OK, candidate))
        except sam.SamProtocolError:
            pass


def _field(max_chars: int) -> st.SearchStrategy[str]:
    # Trailing spaces are padding on the card, so a value never ends with one.
    chars = st.characters(min_codepoint=0x21, max_codepoint=0xFFFD, exclude_categories=("Cs",))
    return st.text(chars, max_size=max_chars)


dates = st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31))


@st.composite
def cards(draw: st.DrawFn) -> sam.IdCard:
    kind = draw(st.sampled_from(sorted(sam.CARD_TYPES)))
    marker = sam.CARD_TYPES[kind]
    fields = {name: size for name, _off, size in sam._LAYOUTS[marker][1]}
    values: dict[str, object] = {}
    for name, size in fields.items():
        if name in ("birth", "valid_from", "valid_to"):
            values[name] = draw(dates)
        elif name == "sex":
            values[name] = draw(st.sampled_from(sorted(sam.SEXES.values())))
        else:
            values[name] = draw(_field(size // 2))
    long_term = kind == "resident" and draw(st.booleans())
    if long_term:
        values["valid_to"] = None
    card = sam.IdCard(kind, long_term=long_term, photo_wlt=draw(st.sampled_from([b"", bytes(1024)])), **values)
    number = str(values["id_number"])
    ok = sam.id_number_valid(number) if kind != "foreign_pr_2017" else bool(sam._ID_PR2017.match(number))
    return sam.IdCard(**{**card.__dict__, "check_ok": ok})


@SETTINGS
@given(cards())
def test_card_round_trip(card: sam.IdCard) -> None:
    assert sam.parse_read_response(sam.build_read_response(card)) == card


# -- ESC/POS ---------------------------------------------------------------------------

line_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n",
                                  min_codepoint=0x09), max_size=40).filter(
    lambda s: all(ord(c) >= 0x20 or c == "\t" for c in s))


def _printed(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c if len(c.encode("gb18030")) <= 2 else "?" for c in text)


@SETTINGS
@given(st.lists(line_text, max_size=6), st.text(min_size=1, max_size=200), st.booleans())
def test_receipt_round_trip(lines: list[str], qr: str, partial: bool) -> None:
    data = Receipt_of(lines).qr(qr).cut(partial=partial).encode()
    items = escpos.EscposParser(strict=True).feed(data)
    texts = [i.text for i in items if isinstance(i, escpos.Text)]
    assert texts[:len(lines)] == [_printed(t) for t in lines]
    assert [i for i in items if isinstance(i, escpos.Qr)] == [escpos.Qr(qr)]
    assert items[-1] == escpos.Cut(partial)


def Receipt_of(lines: list[str]) -> escpos.Receipt:
    return escpos.Receipt().lines(lines)


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_escpos_parser_arbitrary_bytes(chunks: list[bytes]) -> None:
    strict = escpos.EscposParser(strict=True)
    lenient = escpos.EscposParser()
    for chunk in chunks:
        try:
            strict.feed(chunk)
        except escpos.EscposError:
            strict = escpos.EscposParser(strict=True)
        for item in lenient.feed(chunk):
            assert isinstance(item, (escpos.EscposError, escpos.Text, escpos.Qr, escpos.Cut, escpos.Feed,
                                     escpos.StatusRequest, escpos.Init))


@SETTINGS
@given(st.fixed_dictionaries({f: st.booleans() for f in ("offline", "cover_open", "paper_stop", "error",
                                                          "mechanical_error", "cutter_error", "unrecoverable",
                                                          "auto_recoverable", "paper_near_end", "paper_out")}))
def test_status_round_trip(flags: dict[str, bool]) -> None:
    st_ = escpos.PrinterStatus(responding=True, **flags)
    assert escpos.PrinterStatus.from_replies(st_.replies()) == st_


@SETTINGS
@given(st.integers(0, 4), st.integers(-1, 300))
def test_status_byte_arbitrary(n: int, value: int) -> None:
    try:
        escpos.decode_status(n, value)
    except escpos.EscposError:
        pass


# -- scanner ---------------------------------------------------------------------------

codes = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=200).filter(
    lambda s: "\x7f" not in s)


@SETTINGS
@given(st.lists(codes, min_size=1, max_size=5), st.sampled_from(sorted(codec.SUFFIXES)), st.integers(1, 9))
def test_scanner_round_trip(items: list[str], suffix: str, step: int) -> None:
    stream = b"".join(codec.encode_scan(c, suffix) for c in items)
    d = codec.LineDecoder()
    out: list[object] = []
    for i in range(0, len(stream), step):
        out += d.feed(stream[i:i + step])
    assert out == items


@SETTINGS
@given(st.binary(max_size=300))
def test_scanner_arbitrary_bytes(data: bytes) -> None:
    for item in codec.LineDecoder().feed(data):
        assert isinstance(item, (str, codec.ScannerProtocolError))
    try:
        codec.decode_line(data)
    except codec.ScannerProtocolError:
        pass


@SETTINGS
@given(st.sampled_from(["10", "11", "12", "13", "14", "15"]), st.text("0123456789", min_size=16, max_size=16))
def test_wechat_codes_are_tagged(prefix: str, rest: str) -> None:
    assert codec.classify(prefix + rest) == "wechat"
    assert (prefix + rest) not in repr(codec.Scan.of(prefix + rest))


# -- JPEG header (camera) --------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=200))
def test_jpeg_size_arbitrary_bytes(data: bytes) -> None:
    for candidate in (data, b"\xff\xd8" + data):
        try:
            jpeg_size(candidate)
        except CameraError:
            pass
