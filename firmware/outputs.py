# SPDX-License-Identifier: Apache-2.0
"""Outputs: the LED ring (colour and pattern) and the relays.

The ring is redrawn only when the frame changes, because a NeoPixel write
blocks for ~30 us per LED with interrupts off and the UART must not starve.

    ring = Ring(board.ring())
    ring.set("blink", (255, 0, 0))
    ring.tick(ticks_ms())
"""

try:
    from micropython import const
except ImportError:  # CPython: const is a compiler hint only
    def const(x):  # type: ignore
        return x

_BLINK_MS = const(500)
_PULSE_MS = const(2000)
_STEPS = const(16)

PATTERNS = ("off", "solid", "blink", "pulse", "spin")


class OutputError(ValueError):
    """A set-output request names an unknown pattern, relay or colour."""

    code = "output.invalid"


class Ring:
    """A ring of NeoPixels showing one colour in one pattern."""

    def __init__(self, pixels):
        self._px = pixels
        self._n = len(pixels)
        self.pattern = "off"
        self.colour = (0, 0, 0)
        self._last = None

    def set(self, pattern, colour=(0, 0, 0)):
        if pattern not in PATTERNS:
            raise OutputError("unknown pattern")
        if len(colour) != 3:
            raise OutputError("colour needs three channels")
        rgb = []
        for c in colour:
            if not isinstance(c, int) or not 0 <= c <= 255:
                raise OutputError("colour channel out of range")
            rgb.append(c)
        self.pattern = pattern
        self.colour = (rgb[0], rgb[1], rgb[2])
        self._last = None  # force a redraw

    def _frame(self, now):
        r, g, b = self.colour
        p = self.pattern
        if p == "off":
            return ("all", 0, 0, 0)
        if p == "solid":
            return ("all", r, g, b)
        if p == "blink":
            on = (now // _BLINK_MS) % 2 == 0
            return ("all", r, g, b) if on else ("all", 0, 0, 0)
        if p == "pulse":
            phase = (now % _PULSE_MS) * 2 * _STEPS // _PULSE_MS
            level = phase if phase <= _STEPS else 2 * _STEPS - phase
            return ("all", r * level // _STEPS, g * level // _STEPS, b * level // _STEPS)
        # spin: one lit LED walking round the ring
        return ("one", (now // 100) % self._n, r, g, b)

    def tick(self, now):
        frame = self._frame(now)
        if frame == self._last:
            return
        self._last = frame
        if frame[0] == "all":
            self._px.fill((frame[1], frame[2], frame[3]))
        else:
            self._px.fill((0, 0, 0))
            self._px[frame[1]] = (frame[2], frame[3], frame[4])
        self._px.write()

    def state(self):
        return {"p": self.pattern, "c": list(self.colour)}


class Relays:
    """Relay outputs by index; index 0 is the Pi's power relay (watchdog-owned)."""

    def __init__(self, pins):
        self._pins = pins

    def __len__(self):
        return len(self._pins)

    def set(self, n, on):
        if not isinstance(n, int) or not 1 <= n < len(self._pins):
            # The power relay is not the agent's to switch: a wrong command
            # would cut its own supply.
            raise OutputError("no such relay")
        self._pins[n].value(1 if on else 0)

    def power(self, on):
        self._pins[0].value(1 if on else 0)

    def state(self):
        return [p.value() for p in self._pins]
