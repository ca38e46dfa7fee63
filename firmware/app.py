# SPDX-License-Identifier: Apache-2.0
"""The co-processor application: link, inputs, outputs, host watchdog, update.

Started by the loader (``main.py``) with the slot it booted::

    import asyncio, app
    asyncio.run(app.main("app_a", trial=False))

Three tasks share one asyncio loop: the link (read, dispatch, write every
few ms), the inputs scan, and the slow housekeeping (environment, host
watchdog, ring animation, hardware watchdog feed).
"""

import asyncio
import json

import link
import update
from board import Board
from hostwdt import HostWatchdog, PolicyError, check_policy
from inputs import Environment, Joystick, Keypad, Tamper
from outputs import OutputError, Relays, Ring

try:
    from micropython import const
except ImportError:  # CPython: const is a compiler hint only
    def const(x):  # type: ignore
        return x

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython (type checks only)
    from link import ticks_add, ticks_diff, ticks_ms  # type: ignore

_HW_WDT_MS = const(8000)
_HEARTBEAT_MS = const(5000)
_ENV_MS = const(60000)
_ENV_CHECK_MS = const(1000)
POLICY_FILE = "wdt.json"
# The ring when the host is overdue: the kiosk is visibly out of service.
_OVERDUE = ("blink", (255, 0, 0))


def _load_json(path):
    try:
        with open(path) as f:
            obj = json.loads(f.read())
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


class App:
    """Owns the link and dispatches messages to inputs, outputs and updater."""

    def __init__(self, board, slot_dir, trial=False):
        now = ticks_ms()
        self.board = board
        self.slot_dir = slot_dir
        self.slot = slot_dir[-1:]
        self.trial = trial
        self.version = _load_json(slot_dir + "/manifest.json").get("version", "0")
        self.reset_cause = update.take_cause() or board.reset_cause()
        self.booted = now
        self.uart = board.uart()
        self.link = link.Link(queue=16, retry_ms=300, retries=10)
        self.link.on_result = self._on_result
        self.keypad = Keypad(board.key_rows(), board.key_cols())
        self.joystick = Joystick(board.joystick())
        self.tamper = Tamper(board.tamper())
        self.env = Environment(board.adc_temperature(), board.adc_humidity())
        self.ring = Ring(board.ring())
        self.relays = Relays(board.relays())
        try:
            policy = check_policy(_load_json(POLICY_FILE))
        except PolicyError:
            policy = None
        self.hostwdt = HostWatchdog(self.relays.power, now, policy)
        self.updater = update.Updater(active=self.slot)
        self.dropped = 0
        self.errors = 0
        self.last_error = ""
        self._hello_seq = -1
        self._reset_at = None
        self._last_env = None
        self._env_sent = now
        self._overdue = False
        self._pending_hello = False
        self._saved = ("off", (0, 0, 0))

    # -- sending -----------------------------------------------------------
    def send(self, mtype, obj):
        try:
            return self.link.send(mtype, link.dumps(obj))
        except link.LinkBusy:
            # Nobody is draining the link (agent down): drop, count, go on.
            self.dropped += 1
            return -1

    def hello(self):
        now = ticks_ms()
        self._hello_seq = self.send(link.HELLO, {
            "v": self.version, "proto": link.PROTOCOL, "slot": self.slot, "trial": self.trial,
            "up": ticks_diff(now, self.booted), "rc": self.reset_cause,
            "host": self.hostwdt.status(now), "wdt": self.hostwdt.policy,
            "id": self.board.unique_id()})

    def _on_result(self, seq, mtype, ok, err):
        if mtype == link.HELLO and seq == self._hello_seq and ok and self.trial:
            # The new image reached the agent: keep it.
            update.confirm(self.slot)
            self.trial = False

    # -- receiving ---------------------------------------------------------
    def handle(self, mtype, seq, payload, now):
        """Handle one request; return None or an error code for the ack."""
        if mtype == link.FW_CHUNK:
            try:
                offset, data = link.parse_chunk(payload)
                self.updater.chunk(offset, data)
            except (link.LinkError, update.UpdateError) as exc:
                return getattr(exc, "code", "chunk")
            return None
        try:
            msg = link.loads(payload)
        except link.LinkError:
            return "payload"
        if mtype == link.HEARTBEAT:
            self.hostwdt.beat(now)
        elif mtype == link.HELLO:
            # A (re)started agent: answer with our hello and tell it the
            # current tamper and environment state it may have missed.
            self.hostwdt.beat(now)
            self._pending_hello = True
            self.tamper.report()
            self._last_env = None
        elif mtype == link.SET_OUTPUT:
            return self._set_output(msg)
        elif mtype == link.WDT_POLICY:
            try:
                policy = check_policy(msg)
            except PolicyError:
                return "policy"
            self.hostwdt.set_policy(policy, now)
            with open(POLICY_FILE, "w") as f:
                f.write(json.dumps(policy))
        elif mtype == link.FW_BEGIN:
            try:
                self.updater.begin(msg.get("size"), msg.get("sha256"), msg.get("version", ""),
                                   msg.get("confirm_s", 60))
            except update.UpdateError as exc:
                return exc.code
            except OSError:
                return "flash"
        elif mtype == link.FW_COMMIT:
            try:
                self.updater.commit()
            except update.UpdateError as exc:
                return exc.code
            except OSError:
                return "flash"
            update.note_cause("update")
            # Reset once the ack is on the wire.
            self._reset_at = ticks_add(now, 300)
        elif mtype not in (link.LOG, link.ERROR):
            return "unknown_type"
        return None

    def _set_output(self, msg):
        try:
            led = msg.get("led")
            if led is not None:
                self.ring.set(led.get("p", "solid"), tuple(led.get("c", (0, 0, 0))))
            if "relay" in msg:
                self.relays.set(msg["relay"], bool(msg.get("on")))
        except (OutputError, AttributeError, TypeError, ValueError):
            return "output"
        return None

    # -- tasks -------------------------------------------------------------
    async def link_task(self):
        uart = self.uart
        lk = self.link
        while True:
            now = ticks_ms()
            n = uart.any()
            if n:
                data = uart.read(n)
                if data:
                    self._pending_hello = False
                    for mtype, seq, payload in lk.feed(data, now):
                        try:
                            err = self.handle(mtype, seq, payload, now)
                        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the loop
                            self.errors += 1
                            self.last_error = repr(exc)
                            err = "internal"
                        lk.ack(seq, err)
                    if self._pending_hello:
                        self.hello()
            out = lk.poll(now)
            if out:
                uart.write(out)
            if self._reset_at is not None and ticks_diff(now, self._reset_at) >= 0:
                self.board.reset()
            await asyncio.sleep_ms(5)

    async def input_task(self):
        while True:
            now = ticks_ms()
            for kind, value in self.keypad.poll(now) + self.joystick.poll(now) + self.tamper.poll(now):
                self.send(link.INPUT, {"k": kind, "v": value})
            await asyncio.sleep_ms(10)

    async def slow_task(self):
        next_beat = ticks_ms()
        next_env = next_beat
        while True:
            now = ticks_ms()
            self.board.wdt_feed()
            what = self.hostwdt.tick(now)
            if what == "fired":
                self.send(link.LOG, {"l": "warning", "m": "host watchdog: power-cycling the host"})
            elif what == "suppressed":
                self.send(link.LOG, {"l": "error", "m": "host watchdog: hourly limit reached"})
            overdue = self.hostwdt.expired(now)
            if overdue != self._overdue:
                self._overdue = overdue
                if overdue:
                    self._saved = (self.ring.pattern, self.ring.colour)
                    self.ring.set(_OVERDUE[0], _OVERDUE[1])
                else:
                    self.ring.set(self._saved[0], self._saved[1])
            self.ring.tick(now)
            if ticks_diff(now, next_env) >= 0:
                next_env = ticks_add(now, _ENV_CHECK_MS)
                self._env(now)
            if ticks_diff(now, next_beat) >= 0:
                next_beat = ticks_add(now, _HEARTBEAT_MS)
                counters = self.link.counters()
                counters["dropped"] = self.dropped
                counters["errors"] = self.errors
                self.send(link.HEARTBEAT, {"up": ticks_diff(now, self.booted), "link": counters})
            await asyncio.sleep_ms(20)

    def _env(self, now):
        reading = self.env.read()
        last = self._last_env
        # Report by exception (a real change) plus a slow period.
        if (last is None or abs(reading["t"] - last["t"]) >= 0.5 or abs(reading["h"] - last["h"]) >= 2
                or ticks_diff(now, self._env_sent) >= _ENV_MS):
            self._last_env = reading
            self._env_sent = now
            self.send(link.ENV, reading)

    async def run(self):
        self.board.wdt_start(_HW_WDT_MS)
        self.hello()
        asyncio.create_task(self.input_task())
        asyncio.create_task(self.slow_task())
        await self.link_task()


async def main(slot_dir, trial=False):
    """Run the application from ``slot_dir`` (``"app_a"`` or ``"app_b"``)."""
    await App(Board(), slot_dir, trial).run()
