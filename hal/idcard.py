# SPDX-License-Identifier: Apache-2.0
"""Resident ID card reader: the GA 467 SAM driver and its supervised device.

``IdCardReader`` takes an opened port and does I/O and timing only; frames,
status words and card records come from ``hal.protocols.sam``.

    port = open_port("/dev/kiosk/idcard", baudrate=115200)
    reader = IdCardReader(port)
    reader.sam_status()                  # SamSelftestFailed etc. on a bad SAM
    card = reader.read()                 # None when no (new) card is on the reader

``IdCardDevice`` polls for a card, reads it and emits ``card_read`` with
``{"card": IdCard, "card_type": str, "check_ok": bool}``; a card whose number
fails its check character also emits ``card_invalid``. The record holds PII:
never log it (its ``repr`` is masked). Once read, a card must be lifted and
placed again before find-card succeeds: that is the SAM's behaviour and the
poll loop relies on it instead of de-duplicating reads itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import serial

from hal.device import FAULT, OFFLINE, OK, SelftestResult
from hal.exc import DeviceTimeout, HalError
from hal.protocols import sam
from hal.supervisor import SerialPeripheral

__all__ = ["IdCardDevice", "IdCardReader"]

log = logging.getLogger(__name__)

READ_REPLY_BYTES = 1295       # 30 01: 7 header + 3 SW + 4 lengths + 256 + 1024 + checksum
FP_REPLY_BYTES = 2321


class IdCardReader:
    """GA 467 SAM over an opened port.

    Args:
        port: a pyserial port (real tty, pty, ``socket://``).
        timeout: how long the SAM may think before answering, on top of the
            bytes' transfer time at the port's baud rate.
    """

    def __init__(self, port: serial.Serial, *, timeout: float = 1.0) -> None:
        self.port = port
        self.timeout = timeout
        self.garbage = 0            # bytes discarded while resynchronising, for diagnostics

    def _transfer_s(self, nbytes: int) -> float:
        baud = getattr(self.port, "baudrate", None) or 115200
        return nbytes * 10 / baud

    def transact(self, command: sam.Command, *, reply_bytes: int = 64) -> sam.Response:
        """Send one command, return the first well-formed reply.

        Garbage and broken frames before it are skipped (resynchronising on
        the next preamble); DeviceTimeout when nothing valid arrives in time,
        SamProtocolError when only broken frames did.
        """
        frame = sam.encode_command(command)
        # Bytes left from an earlier, timed-out exchange would pass for this reply.
        self.port.reset_input_buffer()
        self.port.write(frame)
        deframer = sam.Deframer(sam.decode_response)
        deadline = time.monotonic() + self.timeout + self._transfer_s(len(frame) + reply_bytes)
        last_error: sam.SamProtocolError | None = None
        while True:
            chunk = self.port.read(max(1, self.port.in_waiting))
            for item in deframer.feed(chunk):
                if isinstance(item, sam.Response):
                    self.garbage += deframer.discarded
                    return item
                last_error = item
            if time.monotonic() >= deadline:
                self.garbage += deframer.discarded
                if last_error is not None:
                    raise sam.SamProtocolError(f"no valid reply to {command.cmd:02X} {command.para:02X}: "
                                               f"{last_error}")
                extra = f" ({deframer.discarded} bytes of garbage)" if deframer.discarded else ""
                raise DeviceTimeout(f"no reply to {command.cmd:02X} {command.para:02X}{extra}")

    def sam_status(self) -> None:
        """``11 FF``: raises the typed error unless the SAM reports 90."""
        sam.raise_for_status(self.transact(sam.STATUS_CHECK))

    def sam_id(self) -> str:
        """``12 FF``: the SAM's management number, hex (not citizen data)."""
        return sam.raise_for_status(self.transact(sam.READ_SAM_ID)).data.hex()

    def set_max_frame(self, size: int = 0x50) -> None:
        sam.raise_for_status(self.transact(sam.set_max_frame(size)))

    def find_card(self) -> bool:
        """``20 01``: True when a card is there (9F), False for 80; other statuses raise."""
        reply = self.transact(sam.FIND_CARD)
        if reply.sw3 == sam.SW_NO_CARD:
            return False
        sam.raise_for_status(reply, sam.SW_FOUND)
        return True

    def select_card(self) -> None:
        sam.raise_for_status(self.transact(sam.SELECT_CARD))

    def read_card(self, *, fingerprint: bool = False) -> sam.IdCard:
        """``30 01`` (or ``30 10`` with fingerprint) after a select: the parsed card."""
        cmd, size = (sam.READ_FINGERPRINT, FP_REPLY_BYTES) if fingerprint else (sam.READ_TEXT_PHOTO,
                                                                                   READ_REPLY_BYTES)
        reply = sam.raise_for_status(self.transact(cmd, reply_bytes=size))
        return sam.parse_read_response(reply, fingerprint=fingerprint)

    def read_extra_address(self) -> str | None:
        """``30 03``: the additional address (追加住址) after a read; None when empty (91).

        The payload layout is unverified (see the reference notes); it is
        decoded as space-padded UCS-2, as the card's other text.
        """
        reply = self.transact(sam.READ_EXTRA_ADDRESS)
        if reply.sw3 == sam.SW_EMPTY:
            return None
        sam.raise_for_status(reply)
        try:
            return reply.data.decode("utf-16-le").rstrip(" \x00")
        except UnicodeDecodeError:
            raise sam.SamProtocolError("additional address is not UCS-2") from None

    def read(self, *, fingerprint: bool = False) -> sam.IdCard | None:
        """Find, select and read; None when no card (or the last one was not lifted)."""
        if not self.find_card():
            return None
        self.select_card()
        return self.read_card(fingerprint=fingerprint)


class IdCardDevice(SerialPeripheral):
    """The supervised card reader: polls, reads, emits.

    Alarms: ``idcard_offline`` (port gone, or the SAM went quiet) and
    ``idcard_fault`` (the SAM answers with a fault status).

        dev = IdCardDevice("idcard", "/dev/kiosk/idcard", poll_interval_s=0.5)
        dev.start(emit)     # emit(DeviceEvent("idcard", "card_read", {"card": IdCard, ...}))
    """

    kind = "idcard"
    offline_alarm = "idcard_offline"
    fault_alarm = "idcard_fault"

    def __init__(self, name: str = "idcard", url: str = "/dev/kiosk/idcard", *, baudrate: int = 115200,
                 poll_interval_s: float = 0.5, fingerprint: bool = False, reply_timeout_s: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(name, url, baudrate=baudrate, **kwargs)
        self.poll_interval_s = poll_interval_s
        self.fingerprint = fingerprint
        self.reply_timeout_s = reply_timeout_s
        self.reader: IdCardReader | None = None
        self.reads = 0
        self._healthy = False
        self._next_probe = 0.0

    def _attach(self, port: serial.Serial) -> None:
        self.reader = IdCardReader(port, timeout=self.reply_timeout_s)
        self._healthy = False
        self._probe()   # DeviceTimeout escapes: a silent reader is retried with backoff

    def _detach(self) -> None:
        self.reader = None

    def _probe(self) -> None:
        assert self.reader is not None
        self._next_probe = time.monotonic() + 2.0
        try:
            with self._use():
                self.reader.sam_status()
                self._info = {"model": "GA 467 SAM", "sam_id": self.reader.sam_id()}
                self.reader.set_max_frame()
        except sam.SamStatusError as exc:
            self._healthy = False
            self._set(FAULT, {self.fault_alarm}, code=exc.code, detail=str(exc))
            return
        self._healthy = True
        self._set(OK)

    def _step(self) -> None:
        reader = self.reader
        assert reader is not None
        if not self._healthy:
            if time.monotonic() >= self._next_probe:
                self._probe()
            self._idle(self.poll_interval_s)
            return
        try:
            with self._use():
                card = reader.read(fingerprint=self.fingerprint)
        except DeviceTimeout as exc:
            # The port is there but the SAM went quiet: a fault, not an unplug.
            self._healthy = False
            self._set(OFFLINE, {self.offline_alarm}, code=exc.code, detail=str(exc))
            return
        except (sam.SamStatusError, sam.SamProtocolError) as exc:
            # A card moved mid-read or a noisy line: report, keep polling.
            log.warning("%s: card read failed: %s", self.name, exc.code)
            self._emit_event("card_error", {"code": exc.code, "error": exc.__class__.__name__})
        else:
            if self._status.state != OK:
                self._set(OK)
            if card is not None:
                self.reads += 1
                # Log the fact of a read only: the record is citizen data.
                log.info("%s: %s card read (check %s)", self.name, card.card_type,
                         "ok" if card.check_ok else "FAILED")
                self._emit_event("card_read", {"card": card, "card_type": card.card_type,
                                               "check_ok": card.check_ok})
                if not card.check_ok:
                    self._emit_event("card_invalid", {"card_type": card.card_type, "reason": "check_character"})
        self._idle(self.poll_interval_s)

    def selftest(self) -> SelftestResult:
        try:
            with self._use():
                assert self.reader is not None
                self.reader.sam_status()
                sam_id = self.reader.sam_id()
        except HalError as exc:
            return SelftestResult(self.name, False, f"{exc.code}: {exc}")
        return SelftestResult(self.name, True, "SAM status 90", {"sam_id": sam_id})
