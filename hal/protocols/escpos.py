# SPDX-License-Identifier: Apache-2.0
"""ESC/POS: the receipt we print, the real-time status we poll, and a parser.

We write the dozen commands we need instead of using python-escpos (see
docs/architecture.md: dependency weight, ports from paths, and 3.1 reports
"paper adequate" when the printer is silent).

    >>> r = Receipt().line("OK").cut()
    >>> r.encode().hex(" ")
    '1b 40 4f 4b 0a 1d 56 42 03'
    >>> PrinterStatus.from_replies({1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x7E}).paper_out
    True

Chinese lines are sent in GB18030 between ``FS &`` and ``FS .`` (Chinese mode
selected explicitly, never assumed). ``EscposParser`` reads the same stream
back (the printer simulator's transcript); it and ``decode_status`` raise
only ``EscposError``. ``render_receipt`` turns received bytes into the lines
a paper roll of a given width would show (the developer panel's receipt).

    >>> render_receipt(Receipt().line("OK", align=CENTER).cut().encode(), width=8)
    ['   OK', '--------']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hal.exc import ProtocolError

__all__ = [
    "CENTER",
    "CHINESE_OFF",
    "CHINESE_ON",
    "INIT",
    "LEFT",
    "LF",
    "RIGHT",
    "Cut",
    "EscposError",
    "EscposParser",
    "Feed",
    "Init",
    "PrinterStatus",
    "Qr",
    "Receipt",
    "StatusRequest",
    "Text",
    "decode_status",
    "encode_text",
    "render_receipt",
    "status_request",
    "text_columns",
]

ESC, GS, FS, DLE, EOT = 0x1B, 0x1D, 0x1C, 0x10, 0x04
INIT = b"\x1b\x40"
LF = b"\x0a"
CHINESE_ON = b"\x1c\x26"
CHINESE_OFF = b"\x1c\x2e"
LEFT, CENTER, RIGHT = 0, 1, 2
_EC = {"L": 0x30, "M": 0x31, "Q": 0x32, "H": 0x33}
QR_MAX = 7089 - 3


class EscposError(ProtocolError):
    """Bytes that are not ESC/POS we understand, or a status byte with wrong fixed bits."""

    code = "hal.printer.protocol"


# -- encoding ------------------------------------------------------------------------

def status_request(n: int) -> bytes:
    """``DLE EOT n``: real-time status, answered with one byte even mid-job."""
    if n not in (1, 2, 3, 4):
        raise ValueError("DLE EOT n takes n = 1..4")
    return bytes([DLE, EOT, n])


def encode_text(text: str) -> bytes:
    """One line: ASCII as is; anything else in Chinese mode as GB18030.

    Characters needing a 4-byte GB18030 code (rare name characters) become
    ``?``: many firmwares accept only the double-byte areas.

    >>> encode_text("回执").hex(" ")
    '1c 26 bb d8 d6 b4 1c 2e 0a'
    """
    if any(c in "\r\n" or (ord(c) < 0x20 and c != "\t") for c in text):
        raise ValueError("control characters are not allowed in a receipt line")
    if text.isascii():
        return text.encode("ascii") + LF
    out = bytearray(CHINESE_ON)
    for c in text:
        raw = c.encode("gb18030")
        out += raw if len(raw) <= 2 else b"?"
    return bytes(out + CHINESE_OFF + LF)


def _gs_k(fn: int, payload: bytes) -> bytes:
    n = len(payload) + 2
    return bytes([GS, 0x28, 0x6B, n & 0xFF, n >> 8, 0x31, fn]) + payload


class Receipt:
    """Builds a receipt and encodes it to bytes.

        Receipt().line("回执号 123", align=CENTER).qr("https://x/1").cut().encode()
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = [INIT]

    def line(self, text: str = "", *, align: int = LEFT, bold: bool = False) -> Receipt:
        if align != LEFT:
            self._parts.append(bytes([ESC, 0x61, align]))
        if bold:
            self._parts.append(b"\x1b\x45\x01")
        self._parts.append(encode_text(text))
        if bold:
            self._parts.append(b"\x1b\x45\x00")
        if align != LEFT:
            self._parts.append(bytes([ESC, 0x61, LEFT]))
        return self

    def lines(self, texts: list[str]) -> Receipt:
        for t in texts:
            self.line(t)
        return self

    def qr(self, data: str, *, size: int = 6, ec: str = "M") -> Receipt:
        """Native QR (``GS ( k``): model 2, module size, error level, store, print."""
        raw = data.encode("utf-8")
        if not raw or len(raw) > QR_MAX:
            raise ValueError("QR payload must be 1..7086 bytes")
        if not 1 <= size <= 16:
            raise ValueError("QR module size is 1..16")
        self._parts += [bytes([ESC, 0x61, CENTER]),
                        _gs_k(0x41, b"\x32\x00"), _gs_k(0x43, bytes([size])), _gs_k(0x45, bytes([_EC[ec]])),
                        _gs_k(0x50, b"\x30" + raw), _gs_k(0x51, b"\x30"), LF,
                        bytes([ESC, 0x61, LEFT])]
        return self

    def feed(self, n: int = 1) -> Receipt:
        self._parts.append(bytes([ESC, 0x64, max(0, min(255, n))]))
        return self

    def cut(self, *, partial: bool = True, feed: int = 3) -> Receipt:
        """Feed ``feed`` units and cut (``GS V 66 n`` partial / ``GS V 65 n`` full)."""
        self._parts.append(bytes([GS, 0x56, 0x42 if partial else 0x41, max(0, min(255, feed))]))
        return self

    def encode(self) -> bytes:
        return b"".join(self._parts)


# -- real-time status ----------------------------------------------------------------

_FLAGS = {  # (n, mask) per flag; paper near-end and end use both of their bits
    "offline": (1, 0x08), "cover_open": (2, 0x04), "paper_stop": (2, 0x20), "error": (2, 0x40),
    "mechanical_error": (3, 0x04), "cutter_error": (3, 0x08), "unrecoverable": (3, 0x20),
    "auto_recoverable": (3, 0x40), "paper_near_end": (4, 0x0C), "paper_out": (4, 0x60),
}


def decode_status(n: int, byte: int) -> dict[str, bool]:
    """Flags of one ``DLE EOT n`` reply; checks the fixed bits (``0xx1xx10``)."""
    if n not in (1, 2, 3, 4):
        raise EscposError(f"no DLE EOT {n}")
    if not 0 <= byte <= 0xFF or byte & 0x93 != 0x12:
        raise EscposError(f"0x{byte:02X} is not a DLE EOT reply")
    return {flag: bool(byte & mask) for flag, (m, mask) in _FLAGS.items() if m == n}


@dataclasses.dataclass(frozen=True)
class PrinterStatus:
    """What the four status replies say. ``responding=False``: no answer, nothing is known."""

    responding: bool = False
    offline: bool = False
    cover_open: bool = False
    paper_stop: bool = False
    error: bool = False
    mechanical_error: bool = False
    cutter_error: bool = False
    unrecoverable: bool = False
    auto_recoverable: bool = False
    paper_near_end: bool = False
    paper_out: bool = False

    @classmethod
    def from_replies(cls, replies: dict[int, int | None]) -> PrinterStatus:
        """From ``{n: byte or None}``; any missing reply means unknown, never "paper fine"."""
        if any(replies.get(n) is None for n in (1, 2, 3, 4)):
            return cls(responding=False)
        flags: dict[str, Any] = {}
        for n in (1, 2, 3, 4):
            flags.update(decode_status(n, replies[n]))  # type: ignore[arg-type]
        return cls(responding=True, **flags)

    def replies(self) -> dict[int, int]:
        """The bytes a printer in this state answers (simulator side)."""
        out = dict.fromkeys((1, 2, 3, 4), 0x12)
        for flag, (n, mask) in _FLAGS.items():
            if getattr(self, flag):
                out[n] |= mask
        return out

    @property
    def errors(self) -> list[str]:
        return [f for f in ("cover_open", "cutter_error", "mechanical_error", "unrecoverable", "paper_out")
                if getattr(self, f)]

    @property
    def ready(self) -> bool:
        return self.responding and not self.errors and not self.offline


# -- parser (what a printer reads) ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Text:
    text: str
    align: int = LEFT
    bold: bool = False


@dataclasses.dataclass(frozen=True)
class Qr:
    data: str


@dataclasses.dataclass(frozen=True)
class Cut:
    partial: bool


@dataclasses.dataclass(frozen=True)
class Feed:
    lines: int


@dataclasses.dataclass(frozen=True)
class StatusRequest:
    n: int
    kind: str = "dle_eot"      # or "gs_r"


@dataclasses.dataclass(frozen=True)
class Init:
    pass


# ESC/GS commands taking a fixed number of parameter bytes, accepted and ignored
_ESC_ARGS = {0x21: 1, 0x2D: 1, 0x32: 0, 0x33: 1, 0x4D: 1, 0x74: 1, 0x7B: 1, 0x4A: 1, 0x20: 1, 0x47: 1,
             0x52: 1, 0x56: 1}
_GS_ARGS = {0x21: 1, 0x42: 1, 0x48: 1, 0x66: 1, 0x68: 1, 0x77: 1, 0x4C: 2, 0x57: 2, 0x61: 1}


class EscposParser:
    """Incremental ESC/POS reader: ``feed(bytes) -> [Text | Qr | Cut | Feed | StatusRequest | Init]``.

    Incomplete commands wait for more bytes. ``strict=True`` raises
    ``EscposError`` at the first problem; otherwise the error is returned in
    the list and the offending byte skipped.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._buf = bytearray()
        self._line = bytearray()
        self.chinese = False
        self.align = LEFT
        self.bold = False
        self._qr = b""

    def _flush(self, out: list[Any]) -> None:
        raw, self._line = bytes(self._line), bytearray()
        try:
            text = raw.decode("ascii") if raw.isascii() else raw.decode("gb18030")
        except UnicodeDecodeError:
            raise EscposError("text that is not GB18030") from None
        out.append(Text(text, self.align, self.bold))

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        while self._buf:
            try:
                used = self._step(out)
            except EscposError as exc:
                if self.strict:
                    raise
                out.append(exc)
                self._line.clear()
                used = 1
            if used == 0:
                break
            del self._buf[:used]
        return out

    def _step(self, out: list[Any]) -> int:
        b = self._buf
        c = b[0]
        if c == 0x0A:
            self._flush(out)
            return 1
        if c == 0x0D:
            return 1
        if c >= 0x20 or c == 0x09:
            if c >= 0x80 and not self.chinese:
                raise EscposError("non-ASCII text outside Chinese mode")
            self._line.append(c)
            if len(self._line) > 4096:
                raise EscposError("line too long")
            return 1
        if len(b) < 2:
            return 0
        d = b[1]
        if c == DLE:
            if d != EOT:
                raise EscposError(f"unknown DLE command 0x{d:02X}")
            if len(b) < 3:
                return 0
            if b[2] not in (1, 2, 3, 4):
                raise EscposError(f"DLE EOT {b[2]} is not 1..4")
            out.append(StatusRequest(b[2]))
            return 3
        if c == FS:
            if d not in (0x26, 0x2E):
                raise EscposError(f"unknown FS command 0x{d:02X}")
            self.chinese = d == 0x26
            return 2
        if c == ESC:
            if d == 0x40:
                self.chinese, self.align, self.bold = False, LEFT, False
                out.append(Init())
                return 2
            if d in (0x61, 0x45, 0x64) or d in _ESC_ARGS:
                if len(b) < 3 and (d in (0x61, 0x45, 0x64) or _ESC_ARGS.get(d)):
                    return 0
                if d == 0x61:
                    if b[2] not in (0, 1, 2, 0x30, 0x31, 0x32):
                        raise EscposError("ESC a takes 0..2")
                    self.align = b[2] & 0x03
                elif d == 0x45:
                    self.bold = bool(b[2] & 1)
                elif d == 0x64:
                    out.append(Feed(b[2]))
                return 2 + (1 if d in (0x61, 0x45, 0x64) else _ESC_ARGS[d])
            raise EscposError(f"unknown ESC command 0x{d:02X}")
        if c == GS:
            if d == 0x56:
                if len(b) < 3:
                    return 0
                m = b[2]
                if m in (0, 1, 0x30, 0x31):
                    self._cut(out, partial=m in (1, 0x31))
                    return 3
                if m in (0x41, 0x42):
                    if len(b) < 4:
                        return 0
                    self._cut(out, partial=m == 0x42)
                    return 4
                raise EscposError(f"GS V {m} is not a cut")
            if d == 0x72:
                if len(b) < 3:
                    return 0
                out.append(StatusRequest(b[2], "gs_r"))
                return 3
            if d == 0x28:
                return self._gs_paren(out)
            if d in _GS_ARGS:
                if len(b) < 2 + _GS_ARGS[d]:
                    return 0
                return 2 + _GS_ARGS[d]
            raise EscposError(f"unknown GS command 0x{d:02X}")
        raise EscposError(f"unexpected control byte 0x{c:02X}")

    def _cut(self, out: list[Any], *, partial: bool) -> None:
        if self._line:
            self._flush(out)
        out.append(Cut(partial))

    def _gs_paren(self, out: list[Any]) -> int:
        b = self._buf
        if len(b) < 5:
            return 0
        if b[2] != 0x6B:
            raise EscposError(f"GS ( {chr(b[2])!r} is not supported")
        n = b[3] | b[4] << 8
        if n < 2:
            raise EscposError("GS ( k with no function")
        if len(b) < 5 + n:
            return 0
        cn, fn, params = b[5], b[6], bytes(b[7:5 + n])
        if cn != 0x31:
            raise EscposError(f"GS ( k symbol type 0x{cn:02X} is not QR")
        if fn == 0x50:
            if not params or params[0] != 0x30:
                raise EscposError("QR store without m = 0x30")
            self._qr = params[1:]
        elif fn == 0x51:
            try:
                out.append(Qr(self._qr.decode("utf-8")))
            except UnicodeDecodeError:
                raise EscposError("QR payload is not UTF-8") from None
        elif fn not in (0x41, 0x43, 0x45, 0x52):
            raise EscposError(f"GS ( k function 0x{fn:02X} is not supported")
        return 5 + n


# -- rendering (what the paper shows) ------------------------------------------------

def text_columns(text: str) -> int:
    """Printed width in columns: a GB18030 double-byte character takes two (24 dots of 12)."""
    return sum(1 if ord(c) < 0x80 else 2 for c in text)


def _wrap(text: str, width: int) -> list[str]:
    """Break ``text`` where the paper ends, as the printer does (by columns, not words)."""
    lines, line, used = [], "", 0
    for c in text:
        w = text_columns(c)
        if used + w > width:
            lines.append(line)
            line, used = "", 0
        line += c
        used += w
    lines.append(line)
    return lines


def render_receipt(data: bytes, *, width: int = 48) -> list[str]:
    """ESC/POS bytes as the text lines on paper ``width`` columns wide (48: 80 mm, 32: 58 mm).

    Alignment is kept by padding (trailing spaces dropped), long lines wrap,
    a feed gives empty lines, a QR code shows as ``[QR] payload``, a cut as a
    line of ``-``. Status requests print nothing; bytes the parser cannot
    read show as ``[unreadable: why]`` instead of being passed over silently.
    Pure: no I/O, no state beyond the call.
    """
    if not 8 <= width <= 256:
        raise ValueError("width is 8..256 columns")
    out: list[str] = []
    for item in EscposParser().feed(bytes(data)):
        if isinstance(item, Text):
            for part in _wrap(item.text, width):
                pad = width - text_columns(part)
                lead = pad // 2 if item.align == CENTER else pad if item.align == RIGHT else 0
                out.append((" " * lead + part).rstrip())
        elif isinstance(item, Qr):
            out.extend(_wrap(f"[QR] {item.data}", width))
        elif isinstance(item, Feed):
            out.extend([""] * min(item.lines, 10))
        elif isinstance(item, Cut):
            out.append("-" * width)
        elif isinstance(item, EscposError):
            out.append(f"[unreadable: {item}]")
    return out
