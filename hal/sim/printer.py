# SPDX-License-Identifier: Apache-2.0
"""An ESC/POS receipt printer on a pty, keeping a readable transcript.

It parses what it receives with the codec's parser, answers ``DLE EOT 1..4``
(and ``GS r``) from its state, and records text (GB18030 in Chinese mode),
QR payloads and cuts.

    sim = PrinterSim(dev_dir=tmp); url = sim.start()
    sim.set_state(paper_near_end=True)   # or paper_out / cover_open / cutter_error
    sim.refill()
    print(sim.transcript_text())         # "回执 Receipt\\n[QR] https://…\\n[CUT partial]"
    sim.last_receipt()                   # the bytes of the last receipt printed (ESC @ ... cut)
    sim.receipt_lines()                  # the same rendered as paper lines (escpos.render_receipt)
    sim.add_receipt_listener(cb)         # cb(bytes) on the simulator's thread after each cut

While the printer cannot print (paper out, cover open, cutter error) what
it receives is dropped and counted in ``dropped``, as a real one would not
print it; such a job is not kept as a receipt either.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from hal.protocols import escpos
from hal.protocols.escpos import PrinterStatus
from hal.sim.base import Action, PtySimulator, then

__all__ = ["PrinterSim", "RECEIPTS_KEPT", "PAPER_COLUMNS"]

log = logging.getLogger(__name__)

RECEIPTS_KEPT = 5           # the developer panel shows the last; a few more help a test look back
MAX_JOB_BYTES = 1 << 20     # a "receipt" without a cut this long is not one: stop collecting it
PAPER_COLUMNS = 48          # 80 mm paper, font A


class PrinterSim(PtySimulator):
    """A thermal printer with paper, cover and cutter that can be upset."""

    name = "printer"

    def __init__(self, name: str | None = None, *, dev_dir: Any) -> None:
        super().__init__(name, dev_dir=dev_dir)
        self._state_lock = threading.Lock()
        self.state = PrinterStatus(responding=True)
        self.transcript: list[str] = []
        self.items: list[Any] = []
        self.errors: list[str] = []
        self.dropped = 0
        self.status_requests = 0
        self._parser = escpos.EscposParser()
        # Raw bytes of the receipts printed (ESC @ through the cut), newest last.
        self.receipts: collections.deque[bytes] = collections.deque(maxlen=RECEIPTS_KEPT)
        self.receipts_printed = 0
        self._job: bytearray | None = None       # the receipt being received, from its ESC @
        self._job_spoiled = False                 # part of it was dropped (the printer could not print)
        self._receipt_listeners: list[Callable[[bytes], None]] = []

    def on_plug(self) -> None:
        self._parser = escpos.EscposParser()
        self._job = None

    # -- receipts ----------------------------------------------------------------------

    def last_receipt(self) -> bytes | None:
        """The bytes of the last receipt printed, or None."""
        return self.receipts[-1] if self.receipts else None

    def receipt_lines(self, width: int = PAPER_COLUMNS) -> list[str]:
        """The last receipt as the paper shows it; [] when none was printed."""
        data = self.last_receipt()
        return escpos.render_receipt(data, width=width) if data is not None else []

    def add_receipt_listener(self, cb: Callable[[bytes], None]) -> None:
        """``cb(receipt_bytes)`` after each printed receipt, on the simulator's thread."""
        self._receipt_listeners.append(cb)

    def remove_receipt_listener(self, cb: Callable[[bytes], None]) -> None:
        if cb in self._receipt_listeners:
            self._receipt_listeners.remove(cb)

    # -- controls ----------------------------------------------------------------------

    def set_state(self, **flags: bool) -> None:
        """Set any of paper_near_end, paper_out, cover_open, cutter_error, unrecoverable."""
        with self._state_lock:
            st = dataclasses.replace(self.state, **flags)
            # What a real mechanism reports alongside: paper end implies near end,
            # and anything that stops printing takes the printer offline.
            stops = st.paper_out or st.cover_open or st.cutter_error or st.unrecoverable
            self.state = dataclasses.replace(
                st, paper_near_end=st.paper_near_end or st.paper_out, paper_stop=st.paper_out,
                error=st.cutter_error or st.unrecoverable, offline=stops)

    def refill(self) -> None:
        self.set_state(paper_out=False, paper_near_end=False)

    def clear(self) -> None:
        self.transcript.clear()
        self.items.clear()
        self.errors.clear()
        self.receipts.clear()
        self.dropped = 0

    def transcript_text(self) -> str:
        return "\n".join(self.transcript)

    def control_actions(self) -> dict[str, Action]:
        actions = super().control_actions()

        def flag(name: str, value: bool) -> Action:
            return then(lambda _a: self.set_state(**{name: value}), self._summary)

        actions.update({
            "paper_near_end": flag("paper_near_end", True), "paper_low": flag("paper_near_end", True),
            "paper_out": flag("paper_out", True), "cover_open": flag("cover_open", True),
            "cover_close": flag("cover_open", False), "cutter_error": flag("cutter_error", True),
            "cutter_ok": flag("cutter_error", False), "refill": then(lambda _a: self.refill(), self._summary),
            "transcript": lambda _a: {"transcript": self.transcript[-200:], "errors": self.errors[-20:]},
            "receipt": lambda a: {"lines": self.receipt_lines(int(a[0]) if a else PAPER_COLUMNS),
                                  "receipts_printed": self.receipts_printed},
            "clear": then(lambda _a: self.clear(), self._summary),
            "status": lambda _a: self._summary(),
        })
        return actions

    def _summary(self) -> dict[str, Any]:
        st = self.state
        return {"plugged": self.plugged, "silent": self.silent, "printed_lines": len(self.transcript),
                "receipts_printed": self.receipts_printed,
                **{f: getattr(st, f) for f in ("paper_near_end", "paper_out", "cover_open", "cutter_error")}}

    # -- the protocol ------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        items = self._parser.feed(data)
        # A receipt's bytes: from the chunk holding its ESC @ to the one holding its cut (status
        # polls in between render as nothing); chunks outside a job are only status polls.
        if any(isinstance(i, escpos.Init) for i in items):      # ESC @ starts a new one (a spoiled job ends)
            self._job, self._job_spoiled = bytearray(), False
        if self._job is not None:
            self._job += data
            if len(self._job) > MAX_JOB_BYTES:
                self._job = None
        for item in items:
            if isinstance(item, escpos.StatusRequest):
                self.status_requests += 1
                self.send(bytes([self._status_byte(item)]))
            elif isinstance(item, escpos.EscposError):
                self.errors.append(str(item))
            elif isinstance(item, (escpos.Text, escpos.Qr, escpos.Cut)):
                if not self.state.ready:
                    self.dropped += 1
                    self._job_spoiled = True
                    continue
                self.items.append(item)
                if isinstance(item, escpos.Text):
                    self.transcript.append(item.text)
                elif isinstance(item, escpos.Qr):
                    self.transcript.append(f"[QR] {item.data}")
                else:
                    self.transcript.append(f"[CUT {'partial' if item.partial else 'full'}]")
                    self._receipt_done()

    def _receipt_done(self) -> None:
        job, spoiled = self._job, self._job_spoiled
        self._job = None
        if job is None or spoiled:
            return
        receipt = bytes(job)
        self.receipts.append(receipt)
        self.receipts_printed += 1
        for cb in list(self._receipt_listeners):
            try:
                cb(receipt)
            except Exception:  # a listener's bug must not stop the printer
                log.exception("receipt listener failed")

    def _status_byte(self, req: escpos.StatusRequest) -> int:
        with self._state_lock:
            st = self.state
        if req.kind == "gs_r":
            # GS r 1: paper sensor, b0-1 near end, b2-3 end (processed in order, not real time).
            return (0x03 if st.paper_near_end else 0) | (0x0C if st.paper_out else 0)
        return st.replies().get(req.n, 0x12)
