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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import Config
from hal.backend import Backend, select_backend
from hal.device import DeviceEvent, Peripheral, SelftestResult
from hal.gpio import DebouncedInput, LightTower, PinFactory

__all__ = ["Peripherals"]

log = logging.getLogger(__name__)

LOOP_STALE_S = 5.0


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
        self.coproc: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_tick = time.monotonic()
        self._ticker: asyncio.TimerHandle | None = None

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

        self._build_serial()
        camera = self.cfg.devices.camera
        if camera.enabled:
            from hal.camera import CameraDevice
            self._add(CameraDevice("camera", self.backend.camera(width=camera.width, height=camera.height)),
                      self.backend.simulated)
        if self.cfg.devices.coproc.enabled:
            self._build_coproc()

    def _build_serial(self) -> None:
        from hal.idcard import IdCardDevice
        from hal.printer import PrinterDevice
        from hal.scanner import ScannerDevice
        from hal.sim import SIMULATORS

        for name, cls in (("idcard", IdCardDevice), ("printer", PrinterDevice), ("scanner", ScannerDevice)):
            dc = getattr(self.cfg.devices, name)
            if not dc.enabled:
                continue
            url = dc.url
            simulated = self.backend.simulated and url is None
            if url is None and not simulated:
                continue   # the real backend drives only the devices whose table gives a url
            if simulated:
                sim = SIMULATORS[name](dev_dir=self.run_dir / "dev")
                url = sim.start()
                self.simulators[name] = sim
            assert url is not None
            self._add(cls(name=name, url=url, baudrate=dc.baudrate, poll_interval_s=dc.poll_interval_s),
                      simulated)

    def _build_coproc(self) -> None:
        from hal.coproc import CoprocDevice, shipped_firmware

        cc = self.cfg.devices.coproc
        url = cc.url
        simulated = self.backend.simulated and url is None
        if url is None and not simulated:
            return
        if simulated:
            from hal.sim.coproc import FirmwareRunner
            try:
                runner = FirmwareRunner(self.run_dir / "coproc" / "flash", dev_dir=self.run_dir / "dev")
            except FileNotFoundError as exc:
                log.error("co-processor simulator unavailable: %s", exc)
                return
            runner.install()
            runner.start()
            self.simulators["coproc"] = runner
            url = runner.url
        assert url is not None      # configured, or the simulator's pty
        firmware = shipped_firmware() if cc.firmware_public_keys else None
        self.coproc = CoprocDevice(
            url, baudrate=cc.baudrate, heartbeat_s=cc.poll_interval_s,
            offline_after_s=max(4.0, 3 * cc.poll_interval_s), temp_high_c=cc.temp_high_c,
            watchdog={"enabled": int(cc.watchdog_enabled), "timeout_s": cc.watchdog_timeout_s,
                      "grace_s": cc.watchdog_grace_s, "max_per_hour": cc.watchdog_max_per_hour},
            public_keys=cc.firmware_public_keys, firmware=firmware, alive=self._loop_alive)
        self.coproc.mode = self.cfg.kiosk.initial_service_mode
        self._add(self.coproc, simulated)

    def _loop_alive(self) -> bool:
        # Heartbeats to the co-processor's host watchdog stop when the event
        # loop stops ticking, so a hung agent gets its board power-cycled.
        return time.monotonic() - self._loop_tick < LOOP_STALE_S

    def _tick(self) -> None:
        self._loop_tick = time.monotonic()
        if self._loop is not None:
            self._ticker = self._loop.call_later(1.0, self._tick)

    def _add(self, device: Peripheral, simulated: bool) -> None:
        self.devices[device.name] = device
        if simulated:
            self.simulated.add(device.name)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.devices:
            self.build()
        self._tick()
        for name, device in self.devices.items():
            try:
                device.start(self._emit)
            except Exception as exc:  # noqa: BLE001 - one bad device must not stop the kiosk
                log.error("%s failed to start: %s", name, exc)

    def stop(self) -> None:
        # Devices going quiet because we stop them is not news: no events from here on.
        self._loop = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
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
        for name, device in self.devices.items():
            # A simulated backend without a pty (the camera) offers its own controls.
            backend_control = getattr(getattr(device, "camera", None), "control_actions", None)
            if callable(backend_control):
                actions.setdefault(name, {}).update(backend_control())
        if self.light_tower is not None:
            tower = self.light_tower
            actions["light_tower"] = {"status": lambda _a: {"lit": tower.lit(), "mode": tower.mode}}
        return actions

    def show_mode(self, mode: str) -> None:
        if self.light_tower is not None:
            self.light_tower.show(mode)
        if self.coproc is not None:
            self.coproc.set_mode(mode)


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
