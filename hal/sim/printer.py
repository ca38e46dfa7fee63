# SPDX-License-Identifier: Apache-2.0
"""An ESC/POS receipt printer on a pty, keeping a readable transcript.

It parses what it receives with the codec's parser, answers ``DLE EOT 1..4``
(and ``GS r``) from its state, and records text (GB18030 in Chinese mode),
QR payloads and cuts.

    sim = PrinterSim(dev_dir=tmp); url = sim.start()
    sim.set_state(paper_near_end=True)   # or paper_out / cover_open / cutter_error
    sim.refill()
    print(sim.transcript_text())         # "回执 Receipt\\n[QR] https://…\\n[CUT partial]"

While the printer cannot print (paper out, cover open, cutter error) what
it receives is dropped and counted in ``dropped``, as a real one would not
print it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from hal.protocols import escpos
from hal.protocols.escpos import PrinterStatus
from hal.sim.base import Action, PtySimulator, then

__all__ = ["PrinterSim"]


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

    def on_plug(self) -> None:
        self._parser = escpos.EscposParser()

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
            "clear": then(lambda _a: self.clear(), self._summary),
            "status": lambda _a: self._summary(),
        })
        return actions

    def _summary(self) -> dict[str, Any]:
        st = self.state
        return {"plugged": self.plugged, "silent": self.silent, "printed_lines": len(self.transcript),
                **{f: getattr(st, f) for f in ("paper_near_end", "paper_out", "cover_open", "cutter_error")}}

    # -- the protocol ------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, escpos.StatusRequest):
                self.status_requests += 1
                self.send(bytes([self._status_byte(item)]))
            elif isinstance(item, escpos.EscposError):
                self.errors.append(str(item))
            elif isinstance(item, (escpos.Text, escpos.Qr, escpos.Cut)):
                if not self.state.ready:
                    self.dropped += 1
                    continue
                self.items.append(item)
                if isinstance(item, escpos.Text):
                    self.transcript.append(item.text)
                elif isinstance(item, escpos.Qr):
                    self.transcript.append(f"[QR] {item.data}")
                else:
                    self.transcript.append(f"[CUT {'partial' if item.partial else 'full'}]")

    def _status_byte(self, req: escpos.StatusRequest) -> int:
        with self._state_lock:
            st = self.state
        if req.kind == "gs_r":
            # GS r 1: paper sensor, b0-1 near end, b2-3 end (processed in order, not real time).
            return (0x03 if st.paper_near_end else 0) | (0x0C if st.paper_out else 0)
        return st.replies().get(req.n, 0x12)
