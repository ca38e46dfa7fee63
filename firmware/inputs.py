# SPDX-License-Identifier: Apache-2.0
"""Inputs: keypad matrix, joystick, tamper loop, enclosure environment.

Each class takes its pins or ADC channels and is polled by the application
loop; ``poll(now)`` returns the events to report as ``(kind, value)``. Inputs
are debounced by requiring the same reading for ``debounce_ms``.

    keys = Keypad(board.key_rows(), board.key_cols())
    for kind, value in keys.poll(ticks_ms()):
        send(INPUT, {"k": kind, "v": value})
"""

try:
    from micropython import const
except ImportError:  # CPython: const is a compiler hint only
    def const(x):  # type: ignore
        return x

try:
    from time import ticks_diff
except ImportError:  # CPython (type checks, host tests)
    from firmware.lib.link import ticks_diff  # type: ignore

_DEBOUNCE_MS = const(30)

# Vision-test panel keypad, row-major as printed on the membrane.
KEYMAP = (("1", "2", "3"), ("4", "5", "6"), ("7", "8", "9"), ("*", "0", "#"))


class Debounced:
    """A boolean reading that must hold for ``debounce_ms`` before it counts."""

    def __init__(self, value, debounce_ms=_DEBOUNCE_MS):
        self.value = value
        self._candidate = value
        self._since = 0
        self._ms = debounce_ms

    def update(self, raw, now):
        """Return True when the debounced value changed on this reading."""
        if raw != self._candidate:
            self._candidate = raw
            self._since = now
            return False
        if raw != self.value and ticks_diff(now, self._since) >= self._ms:
            self.value = raw
            return True
        return False


class Keypad:
    """A row/column matrix: rows driven low one at a time, columns pulled up."""

    def __init__(self, rows, cols, keymap=KEYMAP, debounce_ms=_DEBOUNCE_MS):
        self._rows = rows
        self._cols = cols
        self._map = keymap
        self._keys = [[Debounced(False, debounce_ms) for _ in cols] for _ in rows]

    def poll(self, now):
        events = []
        for r, row in enumerate(self._rows):
            row.value(0)
            for c, col in enumerate(self._cols):
                if self._keys[r][c].update(col.value() == 0, now) and self._keys[r][c].value:
                    # Report presses only: the panel's meaning is "key chosen".
                    events.append(("key", self._map[r][c]))
            row.value(1)
        return events


class Joystick:
    """Five switches to ground; reports each direction as it closes."""

    def __init__(self, pins, debounce_ms=_DEBOUNCE_MS):
        self._pins = pins
        self._state = {}
        for name in pins:
            self._state[name] = Debounced(False, debounce_ms)

    def poll(self, now):
        events = []
        for name, pin in self._pins.items():
            st = self._state[name]
            if st.update(pin.value() == 0, now) and st.value:
                events.append(("joy", name))
        return events


class Tamper:
    """A closed loop to ground; a high reading (cut or opened) is tamper.

    Reports the state at start and every change, so the agent always knows it.
    """

    def __init__(self, pin, debounce_ms=_DEBOUNCE_MS):
        self._pin = pin
        self._st = Debounced(pin.value() == 1, debounce_ms)
        self._first = True

    @property
    def open(self):
        return self._st.value

    def report(self):
        """Report the state at the next poll even if unchanged (a new agent)."""
        self._first = True

    def poll(self, now):
        changed = self._st.update(self._pin.value() == 1, now)
        if changed or self._first:
            self._first = False
            return [("tamper", 1 if self._st.value else 0)]
        return []


class Environment:
    """Temperature from the RP2040 sensor, humidity from an analog sensor.

    The humidity sensor (HIH-4030 class, ratiometric) sits behind a divider
    so its 0-5 V output spans the ADC's 0-3.3 V.
    """

    def __init__(self, adc_temp, adc_humidity):
        self._t = adc_temp
        self._h = adc_humidity

    def read(self):
        """``{"t": deg C, "h": %RH}`` rounded to 0.1."""
        volts = self._t.read_u16() * 3.3 / 65535
        temp = 27 - (volts - 0.706) / 0.001721
        ratio = self._h.read_u16() / 65535
        humidity = (ratio - 0.1515) / 0.00636
        humidity = 0.0 if humidity < 0 else 100.0 if humidity > 100 else humidity
        return {"t": round(temp, 1), "h": round(humidity, 1)}
