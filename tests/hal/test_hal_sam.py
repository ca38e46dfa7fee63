# SPDX-License-Identifier: Apache-2.0
"""The GA 467 SAM codec: exact frames, status words, the four card layouts."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from hal.exc import HalError, ProtocolError
from hal.protocols import sam
from hal.sim.idcard import SAMPLE_KINDS, sample_card, synthetic_number


@pytest.mark.parametrize("command, frame", [
    (sam.STATUS_CHECK, "AAAAAA9669000311FFED"),
    (sam.READ_SAM_ID, "AAAAAA9669000312FFEE"),
    (sam.RESET, "AAAAAA9669000310FFEC"),
    (sam.FIND_CARD, "AAAAAA96690003200122"),
    (sam.SELECT_CARD, "AAAAAA96690003200221"),
    (sam.READ_TEXT_PHOTO, "AAAAAA96690003300132"),
    (sam.READ_EXTRA_ADDRESS, "AAAAAA96690003300330"),
    (sam.READ_FINGERPRINT, "AAAAAA96690003301023"),
    (sam.set_max_frame(0x50), "AAAAAA9669000461FF50CA"),
])
def test_command_frames_are_exact(command: sam.Command, frame: str) -> None:
    assert sam.encode_command(command) == bytes.fromhex(frame)
    assert sam.decode_command(bytes.fromhex(frame)) == command


def test_reference_replies_decode() -> None:
    found = sam.decode_response(bytes.fromhex("AAAAAA9669000800009F0000000097"))
    assert found.sw3 == sam.SW_FOUND and found.data == bytes(4)
    assert sam.decode_response(bytes.fromhex("AAAAAA9669000400008084")).sw3 == sam.SW_NO_CARD
    assert sam.encode_response(sam.Response(0x80)) == bytes.fromhex("AAAAAA9669000400008084")


def test_read_reply_has_the_documented_shape() -> None:
    frame = sam.encode_response(sam.build_read_response(sample_card("resident")))
    assert len(frame) == 1295
    assert frame[:14] == bytes.fromhex("AAAAAA966905080000900100 0400".replace(" ", ""))
    fp = sam.encode_response(sam.build_read_response(sample_card("resident", fingerprint=True), fingerprint=True))
    assert len(fp) == 2321 and fp[5:7] == b"\x09\x0a"
    no_fp = sam.encode_response(sam.build_read_response(sample_card("resident"), fingerprint=True))
    assert len(no_fp) == 1297 and no_fp[5:7] == b"\x05\x0a"


@pytest.mark.parametrize("bad, why", [
    ("AAAAAA9669000400008085", "checksum"),
    ("AAAAAA966900050000808400", "checksum"),
    ("AAAAAA96690004000080", "length"),
    ("AAAAAA9669FFFF00008084", "implausible"),
    ("BBAAAA9669000400008084", "preamble"),
])
def test_bad_frames_raise_the_codec_error(bad: str, why: str) -> None:
    with pytest.raises(sam.SamProtocolError, match=why):
        sam.decode_response(bytes.fromhex(bad))


def test_deframer_resynchronises_after_garbage_split_and_bad_checksum() -> None:
    good = sam.encode_response(sam.Response(sam.SW_FOUND, bytes(4)))
    corrupt = good[:-1] + bytes([good[-1] ^ 1])
    stream = b"\x00\xaa\xaa\x13garbage" + corrupt + b"\xaa\xaa" + good
    d = sam.Deframer()
    items = []
    for i in range(0, len(stream), 3):          # split frames, 3 bytes at a time
        items += d.feed(stream[i:i + 3])
    assert [type(i) for i in items] == [sam.SamProtocolError, sam.Response]
    assert items[1].sw3 == sam.SW_FOUND
    assert d.discarded > 0


def test_deframer_rejects_absurd_length_and_recovers() -> None:
    good = sam.encode_response(sam.Response(sam.SW_OK))
    items = sam.Deframer().feed(sam.PREAMBLE + b"\xff\xff" + good)
    assert isinstance(items[0], sam.SamProtocolError) and items[-1] == sam.Response(sam.SW_OK)


def test_every_documented_sw3_maps_to_a_typed_error() -> None:
    codes = {0x91, 0x10, 0x11, 0x21, 0x23, 0x24, 0x31, 0x32, 0x33, 0x40, 0x41, 0x47, 0x60, 0x66, 0x80, 0x81}
    assert set(sam.STATUS_ERRORS) == codes
    seen = set()
    for sw3 in codes:
        err = sam.status_error(sw3)
        assert isinstance(err, sam.SamStatusError) and isinstance(err, HalError)
        assert type(err) is not sam.SamStatusError and err.sw3 == sw3
        assert err.code.startswith("hal.idcard.") and err.code not in seen
        seen.add(err.code)
    assert isinstance(sam.status_error(0x55), sam.UnknownStatus)
    with pytest.raises(sam.NoCard):
        sam.raise_for_status(sam.Response(0x80), sam.SW_FOUND)


def test_check_character_gb11643() -> None:
    assert sam.id_check_char("11010519491231002") == "X"       # the standard's worked example
    assert sam.id_number_valid("11010519491231002X")
    assert not sam.id_number_valid("110105194912310021")
    assert not sam.id_number_valid("11010519491231002")
    for body in ("99000019900101001", "99000019850630002", "12345678901234567"):
        assert sam.id_number_valid(synthetic_number(body))
        assert not sam.id_number_valid(synthetic_number(body, bad_check=True))


def test_nation_table() -> None:
    assert len(sam.NATIONS) == 58
    assert sam.NATIONS["01"] == "汉" and sam.NATIONS["56"] == "基诺" and sam.NATIONS["97"] == "其他"
    assert sam.NATIONS["98"] == "外国血统中国籍人士"


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_all_four_card_types_round_trip(kind: str) -> None:
    card = sample_card(kind)
    block = sam.encode_text_block(card)
    assert len(block) == 256
    assert block[248:250] == {"resident": " ", "gat_permit": "J", "foreign_pr_2017": "I",
                              "foreign_pr_2023": "Y"}[kind].encode("utf-16-le")
    parsed = sam.parse_read_response(sam.build_read_response(card))
    assert parsed == card and parsed.check_ok
    assert len(parsed.photo_wlt) == 1024


def test_resident_fields_and_long_term_validity() -> None:
    card = sam.parse_read_response(sam.build_read_response(sample_card("resident", long_term=True)))
    assert card.valid_to is None and card.long_term
    assert card.nation == "汉" and card.sex == "male" and card.birth == dt.date(1990, 1, 1)
    assert "长期".encode("utf-16-le") in sam.encode_text_block(card)


def test_bad_check_character_is_reported_not_raised() -> None:
    for kind in SAMPLE_KINDS:
        card = sam.parse_read_response(sam.build_read_response(sample_card(kind, bad_check=True)))
        assert card.check_ok is False


def test_record_repr_masks_pii() -> None:
    card = sample_card("resident")
    for text in (repr(card), str(card), f"{card}", repr([card])):
        assert card.name not in text and card.id_number not in text and card.address not in text
        assert card.id_number[:6] not in text


def test_text_block_errors_are_codec_errors() -> None:
    block = bytearray(sam.encode_text_block(sample_card("resident")))
    with pytest.raises(sam.SamProtocolError):
        sam.parse_text_block(bytes(block[:200]))
    bad_date = bytearray(block)
    bad_date[36:52] = "19901340".encode("utf-16-le")
    with pytest.raises(sam.SamProtocolError, match="date"):
        sam.parse_text_block(bytes(bad_date))
    bad_marker = bytearray(block)
    bad_marker[248:250] = "Q".encode("utf-16-le")
    with pytest.raises(sam.SamProtocolError, match="marker"):
        sam.parse_text_block(bytes(bad_marker))
    surrogate = bytearray(block)
    surrogate[0:2] = b"\x00\xd8"
    with pytest.raises(ProtocolError):
        sam.parse_text_block(bytes(surrogate))
    with pytest.raises(sam.SamProtocolError):
        sam.parse_read_response(sam.Response(sam.SW_OK, b"\x01\x00\x04\x00" + bytes(10)))


def test_encoder_refuses_oversized_fields() -> None:
    with pytest.raises(ValueError):
        sam.encode_text_block(dataclasses.replace(sample_card("resident"), name="名" * 16))
