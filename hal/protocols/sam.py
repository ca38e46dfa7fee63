# SPDX-License-Identifier: Apache-2.0
"""Resident ID card reader (SAM module, "GA 467") frames, status codes and card records.

A frame is ``AA AA AA 96 69``, a big-endian length counting every byte after
it (checksum included), the body (``CMD PARA [data]`` to the SAM,
``SW1 SW2 SW3 [data]`` from it) and an XOR checksum over length and body.
Byte-level notes: ``shared/reference/peripheral-protocols.md`` section 1.

    >>> encode_command(FIND_CARD).hex()
    'aaaaaa96690003200122'
    >>> Deframer().feed(bytes.fromhex("aaaaaa9669000400008084"))[0].sw3 == SW_NO_CARD
    True

Everything here is pure: arbitrary bytes raise only ``SamProtocolError``.
The card text block (256 bytes of UCS-2) of all four card types is parsed by
``parse_text_block`` and built by ``encode_text_block`` (the simulator uses
the encoder, so tests round-trip).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from hal.exc import HalError, ProtocolError

__all__ = [
    "CARD_TYPES",
    "FIND_CARD",
    "LONG_TERM",
    "NATIONS",
    "PHOTO_LEN",
    "PREAMBLE",
    "READ_EXTRA_ADDRESS",
    "READ_FINGERPRINT",
    "READ_SAM_ID",
    "READ_TEXT_PHOTO",
    "RESET",
    "SELECT_CARD",
    "STATUS_CHECK",
    "SW_EMPTY",
    "SW_FOUND",
    "SW_NO_CARD",
    "SW_OK",
    "TEXT_LEN",
    "Command",
    "Deframer",
    "IdCard",
    "Response",
    "SamProtocolError",
    "SamStatusError",
    "build_read_response",
    "checksum",
    "decode_command",
    "decode_response",
    "encode_command",
    "encode_response",
    "encode_text_block",
    "id_check_char",
    "id_number_valid",
    "parse_read_response",
    "parse_text_block",
    "raise_for_status",
    "set_max_frame",
    "status_error",
]

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
MAX_LEN = 0x0A00            # longest reply (fingerprint read) is 0x090A; beyond that is garbage
TEXT_LEN, PHOTO_LEN, FP_LEN = 256, 1024, 1024
LONG_TERM = "长期"

SW_OK, SW_EMPTY, SW_FOUND, SW_NO_CARD = 0x90, 0x91, 0x9F, 0x80


class SamProtocolError(ProtocolError):
    """Bytes from (or for) the SAM that are not a well-formed GA 467 frame or card block."""

    code = "hal.idcard.protocol"


# -- frames --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Command:
    """Host → SAM: ``CMD PARA [data]``."""

    cmd: int
    para: int
    data: bytes = b""


@dataclasses.dataclass(frozen=True)
class Response:
    """SAM → host: ``SW1 SW2 SW3 [data]``; the status is SW3."""

    sw3: int
    data: bytes = b""
    sw1: int = 0
    sw2: int = 0

    def __repr__(self) -> str:   # data may hold card text: never print it
        return f"Response(sw3=0x{self.sw3:02X}, {len(self.data)} data bytes)"


STATUS_CHECK = Command(0x11, 0xFF)
READ_SAM_ID = Command(0x12, 0xFF)
RESET = Command(0x10, 0xFF)
FIND_CARD = Command(0x20, 0x01)
SELECT_CARD = Command(0x20, 0x02)
READ_TEXT_PHOTO = Command(0x30, 0x01)
READ_EXTRA_ADDRESS = Command(0x30, 0x03)
READ_FINGERPRINT = Command(0x30, 0x10)


def set_max_frame(size: int = 0x50) -> Command:
    """The largest RF frame the SAM may send (``61 FF 50``)."""
    return Command(0x61, 0xFF, bytes([size & 0xFF]))


def checksum(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def _frame(body: bytes) -> bytes:
    n = len(body) + 1
    if n > MAX_LEN:
        raise SamProtocolError(f"frame body of {len(body)} bytes is too long")
    head = n.to_bytes(2, "big") + body
    return PREAMBLE + head + bytes([checksum(head)])


def encode_command(command: Command) -> bytes:
    return _frame(bytes([command.cmd & 0xFF, command.para & 0xFF]) + command.data)


def encode_response(response: Response) -> bytes:
    return _frame(bytes([response.sw1, response.sw2, response.sw3]) + response.data)


def _body(frame: bytes, minimum: int) -> bytes:
    if len(frame) < 8 or frame[:5] != PREAMBLE:
        raise SamProtocolError("no GA 467 preamble")
    n = int.from_bytes(frame[5:7], "big")
    if not minimum <= n <= MAX_LEN:
        raise SamProtocolError(f"implausible length {n}")
    if len(frame) != 7 + n:
        raise SamProtocolError(f"length field says {7 + n} bytes, frame has {len(frame)}")
    if checksum(frame[5:-1]) != frame[-1]:
        raise SamProtocolError("checksum mismatch")
    return bytes(frame[7:-1])


def decode_command(frame: bytes) -> Command:
    body = _body(frame, 3)
    return Command(body[0], body[1], body[2:])


def decode_response(frame: bytes) -> Response:
    body = _body(frame, 4)
    return Response(body[2], body[3:], body[0], body[1])


class Deframer:
    """Cuts a byte stream into frames, resynchronising on the next preamble.

    ``feed`` returns, in order, decoded frames and ``SamProtocolError``s for
    frames that were cut off, too long or failed the checksum; bytes before a
    preamble are counted in ``discarded``. It never raises.

        d = Deframer(decode=decode_response)
        for item in d.feed(port.read(64)): ...
    """

    def __init__(self, decode: Any = None) -> None:
        self._decode = decode or decode_response
        self._buf = bytearray()
        self.discarded = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        while True:
            i = self._buf.find(PREAMBLE)
            if i < 0:
                keep = 4     # a preamble may straddle two reads
                if len(self._buf) > keep:
                    self.discarded += len(self._buf) - keep
                    del self._buf[:-keep]
                return out
            if i:
                self.discarded += i
                del self._buf[:i]
            if len(self._buf) < 7:
                return out
            n = int.from_bytes(self._buf[5:7], "big")
            if not 3 <= n <= MAX_LEN:
                out.append(SamProtocolError(f"implausible length {n}; resynchronising"))
                self.discarded += 1
                del self._buf[:1]
                continue
            if len(self._buf) < 7 + n:
                return out
            frame = bytes(self._buf[:7 + n])
            try:
                out.append(self._decode(frame))
                del self._buf[:7 + n]
            except SamProtocolError as exc:
                # A bad frame may have swallowed the start of a good one:
                # resume the search just after this preamble.
                out.append(exc)
                self.discarded += 1
                del self._buf[:1]


# -- status words --------------------------------------------------------------------

class SamStatusError(HalError):
    """The SAM answered with a status word other than the one expected."""

    code = "hal.idcard.status"
    sw3 = 0x00

    def __init__(self, message: str = "", sw3: int | None = None) -> None:
        if sw3 is not None:
            self.sw3 = sw3
        super().__init__(message or f"SAM status 0x{self.sw3:02X}")


def _status(name: str, sw3: int, code: str, text: str) -> type[SamStatusError]:
    cls = type(name, (SamStatusError,), {"__doc__": f"SW3 0x{sw3:02X}: {text}.", "sw3": sw3,
                                          "code": f"hal.idcard.{code}", "text": text,
                                          "__module__": __name__})
    return cls


ItemEmpty = _status("ItemEmpty", 0x91, "item_empty", "this item is empty on the card")
SamChecksumError = _status("SamChecksumError", 0x10, "sam_checksum", "the SAM saw a checksum error")
SamLengthError = _status("SamLengthError", 0x11, "sam_length", "the SAM saw a length error")
CommandRejected = _status("CommandRejected", 0x21, "command_error", "command error")
Unauthorized = _status("Unauthorized", 0x23, "unauthorized", "unauthorised operation")
UnrecognisedError = _status("UnrecognisedError", 0x24, "unrecognised", "unrecognised error")
CardAuthFailed = _status("CardAuthFailed", 0x31, "card_auth", "the card failed to authenticate the SAM")
SamAuthFailed = _status("SamAuthFailed", 0x32, "sam_auth", "the SAM failed to authenticate the card")
VerificationFailed = _status("VerificationFailed", 0x33, "verification", "information verification error")
UnknownCardType = _status("UnknownCardType", 0x40, "card_type", "unknown card type")
ReadFailed = _status("ReadFailed", 0x41, "read_failed", "read failed")
RandomNumberError = _status("RandomNumberError", 0x47, "random", "random-number error")
SamSelftestFailed = _status("SamSelftestFailed", 0x60, "sam_selftest", "SAM self-test failed")
SamNotAuthorised = _status("SamNotAuthorised", 0x66, "sam_unauthorised", "SAM not authorised")
NoCard = _status("NoCard", 0x80, "no_card", "no card found")
SelectFailed = _status("SelectFailed", 0x81, "select_failed", "select card failed")
UnknownStatus = _status("UnknownStatus", 0x00, "unknown_status", "undocumented status word")

STATUS_ERRORS: dict[int, type[SamStatusError]] = {
    cls.sw3: cls for cls in (ItemEmpty, SamChecksumError, SamLengthError, CommandRejected, Unauthorized,
                             UnrecognisedError, CardAuthFailed, SamAuthFailed, VerificationFailed,
                             UnknownCardType, ReadFailed, RandomNumberError, SamSelftestFailed,
                             SamNotAuthorised, NoCard, SelectFailed)}
__all__ += [cls.__name__ for cls in STATUS_ERRORS.values()] + ["UnknownStatus", "STATUS_ERRORS"]


def status_error(sw3: int) -> SamStatusError:
    """The typed error for a status word (``UnknownStatus`` for undocumented ones)."""
    cls = STATUS_ERRORS.get(sw3, UnknownStatus)
    return cls(f"SAM status 0x{sw3:02X}: {getattr(cls, 'text', 'undocumented')}", sw3)


def raise_for_status(response: Response, expected: int = SW_OK) -> Response:
    if response.sw3 != expected:
        raise status_error(response.sw3)
    return response


# -- card text block -----------------------------------------------------------------

NATIONS: dict[str, str] = dict(zip(
    [f"{i:02d}" for i in range(1, 57)] + ["97", "98"],
    [
        "汉", "蒙古", "回", "藏", "维吾尔", "苗", "彝", "壮", "布依", "朝鲜", "满", "侗", "瑶", "白", "土家", "哈尼",
        "哈萨克", "傣", "黎", "傈僳", "佤", "畲", "高山", "拉祜", "水", "东乡", "纳西", "景颇", "柯尔克孜", "土",
        "达斡尔", "仫佬", "羌", "布朗", "撒拉", "毛南", "仡佬", "锡伯", "阿昌", "普米", "塔吉克", "怒", "乌孜别克",
        "俄罗斯", "鄂温克", "德昂", "保安", "裕固", "京", "塔塔尔", "独龙", "鄂伦春", "赫哲", "门巴", "珞巴", "基诺",
        "其他", "外国血统中国籍人士"
    ]))
assert len(NATIONS) == 58
SEXES = {"0": "unknown", "1": "male", "2": "female", "9": "unspecified"}
_SEX_CODES = {v: k for k, v in SEXES.items()}

# marker → (card type, [(field, byte offset, byte length)]); one table drives
# both the parser and the encoder.
_F = tuple[str, int, int]
_LAYOUTS: dict[str, tuple[str, tuple[_F, ...]]] = {
    " ": ("resident", (("name", 0, 30), ("sex", 30, 2), ("nation_code", 32, 4), ("birth", 36, 16),
                       ("address", 52, 70), ("id_number", 122, 36), ("authority", 158, 30),
                       ("valid_from", 188, 16), ("valid_to", 204, 16))),
    "J": ("gat_permit", (("name", 0, 30), ("sex", 30, 2), ("birth", 36, 16), ("address", 52, 70),
                         ("id_number", 122, 36), ("authority", 158, 30), ("valid_from", 188, 16),
                         ("valid_to", 204, 16), ("pass_number", 220, 18), ("issue_count", 238, 4))),
    "I": ("foreign_pr_2017", (("name_en", 0, 120), ("sex", 120, 2), ("id_number", 122, 30),
                              ("nationality", 152, 6), ("name", 158, 30), ("valid_from", 188, 16),
                              ("valid_to", 204, 16), ("birth", 220, 16), ("card_version", 236, 4),
                              ("authority_code", 240, 8))),
    "Y": ("foreign_pr_2023", (("name", 0, 30), ("sex", 30, 2), ("nation_code", 32, 4), ("birth", 36, 16),
                              ("name_en", 52, 70), ("id_number", 122, 36), ("authority", 158, 30),
                              ("valid_from", 188, 16), ("valid_to", 204, 16), ("other_number", 220, 18),
                              ("issue_count", 238, 4), ("nationality", 242, 6))),
}
CARD_TYPES = {kind: marker for marker, (kind, _f) in _LAYOUTS.items()}
_DATES = ("birth", "valid_from", "valid_to")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID18 = re.compile(r"\d{17}[\dX]\Z")
_ID_PR2017 = re.compile(r"[A-Z]{3}\d{12}\Z")


def id_check_char(body17: str) -> str:
    """GB 11643 check character (ISO 7064 MOD 11-2) of 17 digits.

    >>> id_check_char("11010519491231002")
    'X'
    """
    if len(body17) != 17 or not body17.isascii() or not body17.isdigit():
        raise ValueError("17 ASCII digits expected")
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, _WEIGHTS)) % 11]


def id_number_valid(number: str) -> bool:
    """True for an 18-character number whose check character is right."""
    return bool(_ID18.match(number)) and id_check_char(number[:17]) == number[17]


@dataclasses.dataclass(frozen=True, repr=False)
class IdCard:
    """One card as read. Holds citizen PII: ``repr`` masks it, never log the fields.

    ``check_ok`` is False when the number fails its check (MOD 11-2 for
    18-character numbers, the 3-letters-12-digits form for 2017 PR cards);
    the card is still returned so the caller can report it.
    """

    card_type: str
    name: str = ""
    name_en: str = ""
    sex: str = "unknown"
    nation_code: str = ""
    birth: dt.date | None = None
    address: str = ""
    id_number: str = ""
    authority: str = ""
    authority_code: str = ""
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None        # None with long_term: "长期"
    long_term: bool = False
    pass_number: str = ""
    issue_count: str = ""
    nationality: str = ""
    card_version: str = ""
    other_number: str = ""
    check_ok: bool = False
    photo_wlt: bytes = b""                 # opaque 1024-byte WLT: no open decoder exists
    fingerprint: bytes | None = None

    @property
    def nation(self) -> str | None:
        return NATIONS.get(self.nation_code)

    def __repr__(self) -> str:
        return (f"IdCard(card_type={self.card_type!r}, check_ok={self.check_ok}, name=<masked>, "
                f"id_number=<masked>, address=<masked>, photo={len(self.photo_wlt)} B)")

    __str__ = __repr__


def _text(block: bytes, off: int, size: int) -> str:
    try:
        return block[off:off + size].decode("utf-16-le").rstrip(" \x00")
    except UnicodeDecodeError:
        raise SamProtocolError(f"field at byte {off} is not UCS-2") from None


def _date(name: str, value: str) -> dt.date | None:
    if value == "" and name != "birth":
        return None
    if len(value) != 8 or not value.isascii() or not value.isdigit():
        raise SamProtocolError(f"{name}: not a YYYYMMDD date")
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise SamProtocolError(f"{name}: impossible date") from None


def parse_text_block(block: bytes, photo: bytes = b"", fingerprint: bytes | None = None) -> IdCard:
    """The 256-byte text block of any of the four card types, as an ``IdCard``."""
    if len(block) != TEXT_LEN:
        raise SamProtocolError(f"text block of {len(block)} bytes, expected {TEXT_LEN}")
    marker = _text(block, 248, 2) or " "
    if marker not in _LAYOUTS:
        raise SamProtocolError(f"unknown card type marker {marker!r}")
    kind, fields = _LAYOUTS[marker]
    values: dict[str, Any] = {}
    for name, off, size in fields:
        values[name] = _text(block, off, size)
    values["long_term"] = values.get("valid_to") == LONG_TERM
    for name in _DATES:
        if name == "valid_to" and values["long_term"]:
            values[name] = None
        else:
            values[name] = _date(name, values[name])
    sex = values["sex"]
    if sex not in SEXES:
        raise SamProtocolError("sex code out of range")
    values["sex"] = SEXES[sex]
    number = values["id_number"]
    values["check_ok"] = (bool(_ID_PR2017.match(number)) if kind == "foreign_pr_2017"
                          else id_number_valid(number))
    return IdCard(card_type=kind, photo_wlt=bytes(photo), fingerprint=fingerprint, **values)


def encode_text_block(card: IdCard) -> bytes:
    """The inverse of ``parse_text_block`` (for the simulator and tests).

    Raises ValueError when a field does not fit its slot.
    """
    marker = CARD_TYPES[card.card_type]
    block = bytearray(" ".encode("utf-16-le") * (TEXT_LEN // 2))
    for name, off, size in _LAYOUTS[marker][1]:
        value: Any = getattr(card, name)
        if name == "sex":
            value = _SEX_CODES[value]
        elif name == "valid_to" and card.long_term:
            value = LONG_TERM
        elif name in _DATES:
            value = value.strftime("%Y%m%d") if value else ""
        raw = str(value).encode("utf-16-le")
        if len(raw) > size:
            raise ValueError(f"{name} does not fit in {size} bytes")
        block[off:off + len(raw)] = raw
    block[248:250] = marker.encode("utf-16-le")
    return bytes(block)


def parse_read_response(response: Response, *, fingerprint: bool = False) -> IdCard:
    """The data of a ``30 01`` (or ``30 10``) reply: lengths, text, photo (, fingerprint)."""
    data = response.data
    heads = 3 if fingerprint else 2
    if len(data) < 2 * heads:
        raise SamProtocolError("read reply too short for its length fields")
    lens = [int.from_bytes(data[2 * i:2 * i + 2], "big") for i in range(heads)]
    if lens[0] != TEXT_LEN or lens[1] not in (0, PHOTO_LEN) or (fingerprint and lens[2] not in (0, FP_LEN)):
        raise SamProtocolError(f"unexpected section lengths {lens}")
    if len(data) != 2 * heads + sum(lens):
        raise SamProtocolError("read reply length does not match its sections")
    off = 2 * heads
    text = data[off:off + lens[0]]
    photo = data[off + lens[0]:off + lens[0] + lens[1]]
    fp = data[off + lens[0] + lens[1]:] if fingerprint else None
    return parse_text_block(text, photo, fp if fp else None)


def build_read_response(card: IdCard, *, fingerprint: bool = False) -> Response:
    """The SAM's reply to a read of ``card`` (simulator side)."""
    photo = card.photo_wlt
    if len(photo) not in (0, PHOTO_LEN):
        raise ValueError("photo must be 0 or 1024 bytes")
    sections = [encode_text_block(card), photo]
    if fingerprint:
        sections.append(card.fingerprint or b"")
    head = b"".join(len(s).to_bytes(2, "big") for s in sections)
    return Response(SW_OK, head + b"".join(sections))
