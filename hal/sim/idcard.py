# SPDX-License-Identifier: Apache-2.0
"""A GA 467 SAM card reader on a pty, with scripted synthetic cards.

Cards are built with the codec's encoder, so a read round-trips through the
real driver. Every number here is synthetic: it passes the MOD 11-2 check
(unless asked not to) but uses area code 99, which no province has.

    sim = IdCardSim(dev_dir=tmp)
    url = sim.start()
    sim.place(sample_card("resident"))     # or "gat_permit", "foreign_pr_2017", "foreign_pr_2023"
    sim.place(sample_card("resident", bad_check=True))
    sim.fail_next(0x41)                    # the next command answers SW3 41 (read failed)
    sim.remove()

Like a real SAM, a card that has been read answers find-card with 80
until it is removed and placed again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
from typing import Any

from hal.protocols import sam
from hal.sim.base import Action, PtySimulator, then

__all__ = ["SAMPLE_KINDS", "IdCardSim", "sample_card", "synthetic_number"]

SAMPLE_KINDS = ("resident", "gat_permit", "foreign_pr_2017", "foreign_pr_2023")


def synthetic_number(body17: str, *, bad_check: bool = False) -> str:
    """``body17`` plus its check character (or a wrong one)."""
    good = sam.id_check_char(body17)
    if not bad_check:
        return body17 + good
    return body17 + ("0" if good != "0" else "1")


def _wlt(seed: str) -> bytes:
    # An opaque stand-in for the 1024-byte WLT photo (no open decoder exists anyway).
    out = b"WLTSIM"
    while len(out) < sam.PHOTO_LEN:
        out += hashlib.sha256(seed.encode() + out[-32:]).digest()
    return out[:sam.PHOTO_LEN]


def sample_card(kind: str = "resident", *, bad_check: bool = False, long_term: bool = False,
                fingerprint: bool = False) -> sam.IdCard:
    """A synthetic card of one of the four types."""
    d = dt.date
    common: dict[str, Any] = {"photo_wlt": _wlt(kind), "fingerprint": _wlt("fp" + kind) if fingerprint else None}
    if kind == "resident":
        card = sam.IdCard("resident", name="测试样例", sex="male", nation_code="01", birth=d(1990, 1, 1),
                          address="模拟省测试市样例区示范路1号", authority="测试市公安局模拟分局",
                          id_number=synthetic_number("99000019900101001", bad_check=bad_check),
                          valid_from=d(2020, 1, 1), valid_to=None if long_term else d(2040, 1, 1),
                          long_term=long_term, **common)
    elif kind == "gat_permit":
        card = sam.IdCard("gat_permit", name="测试港澳", sex="female", birth=d(1985, 6, 30),
                          address="模拟省测试市港澳路2号", authority="测试市公安局",
                          id_number=synthetic_number("99000019850630002", bad_check=bad_check),
                          valid_from=d(2021, 3, 1), valid_to=d(2026, 3, 1), pass_number="H99999999",
                          issue_count="01", **common)
    elif kind == "foreign_pr_2017":
        card = sam.IdCard("foreign_pr_2017", name_en="SAMPLE, TEST PERSON", sex="male",
                          id_number="ZZZ990101000001" if not bad_check else "ZZZ99010100000",
                          nationality="ZZZ", name="测试外", valid_from=d(2017, 7, 1), valid_to=d(2027, 7, 1),
                          birth=d(1970, 12, 31), card_version="01", authority_code="9999", **common)
    elif kind == "foreign_pr_2023":
        card = sam.IdCard("foreign_pr_2023", name="测试永居", sex="female", nation_code="98",
                          birth=d(1980, 2, 29), name_en="SAMPLE, NEW CARD",
                          id_number=synthetic_number("99990019800229003", bad_check=bad_check),
                          authority="国家移民管理局", valid_from=d(2023, 12, 1), valid_to=d(2033, 12, 1),
                          other_number="ZZZ990101", issue_count="00", nationality="ZZZ", **common)
    else:
        raise ValueError(f"unknown card kind {kind!r}; one of {', '.join(SAMPLE_KINDS)}")
    # The checked flag is what parsing the block would say; keep the record honest.
    return dataclasses.replace(card, check_ok=sam.parse_text_block(sam.encode_text_block(card)).check_ok)


class IdCardSim(PtySimulator):
    """The reader: SAM status, find / select / read, SW3 errors on demand."""

    name = "idcard"

    def __init__(self, name: str | None = None, *, dev_dir: Any) -> None:
        super().__init__(name, dev_dir=dev_dir)
        self._state = threading.Lock()
        self.card: sam.IdCard | None = None
        self._consumed = False      # read once: must be lifted before the next find succeeds
        self._selected = False
        self._fail: list[int] = []
        self.sam_fault = False
        self.corrupt_next = False   # send the next reply with a wrong checksum
        self.commands: list[tuple[int, int]] = []
        self._deframer = sam.Deframer(sam.decode_command)

    def on_plug(self) -> None:
        self._deframer = sam.Deframer(sam.decode_command)

    # -- controls ----------------------------------------------------------------------

    def place(self, card: sam.IdCard) -> None:
        with self._state:
            self.card, self._consumed, self._selected = card, False, False

    def remove(self) -> None:
        with self._state:
            self.card, self._consumed, self._selected = None, False, False

    def fail_next(self, sw3: int, count: int = 1) -> None:
        """The next ``count`` commands answer with status ``sw3``."""
        with self._state:
            self._fail += [sw3] * count

    def control_actions(self) -> dict[str, Action]:
        actions = super().control_actions()
        def place(args: list[str]) -> None:
            self.place(sample_card(args[0] if args else "resident", bad_check="bad" in args[1:],
                                   long_term="long" in args[1:]))

        def sam_fault(args: list[str]) -> None:
            self.sam_fault = not args or args[0] != "off"

        actions.update({
            "place": then(place, self._summary),
            "remove": then(lambda _a: self.remove(), self._summary),
            "fail": then(lambda a: self.fail_next(int(a[0], 16) if a else 0x41), self._summary),
            "sam_fault": then(sam_fault, self._summary),
            "status": lambda _a: self._summary(),
        })
        return actions

    def _summary(self) -> dict[str, Any]:
        return {"card": self.card.card_type if self.card else None, "consumed": self._consumed,
                "sam_fault": self.sam_fault, "fail_next": [f"{sw:02X}" for sw in self._fail],
                "plugged": self.plugged, "silent": self.silent}

    # -- the protocol ------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        for item in self._deframer.feed(data):
            if isinstance(item, sam.SamProtocolError):
                reply = sam.Response(0x10)          # what a SAM says to a checksum error
            else:
                self.commands.append((item.cmd, item.para))
                reply = self.handle(item)
            frame = sam.encode_response(reply)
            if self.corrupt_next:
                self.corrupt_next = False
                frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
            self.send(frame)

    def handle(self, command: sam.Command) -> sam.Response:
        with self._state:
            if self._fail:
                return sam.Response(self._fail.pop(0))
            key = (command.cmd, command.para)
            if key == (0x11, 0xFF):
                return sam.Response(0x60 if self.sam_fault else sam.SW_OK)
            if self.sam_fault:
                return sam.Response(0x60)
            if key == (0x12, 0xFF):
                return sam.Response(sam.SW_OK, bytes.fromhex("0501") + bytes(14))
            if key in ((0x10, 0xFF), (0x61, 0xFF)):
                return sam.Response(sam.SW_OK)
            card_there = self.card is not None and not self._consumed
            if key == (0x20, 0x01):
                self._selected = False
                return sam.Response(sam.SW_FOUND, bytes(4)) if card_there else sam.Response(sam.SW_NO_CARD)
            if key == (0x20, 0x02):
                self._selected = card_there
                return sam.Response(sam.SW_OK, bytes(8)) if card_there else sam.Response(0x81)
            if key in ((0x30, 0x01), (0x30, 0x10)):
                if not (card_there and self._selected):
                    return sam.Response(0x41)
                assert self.card is not None
                self._consumed, self._selected = True, False
                return sam.build_read_response(self.card, fingerprint=command.para == 0x10)
            if key == (0x30, 0x03):
                return sam.Response(sam.SW_EMPTY)
            return sam.Response(0x21)
