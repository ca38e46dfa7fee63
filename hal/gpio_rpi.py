# SPDX-License-Identifier: Apache-2.0
"""The RPi.GPIO backend (on a Pi 5 install ``rpi-lgpio``, which provides the
same ``RPi.GPIO`` module over gpiochip; the two cannot coexist).

Importing this module never fails; constructing ``RpiPinFactory`` raises
``BackendUnavailable`` where RPi.GPIO cannot load (this machine, a Pi 5 with
the classic package: "Cannot determine SOC peripheral base address").
"""

from __future__ import annotations

from typing import Any

from hal.exc import BackendUnavailable, PinError
from hal.gpio import EdgeHandler, Pin, PinFactory

__all__ = ["RpiPinFactory"]


def _load_gpio() -> Any:
    try:
        import RPi.GPIO as gpio
    except (ImportError, RuntimeError) as exc:
        raise BackendUnavailable(
            f"RPi.GPIO cannot load here ({exc}); install the 'pi' extra on a Raspberry Pi "
            "(rpi-lgpio on a Pi 5)") from exc
    return gpio


class RpiPin(Pin):
    def __init__(self, gpio: Any, number: int, mode: str) -> None:
        super().__init__(number, mode)
        self._gpio = gpio
        try:
            if mode == "output":
                gpio.setup(number, gpio.OUT, initial=gpio.LOW)
            else:
                gpio.setup(number, gpio.IN, pull_up_down=gpio.PUD_UP)
        except (RuntimeError, ValueError) as exc:
            raise PinError(f"GPIO{number}: {exc}") from exc
        self._detecting = False

    def _read(self) -> bool:
        return bool(self._gpio.input(self.number))

    def _write(self, value: bool) -> None:
        self._gpio.output(self.number, self._gpio.HIGH if value else self._gpio.LOW)

    def _set_edge_handler(self, handler: EdgeHandler | None) -> None:
        if self._detecting:
            self._gpio.remove_event_detect(self.number)
            self._detecting = False
        if handler is not None:
            # RPi.GPIO calls back on its own thread with the channel number;
            # debouncing is ours (hal.gpio.DebouncedInput), not bouncetime's.
            self._gpio.add_event_detect(self.number, self._gpio.BOTH, callback=lambda _ch: handler())
            self._detecting = True

    def close(self) -> None:
        if not self.closed:
            try:
                self._set_edge_handler(None)
                self._gpio.cleanup(self.number)
            finally:
                super().close()


class RpiPinFactory(PinFactory):
    name = "rpigpio"

    def __init__(self) -> None:
        super().__init__()
        self._gpio = _load_gpio()
        self._gpio.setwarnings(False)
        self._gpio.setmode(self._gpio.BCM)

    def _make_pin(self, number: int, mode: str) -> Pin:
        return RpiPin(self._gpio, number, mode)
