# SPDX-License-Identifier: Apache-2.0
"""The board layer: the only firmware module that touches ``machine``.

Everything else receives pins, the UART, ADC channels and the watchdog as
objects, so it runs on the MicroPython unix port (with a stand-in
``machine``) and can be read without the wiring in mind. The pin map is in
``README.md`` and in ``PINS``/``KEY_ROWS``/``KEY_COLS`` below; change both together.

    b = Board()
    uart = b.uart()
    b.wdt_start(8000)
    b.wdt_feed()
"""

import machine

try:
    from micropython import const
except ImportError:  # CPython (type checks, tests): const is a compiler hint only
    def const(x):  # type: ignore
        return x

BAUD = const(115200)

# GPIO numbers on the Pico. Rows are driven low one at a time; columns and
# switches read low when closed (internal pull-ups).
KEY_ROWS = (2, 3, 4, 5)
KEY_COLS = (6, 7, 8)
PINS = {
    "uart_tx": 0, "uart_rx": 1,
    "joy_up": 9, "joy_down": 10, "joy_left": 11, "joy_right": 12, "joy_press": 13,
    "tamper": 14,
    "led_ring": 16,
    "relay_power": 18, "relay_1": 19, "relay_2": 20,
    "led_status": 25,
    "adc_humidity": 26,
}
RING_LEDS = const(12)
# ADC channel 4 is the RP2040's internal temperature sensor: the chip sits in
# the enclosure, so it reads enclosure air within a couple of degrees.
ADC_TEMP_CHANNEL = const(4)


class Board:
    """Constructs the machine objects the application is given."""

    def __init__(self):
        self._wdt = None

    def uart(self):
        return machine.UART(0, baudrate=BAUD, tx=machine.Pin(PINS["uart_tx"]),
                            rx=machine.Pin(PINS["uart_rx"]), rxbuf=2048, timeout=0)

    def key_rows(self):
        return [machine.Pin(n, machine.Pin.OUT, value=1) for n in KEY_ROWS]

    def key_cols(self):
        return [machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP) for n in KEY_COLS]

    def joystick(self):
        return {name: machine.Pin(PINS["joy_" + name], machine.Pin.IN, machine.Pin.PULL_UP)
                for name in ("up", "down", "left", "right", "press")}

    def tamper(self):
        return machine.Pin(PINS["tamper"], machine.Pin.IN, machine.Pin.PULL_UP)

    def adc_temperature(self):
        return machine.ADC(ADC_TEMP_CHANNEL)

    def adc_humidity(self):
        return machine.ADC(machine.Pin(PINS["adc_humidity"]))

    def ring(self):
        import neopixel  # rp2 port module; only the board layer knows the LED chip
        return neopixel.NeoPixel(machine.Pin(PINS["led_ring"], machine.Pin.OUT), RING_LEDS)

    def relays(self):
        """Power relay (index 0, cuts the Pi's supply while on) then relays 1, 2."""
        return [machine.Pin(PINS[n], machine.Pin.OUT, value=0)
                for n in ("relay_power", "relay_1", "relay_2")]

    def status_led(self):
        return machine.Pin(PINS["led_status"], machine.Pin.OUT, value=0)

    def wdt_start(self, timeout_ms):
        # Once started the RP2040 watchdog cannot be stopped; 8388 ms is its
        # maximum period.
        self._wdt = machine.WDT(timeout=min(timeout_ms, 8388))

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        machine.reset()

    def reset_cause(self):
        """``"power_on"``, ``"wdt"`` or ``"other"`` as the chip reports it.

        On the RP2040 ``machine.reset()`` itself goes through the watchdog, so
        the firmware records its own deliberate resets (see ``update.py``).
        """
        cause = machine.reset_cause()
        if cause == machine.PWRON_RESET:
            return "power_on"
        if cause == machine.WDT_RESET:
            return "wdt"
        return "other"

    def unique_id(self):
        import binascii
        return binascii.hexlify(machine.unique_id()).decode()
