# SPDX-License-Identifier: Apache-2.0
"""Serial barcode / QR scanners: trigger commands, suffixed reads, payment codes.

Honeywell-style serial trigger (also Mindeo and most Chinese engines in host
mode): ``SYN T CR`` starts a scan, ``SYN U CR`` stops it. A read arrives as
the code followed by the configured suffix, CR or CR LF.

    >>> d = LineDecoder()
    >>> d.feed(b"134567890123456789\\r\\nABC")
    ['134567890123456789']
    >>> classify("134567890123456789"), mask_code("134567890123456789")
    ('wechat', '13************6789')

Payment codes (WeChat ``^1[0-5]\\d{16}$``, Alipay ``^(2[5-9]|30)\\d{14,22}$``)
are bearer tokens for a minute: log them only through ``mask_code``.
"""

from __future__ import annotations

import dataclasses
import re

from hal.exc import ProtocolError

__all__ = [
    "MAX_LINE",
    "SUFFIXES",
    "TRIGGER_OFF",
    "TRIGGER_ON",
    "LineDecoder",
    "MaskedCode",
    "Scan",
    "ScannerProtocolError",
    "classify",
    "decode_line",
    "encode_scan",
    "mask_code",
]

TRIGGER_ON = b"\x16T\r"
TRIGGER_OFF = b"\x16U\r"
SUFFIXES = {"CR": b"\r", "CRLF": b"\r\n"}
MAX_LINE = 4096      # a QR code holds at most ~3 KB of bytes; longer means a lost suffix

_WECHAT = re.compile(r"1[0-5]\d{16}\Z")
_ALIPAY = re.compile(r"(2[5-9]|30)\d{14,22}\Z")


class ScannerProtocolError(ProtocolError):
    """A scanner line that is not a readable code (binary, too long, empty)."""

    code = "hal.scanner.protocol"


def classify(code: str) -> str | None:
    """``"wechat"``, ``"alipay"`` or None."""
    if _WECHAT.match(code):
        return "wechat"
    if _ALIPAY.match(code):
        return "alipay"
    return None


def mask_code(code: str) -> str:
    """First 2 and last 4 characters, the rest starred; short codes fully starred."""
    if len(code) <= 8:
        return "*" * len(code)
    return code[:2] + "*" * (len(code) - 6) + code[-4:]


class MaskedCode(str):
    """A ``str`` whose ``repr`` is masked: safe inside a logged dict or event.

    ``str()`` and formatting still give the full code, for the payment call.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_code(str.__str__(self)))


@dataclasses.dataclass(frozen=True, repr=False)
class Scan:
    """One read. ``repr`` masks the code: it may be a payment token."""

    code: str
    payment: str | None = None

    @classmethod
    def of(cls, code: str) -> Scan:
        return cls(MaskedCode(code), classify(code))

    def __repr__(self) -> str:
        return f"Scan({mask_code(self.code)!r}, payment={self.payment!r})"

    __str__ = __repr__


def decode_line(raw: bytes) -> str:
    """One line without its suffix, as text; UTF-8 (QR) or ASCII (barcodes)."""
    if not raw:
        raise ScannerProtocolError("empty read")
    if len(raw) > MAX_LINE:
        raise ScannerProtocolError(f"read of {len(raw)} bytes without a suffix")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScannerProtocolError("read is not UTF-8 text") from None
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        raise ScannerProtocolError("control characters in a read")
    return text


def encode_scan(code: str, suffix: str = "CR") -> bytes:
    """What a scanner sends for ``code`` (simulator side)."""
    return code.encode("utf-8") + SUFFIXES[suffix]


class LineDecoder:
    """Splits a byte stream at CR, LF or CR LF (split across reads too).

    ``feed`` returns the decoded codes and ``ScannerProtocolError``s for
    unreadable lines, in order; it never raises. A line longer than
    ``MAX_LINE`` is dropped up to its suffix.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._after_cr = False
        self._overflow = False

    def feed(self, data: bytes) -> list[str | ScannerProtocolError]:
        out: list[str | ScannerProtocolError] = []
        for b in data:
            if b == 0x0A and self._after_cr:
                self._after_cr = False
                continue
            self._after_cr = b == 0x0D
            if b in (0x0D, 0x0A):
                if self._overflow:
                    out.append(ScannerProtocolError(f"read longer than {MAX_LINE} bytes"))
                elif self._buf:
                    try:
                        out.append(decode_line(bytes(self._buf)))
                    except ScannerProtocolError as exc:
                        out.append(exc)
                self._buf.clear()
                self._overflow = False
                continue
            if len(self._buf) >= MAX_LINE:
                self._overflow = True
                continue
            self._buf.append(b)
        return out
