# SPDX-License-Identifier: Apache-2.0
"""Builds the HAL peripherals from configuration and bridges them to the loop.

With ``hal.backend = "sim"`` a serial device whose table has no ``url`` gets
its simulator, started here on a pty, and the real driver opens the pty;
one with a ``url`` is opened there with the real driver, so an external
simulator or a real device on a USB adapter can be mixed in.

    rig = Peripherals(cfg, on_event=handle)
    rig.start()                       # from the event loop
    rig.statuses()                    # {"door": {"state": "ok", ...}, ...}
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from agent.config import Config
from hal.backend import Backend, select_backend
from hal.device import DeviceEvent, Peripheral, SelftestResult
from hal.gpio import DebouncedInput, LightTower, PinFactory

__all__ = ["Peripherals"]

log = logging.getLogger(__name__)


class Peripherals:
    """Every configured peripheral, its simulator where simulated, and events."""

    def __init__(self, cfg: Config, *, on_event: Callable[[DeviceEvent], None],
                 backend: Backend | None = None, run_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.backend = backend or select_backend(cfg.hal.backend)
        # Simulators' pty links live in a private temporary directory: short
        # paths, nothing left in storage.dir, several agents side by side.
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="kiosk-sim-"))
        self._on_event = on_event
        self.devices: dict[str, Peripheral] = {}
        self.simulators: dict[str, Any] = {}
        self.simulated: set[str] = set()
        self.pins: PinFactory | None = None
        self.light_tower: LightTower | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- construction ---------------------------------------------------------

    def build(self) -> None:
        """Create every configured device (nothing is started yet)."""
        gpio = self.cfg.devices.gpio
        if gpio.enabled:
            self.pins = self.backend.pin_factory()
            debounce = gpio.debounce_ms / 1000.0
            for name, pin, high, alarm in (
                ("door", gpio.door, gpio.door_open_high, "door_open"),
                ("tamper", gpio.tamper, gpio.tamper_open_high, "tamper"),
                ("presence", gpio.presence, True, None),
            ):
                if pin is not None:
                    self._add(DebouncedInput(name, self.pins.pin(pin, "input"), active_high=high,
                                             debounce_s=debounce, alarm=alarm), self.backend.simulated)
            lamps = {colour: self.pins.pin(number, "output") if number is not None else None
                     for colour, number in (("red", gpio.light_red), ("amber", gpio.light_amber),
                                            ("green", gpio.light_green), ("buzzer", gpio.buzzer))}
            if any(lamps.values()):
                self.light_tower = LightTower(red=lamps["red"], amber=lamps["amber"], green=lamps["green"],
                                              buzzer=lamps["buzzer"])
                self.light_tower.mode = self.cfg.kiosk.initial_service_mode
                self._add(self.light_tower, self.backend.simulated)

    def _add(self, device: Peripheral, simulated: bool) -> None:
        self.devices[device.name] = device
        if simulated:
            self.simulated.add(device.name)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.devices:
            self.build()
        for name, device in self.devices.items():
            try:
                device.start(self._emit)
            except Exception as exc:  # noqa: BLE001 - one bad device must not stop the kiosk
                log.error("%s failed to start: %s", name, exc)

    def stop(self) -> None:
        for name, device in reversed(list(self.devices.items())):
            try:
                device.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("%s did not stop cleanly: %s", name, exc)
        for sim in reversed(list(self.simulators.values())):
            try:
                sim.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("simulator did not stop cleanly: %s", exc)
        if self.pins is not None:
            self.pins.close()
        if self.run_dir.name.startswith("kiosk-sim-"):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _emit(self, event: DeviceEvent) -> None:
        # Called on HAL threads; agent state belongs to the loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_event, event)

    # -- queries --------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {name: device.status().as_dict() for name, device in self.devices.items()}

    def inventory(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, device in self.devices.items():
            entry = {k: v for k, v in device.info().items() if v is not None}
            entry["simulated"] = name in self.simulated
            out[name] = entry
        return out

    def selftest(self) -> list[SelftestResult]:
        results = []
        for name, device in self.devices.items():
            try:
                results.append(device.selftest())
            except Exception as exc:  # noqa: BLE001 - a crash is a failed test, named
                results.append(SelftestResult(name, False, f"{exc.__class__.__name__}: {exc}"))
        return results

    def sim_actions(self) -> dict[str, dict[str, Callable[[list[str]], dict[str, Any]]]]:
        """Controls for ``kiosk-agent sim``: inputs to drive, simulators to upset."""
        actions: dict[str, dict[str, Callable[[list[str]], dict[str, Any]]]] = {}
        for name, device in self.devices.items():
            if isinstance(device, DebouncedInput) and hasattr(device.pin, "drive_high"):
                actions[name] = _input_actions(device)
        for name, sim in self.simulators.items():
            control = getattr(sim, "control_actions", None)
            if callable(control):
                actions.setdefault(name, {}).update(control())
        if self.light_tower is not None:
            tower = self.light_tower
            actions["light_tower"] = {"status": lambda _a: {"lit": tower.lit(), "mode": tower.mode}}
        return actions

    def show_mode(self, mode: str) -> None:
        if self.light_tower is not None:
            self.light_tower.show(mode)


def _input_actions(device: DebouncedInput) -> dict[str, Callable[[list[str]], dict[str, Any]]]:
    pin: Any = device.pin

    def drive(active: bool) -> dict[str, Any]:
        (pin.drive_high if active == device.active_high else pin.drive_low)()
        return {"active": active}

    return {
        "open": lambda _a: drive(True), "close": lambda _a: drive(False),
        "on": lambda _a: drive(True), "off": lambda _a: drive(False),
        "status": lambda _a: {"active": device.active},
    }
