# SPDX-License-Identifier: Apache-2.0
"""GPIO: backend-neutral pins, debounced sensors and the light tower.

A backend provides a ``PinFactory``; the sensors and outputs here are written
once against it, so their logic is tested through the simulated backend and
runs unchanged on RPi.GPIO.

    factory = select_backend("sim").pin_factory()
    door = DebouncedInput("door", factory.pin(17, "input"), alarm="door_open")
    door.start(print)
    factory.pin(17).drive_high()      # sim only: the door opens

Backend contract (as gpiozero's ``Factory``/``Pin``): a ``Pin`` **must**
override ``_read``, ``_write`` and ``_set_edge_handler``; it **may** override
``close``. A ``PinFactory`` **must** override ``_make_pin``; it **may**
override ``close``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hal.device import DEGRADED, OFFLINE, OK, DeviceEvent, DeviceStatus, Emit, Peripheral, SelftestResult
from hal.exc import DeviceClosed, PinInUse

__all__ = ["Pin", "PinFactory", "DebouncedInput", "LightTower", "MODE_LIGHTS"]

EdgeHandler = Callable[[], None]


class Pin:
    """One GPIO line, as a backend exposes it."""

    def __init__(self, number: int, mode: str) -> None:
        self.number = number
        self.mode = mode
        self.closed = False

    def read(self) -> bool:
        self._check_open()
        return self._read()

    def write(self, value: bool) -> None:
        self._check_open()
        self._write(bool(value))

    def on_edge(self, handler: EdgeHandler | None) -> None:
        """Call ``handler`` (from a backend thread) on every edge, or stop."""
        self._check_open()
        self._set_edge_handler(handler)

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise DeviceClosed(f"GPIO{self.number} is closed")

    def _read(self) -> bool:
        raise NotImplementedError

    def _write(self, value: bool) -> None:
        raise NotImplementedError

    def _set_edge_handler(self, handler: EdgeHandler | None) -> None:
        raise NotImplementedError


class PinFactory:
    """Hands out pins and refuses two devices on one pin."""

    name = "abstract"

    def __init__(self) -> None:
        self._pins: dict[int, Pin] = {}
        self._lock = threading.Lock()

    def pin(self, number: int, mode: str = "input") -> Pin:
        with self._lock:
            existing = self._pins.get(number)
            if existing is not None and not existing.closed:
                raise PinInUse(f"GPIO{number} is already in use as {existing.mode}")
            pin = self._make_pin(number, mode)
            self._pins[number] = pin
            return pin

    def close(self) -> None:
        with self._lock:
            for pin in self._pins.values():
                pin.close()
            self._pins.clear()

    def _make_pin(self, number: int, mode: str) -> Pin:
        raise NotImplementedError


class _Settler:
    """One thread settles every debounced input: it sleeps until the earliest deadline.

    An edge only moves its input's deadline (no thread, no timer per edge),
    so a contact chattering for 20 ms costs a dictionary write per edge.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[DebouncedInput, float] = {}
        self._thread: threading.Thread | None = None

    def schedule(self, device: DebouncedInput, deadline: float) -> None:
        with self._cond:
            self._due[device] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hal-gpio-settle", daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, device: DebouncedInput) -> None:
        with self._cond:
            self._due.pop(device, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()       # idle: no wake-ups at all
                now = time.monotonic()
                ready = [device for device, deadline in self._due.items() if deadline <= now]
                if not ready:
                    self._cond.wait(min(self._due.values()) - now)
                    continue
                for device in ready:
                    del self._due[device]
            for device in ready:
                device.settle()             # a later edge moved its deadline: settle() waits for it


_SETTLER = _Settler()


class DebouncedInput(Peripheral):
    """A switch or sensor that reports a stable level after ``debounce_s``.

    ``active_high`` says which level means "active" (door open, tamper loop
    open, presence detected). When ``alarm`` is set the device asserts that
    alarm code while active.

    Every edge pushes the settle deadline ``debounce_s`` further; once it
    passes, ``settle()`` reads the level and reports a change. By default one
    shared thread calls it at the deadline. With an injected ``clock`` (as
    ``firmware/inputs.py``'s ``Debounced`` takes ``now``) no thread runs:
    the caller advances the clock and calls ``settle()`` itself.
    """

    kind = "gpio-input"

    def __init__(self, name: str, pin: Pin, *, active_high: bool = True, debounce_s: float = 0.05,
                 alarm: str | None = None, clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.pin = pin
        self.active_high = active_high
        self.debounce_s = debounce_s
        self.alarm = alarm
        self._clock = clock or time.monotonic
        self._settler = _SETTLER if clock is None else None
        self._emit: Emit | None = None
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._active: bool | None = None
        self._since = time.time()

    @property
    def active(self) -> bool:
        return bool(self._active)

    @property
    def since(self) -> float:
        return self._since

    def start(self, emit: Emit) -> None:
        self._emit = emit
        self._active = self.pin.read() == self.active_high
        self._since = time.time()
        self.pin.on_edge(self._on_edge)

    def stop(self) -> None:
        self.pin.on_edge(None) if not self.pin.closed else None
        with self._lock:
            self._deadline = None
        if self._settler is not None:
            self._settler.cancel(self)
        self._emit = None

    def _on_edge(self) -> None:
        # Contacts bounce for milliseconds; every edge moves the deadline and
        # the level is read only once it has been quiet for debounce_s.
        with self._lock:
            deadline = self._deadline = self._clock() + self.debounce_s
        if self.debounce_s <= 0:
            self.settle()
        elif self._settler is not None:
            self._settler.schedule(self, deadline)

    def settle(self) -> bool:
        """Report the level if it has been quiet for ``debounce_s``; True if it changed."""
        with self._lock:
            if self._deadline is None or self._clock() < self._deadline:
                return False
            try:
                active = self.pin.read() == self.active_high
            except DeviceClosed:
                return False
            self._deadline = None
            if active == self._active:
                return False
            self._active = active
            self._since = time.time()
            emit, since = self._emit, self._since
        if emit:
            emit(DeviceEvent(self.name, "input", {"active": active, "since": since}))
        return True

    def status(self) -> DeviceStatus:
        if self.pin.closed:
            return DeviceStatus(OFFLINE, code=DeviceClosed.code, detail="pin closed")
        alarms = frozenset({self.alarm}) if (self.alarm and self._active) else frozenset()
        return DeviceStatus(DEGRADED if alarms else OK, alarms=alarms,
                            info={"active": bool(self._active), "pin": self.pin.number})

    def info(self) -> dict[str, object]:
        return {"kind": self.kind, "pin": self.pin.number}


# What the tower shows in each service mode: (red, amber, green).
MODE_LIGHTS = {
    "in_service": (False, False, True),
    "maintenance": (False, True, False),
    "out_of_service": (True, False, False),
}


class LightTower(Peripheral):
    """Red / amber / green lamps and a buzzer, following the service mode."""

    kind = "light-tower"

    def __init__(self, *, red: Pin | None, amber: Pin | None, green: Pin | None,
                 buzzer: Pin | None = None, name: str = "light_tower") -> None:
        self.name = name
        self.lamps = {"red": red, "amber": amber, "green": green}
        self.buzzer = buzzer
        self.mode = "in_service"

    def start(self, emit: Emit) -> None:
        self.show(self.mode)

    def stop(self) -> None:
        for pin in (*self.lamps.values(), self.buzzer):
            if pin is not None and not pin.closed:
                pin.write(False)

    def show(self, mode: str) -> None:
        red, amber, green = MODE_LIGHTS[mode]
        self.mode = mode
        for colour, value in (("red", red), ("amber", amber), ("green", green)):
            pin = self.lamps[colour]
            if pin is not None and not pin.closed:
                pin.write(value)

    def lit(self) -> dict[str, bool]:
        return {colour: bool(pin is not None and not pin.closed and pin.read())
                for colour, pin in self.lamps.items()}

    def buzz(self, on: bool) -> None:
        if self.buzzer is not None:
            self.buzzer.write(on)

    def status(self) -> DeviceStatus:
        return DeviceStatus(OK, info={"mode": self.mode, "lit": [c for c, v in self.lit().items() if v]})

    def selftest(self) -> SelftestResult:
        """Light each lamp in turn and read it back; restore the mode."""
        failed = []
        try:
            for colour, pin in self.lamps.items():
                if pin is None:
                    continue
                for value in (True, False):
                    pin.write(value)
                    if pin.read() != value:
                        failed.append(colour)
                        break
        finally:
            self.show(self.mode)
        return SelftestResult(self.name, not failed, "lamp did not follow: " + ", ".join(failed) if failed else "")
