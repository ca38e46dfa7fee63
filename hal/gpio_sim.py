# SPDX-License-Identifier: Apache-2.0
"""The simulated GPIO backend: inputs you drive, outputs that are recorded.

Ships with the package (as gpiozero's mock pins do) so ``make run``, the
tests and a developer's laptop all use the same pins.

    factory = SimPinFactory()
    pin = factory.pin(17, "input")
    pin.drive_high()
    lamp = factory.pin(5, "output"); lamp.write(True)
    lamp.states        # [(t0, False), (t1, True)]
"""

from __future__ import annotations

import threading
import time

from hal.gpio import EdgeHandler, Pin, PinFactory

__all__ = ["SimPin", "SimPinFactory"]


class SimPin(Pin):
    """A pin whose level tests set; every change is kept in ``states``."""

    def __init__(self, number: int, mode: str, initial: bool = False) -> None:
        super().__init__(number, mode)
        self._value = initial
        self._handler: EdgeHandler | None = None
        self._lock = threading.Lock()
        self.states: list[tuple[float, bool]] = [(time.monotonic(), initial)]

    def _read(self) -> bool:
        return self._value

    def _write(self, value: bool) -> None:
        self._set(value)

    def _set_edge_handler(self, handler: EdgeHandler | None) -> None:
        self._handler = handler

    def _set(self, value: bool) -> None:
        with self._lock:
            if value == self._value:
                return
            self._value = value
            self.states.append((time.monotonic(), value))
            handler = self._handler
        if handler is not None:
            handler()

    def drive_high(self) -> None:
        """Simulate the outside world pulling the line high."""
        self._set(True)

    def drive_low(self) -> None:
        self._set(False)

    def bounce(self, final: bool, edges: int = 5, gap_s: float = 0.002) -> None:
        """Chatter like a mechanical contact, then settle at ``final``."""
        for i in range(edges):
            self._set(bool(i % 2) != final)
            time.sleep(gap_s)
        self._set(final)


class SimPinFactory(PinFactory):
    """Factory for ``SimPin``; ``initial`` presets input levels by pin number."""

    name = "sim"

    def __init__(self, initial: dict[int, bool] | None = None) -> None:
        super().__init__()
        self.initial = dict(initial or {})

    def _make_pin(self, number: int, mode: str) -> Pin:
        return SimPin(number, mode, self.initial.get(number, False))

    def get(self, number: int) -> SimPin:
        """The pin already handed out for ``number`` (for driving it)."""
        pin = self._pins[number]
        assert isinstance(pin, SimPin)
        return pin
