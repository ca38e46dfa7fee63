# SPDX-License-Identifier: Apache-2.0
"""A stand-in for the RP2040 ``machine`` module on the MicroPython unix port.

Test rig only: it is put on MICROPYPATH by the harness and never shipped in
a firmware image. It emulates the wiring of ``firmware/board.py``:

* ``UART`` opens the pty named by ``KIOSK_UART`` (raw, non-blocking reads);
* input pins, the keypad matrix and ADC channels follow commands appended
  to ``$KIOSK_IO_DIR/in.txt`` (``pin 14 1``, ``key 5 1``, ``adc 4 14000``);
* output pin changes, ring writes, WDT start and resets are appended to
  ``$KIOSK_IO_DIR/out.txt`` as ``<time_ns> <what> ...`` lines;
* ``reset()`` exits with status 3, which the harness treats as a reboot;
  ``reset_cause()`` reports ``KIOSK_RESET_CAUSE`` set by the harness.
"""

import os
import select
import sys
import termios
import time

PWRON_RESET = 1
WDT_RESET = 3

_IO = os.getenv("KIOSK_IO_DIR") or "."
_ROWS = (2, 3, 4, 5)
_COLS = (6, 7, 8)
_KEYMAP = ("123", "456", "789", "*0#")
# Idle levels: switches open (pulled up) except the tamper loop, closed to ground.
_levels = {14: 0}
_adc = {4: 14260, 0: 30000}
_pressed = set()
_outputs = {}
_offset = 0
_last_poll = 0


def _log(*words):
    with open(_IO + "/out.txt", "a") as f:
        f.write(" ".join([str(time.time_ns())] + [str(w) for w in words]) + "\n")


def _poll_inputs():
    global _offset, _last_poll
    now = time.ticks_ms()
    if time.ticks_diff(now, _last_poll) < 10:
        return
    _last_poll = now
    path = _IO + "/in.txt"
    try:
        size = os.stat(path)[6]
    except OSError:
        return
    if size <= _offset:
        return
    with open(path) as f:
        f.seek(_offset)
        data = f.read()
    end = data.rfind("\n") + 1
    _offset += len(data[:end].encode())
    for line in data[:end].split("\n"):
        w = line.split()
        if len(w) != 3:
            continue
        if w[0] == "pin":
            _levels[int(w[1])] = int(w[2])
        elif w[0] == "adc":
            _adc[int(w[1])] = int(w[2])
        elif w[0] == "key":
            for r, row in enumerate(_KEYMAP):
                c = row.find(w[1])
                if c >= 0:
                    if int(w[2]):
                        _pressed.add((r, c))
                    else:
                        _pressed.discard((r, c))


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, n, mode=-1, pull=-1, value=None):
        self.n = n
        self.mode = mode
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return _outputs.get(self.n, 0)
            _poll_inputs()
            if self.n in _COLS:
                c = _COLS.index(self.n)
                for r, row_pin in enumerate(_ROWS):
                    if (r, c) in _pressed and _outputs.get(row_pin, 1) == 0:
                        return 0
                return 1
            return _levels.get(self.n, 1)
        v = 1 if v else 0
        if _outputs.get(self.n) != v:
            _outputs[self.n] = v
            if self.n not in _ROWS:  # the keypad scan would flood the log
                _log("pin", self.n, v)
        return None


class ADC:
    def __init__(self, src):
        self.ch = src if isinstance(src, int) else {26: 0, 27: 1, 28: 2}[src.n]

    def read_u16(self):
        _poll_inputs()
        return _adc.get(self.ch, 0)


class UART:
    def __init__(self, uart_id, baudrate=115200, tx=None, rx=None, rxbuf=256, timeout=0):
        path = os.getenv("KIOSK_UART")
        if not path:
            raise OSError("KIOSK_UART is not set")
        self._f = open(path, "r+b")  # noqa: SIM115 - the port stays open for the process
        fd = self._f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][6] = 0  # VMIN: a read returns what is there, even nothing
        attrs[6][5] = 0  # VTIME
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)

    def any(self):
        return 1 if self._poll.poll(0) else 0

    def read(self, n=256):
        data = self._f.read(max(n, 256))
        return data or None

    def write(self, data):
        return self._f.write(data)


class WDT:
    def __init__(self, id=0, timeout=5000):
        _log("wdt", timeout)

    def feed(self):
        pass


def reset():
    _log("reset")
    sys.exit(3)


def reset_cause():
    return {"power_on": PWRON_RESET, "wdt": WDT_RESET}.get(os.getenv("KIOSK_RESET_CAUSE") or "", 0)


def unique_id():
    return b"\xe6\x61\x41\x04\x03\x32\x2b\x2c"


_log("boot", os.getenv("KIOSK_RESET_CAUSE") or "power_on")
