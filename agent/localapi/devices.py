# SPDX-License-Identifier: Apache-2.0
"""The six device services: CardReader, Printer, Camera, BarcodeReader, Lights, Auxiliaries.

Each maps one or more of the agent's peripherals (by their configured
names) to XFS4IoT's ``Common.Status`` shape: ``common.device`` from the
peripheral's state, and the interface's own block. A peripheral's events and
a once-a-second look (while a client is connected) send
``Common.StatusChangedEvent`` with what changed.

    printer = DeviceService(PRINTER, devices)
    printer.status()     # {"common": {"device": "online"}, "printer": {"paper": {"upper": "full"}}}

Device state → ``common.device``: ok / degraded → online, offline → offline,
fault → hardwareError, unknown (not probed yet) → starting, not configured
→ noDevice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from agent.localapi.service import Reply, Request, Service
from hal.device import DeviceEvent, DeviceStatus, Peripheral

__all__ = ["DeviceService", "DeviceSpec", "DEVICE_SPECS", "device_state"]

Statuses = Mapping[str, DeviceStatus]
_DEVICE = {"ok": "online", "degraded": "online", "offline": "offline", "fault": "hardwareError",
           "unknown": "starting"}


def device_state(status: DeviceStatus | None) -> str:
    return "noDevice" if status is None else _DEVICE.get(status.state, "hardwareError")


def _worst(states: list[str]) -> str:
    order = ("hardwareError", "offline", "starting", "online", "noDevice")
    present = [s for s in states if s != "noDevice"]
    if not present:
        return "noDevice"
    return min(present, key=order.index)


def _card_reader(st: Statuses) -> dict[str, Any]:
    # A GA 467 SAM answers "find card" alike for a lifted card and one left after a read:
    # whether a card lies on the reader is not known (the Kiosk.CardLeftEvent reminds instead).
    status = st.get("idcard")
    return {"media": "unknown", "security": "notSupported" if status is None else
            ("ready" if status.state in ("ok", "degraded") else "notReady")}


def _printer(st: Statuses) -> dict[str, Any]:
    status = st.get("printer")
    if status is None or status.state in ("offline", "unknown"):
        paper = "unknown"
    elif "paper_out" in status.alarms:
        paper = "out"
    elif status.alarms & {"paper_low", "paper_near_end"}:
        paper = "low"
    else:
        paper = "full"
    return {"paper": {"upper": paper}}


def _camera(st: Statuses) -> dict[str, Any]:
    status = st.get("camera")
    person = "notSupported" if status is None else \
        {"ok": "ok", "degraded": "ok", "unknown": "unknown"}.get(status.state, "inoperative")
    return {"cameras": {"person": person}}


def _barcode(st: Statuses) -> dict[str, Any]:
    status = st.get("scanner")
    scanner = "unknown" if status is None or status.state == "unknown" else \
        "on" if status.state in ("ok", "degraded") else "inoperative"
    return {"scanner": scanner}


def _lights(st: Statuses) -> dict[str, Any]:
    status = st.get("light_tower")
    lit = set(status.info.get("lit", ())) if status is not None else set()
    return {"stackLight": {colour: {"flashRate": "continuous" if colour in lit else "off", "color": colour}
                           for colour in ("red", "amber", "green")}}


def _auxiliaries(st: Statuses) -> dict[str, Any]:
    def active(name: str) -> bool | None:
        status = st.get(name)
        value = status.info.get("active") if status is not None else None
        return value if isinstance(value, bool) else None

    door, tamper, presence = active("door"), active("tamper"), active("presence")
    coproc = st.get("coproc")
    if coproc is not None and coproc.info.get("tamper") is True:
        tamper = True
    out: dict[str, Any] = {}
    if door is not None:
        out["cabinetDoor"] = "open" if door else "closed"
    if tamper is not None:
        out["tamperSensor"] = "on" if tamper else "off"
    if presence is not None:
        out["presence"] = "present" if presence else "notPresent"
    return out


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """One device service: its path, interface, the peripherals behind it, its block."""

    path: str
    interface: str
    block: str
    devices: tuple[str, ...]
    describe: Callable[[Statuses], dict[str, Any]]
    capabilities: dict[str, Any]


DEVICE_SPECS = (
    DeviceSpec("cardreader", "CardReader", "cardReader", ("idcard",), _card_reader,
               {"type": "contactless", "readTracks": {"chip": True}, "idCardTypes":
                ["resident", "gat_permit", "foreign_pr_2017", "foreign_pr_2023"], "masked": True}),
    DeviceSpec("printer", "Printer", "printer", ("printer",), _printer,
               {"type": {"receipt": True}, "paper": {"upper": True}, "cutter": "partial"}),
    DeviceSpec("camera", "Camera", "camera", ("camera",), _camera,
               {"cameras": {"person": True}, "previewOnly": True}),
    DeviceSpec("barcodereader", "BarcodeReader", "barcodeReader", ("scanner",), _barcode,
               {"symbologies": ["qrCode"], "purpose": "paymentCode"}),
    DeviceSpec("lights", "Lights", "lights", ("light_tower",), _lights,
               {"stackLight": {"colors": ["red", "amber", "green"]}}),
    DeviceSpec("auxiliaries", "Auxiliaries", "auxiliaries", ("door", "tamper", "presence", "coproc"), _auxiliaries,
               {"cabinetDoor": True, "tamperSensor": True, "presence": True}),
)


class DeviceService(Service):
    """One device service over the peripherals ``spec.devices`` names."""

    events = ("Common.StatusChangedEvent",)

    def __init__(self, spec: DeviceSpec, devices: Mapping[str, Peripheral],
                 device_events: list[Callable[[DeviceEvent], None]]) -> None:
        super().__init__()
        self.spec = spec
        self.path, self.interface = spec.path, spec.interface
        self.devices = devices
        self.device_events = device_events      # the daemon's fan-out of DeviceEvents
        self._last: dict[str, Any] | None = None
        self.commands["Common.Status"] = self.get_status
        self.commands["Common.Capabilities"] = self.get_capabilities

    def statuses(self) -> dict[str, DeviceStatus]:
        return {name: self.devices[name].status() for name in self.spec.devices if name in self.devices}

    def status(self) -> dict[str, Any]:
        """``Common.Status``'s payload for this service now."""
        st = self.statuses()
        main = self.spec.devices if self.spec.path != "auxiliaries" else ("door", "tamper", "presence")
        common = _worst([device_state(st.get(name)) for name in main])
        return {"common": {"device": common}, self.spec.block: self.spec.describe(st)}

    async def start(self) -> None:
        self.device_events.append(self.on_device_event)

    async def stop(self) -> None:
        if self.on_device_event in self.device_events:
            self.device_events.remove(self.on_device_event)
        self._last = None

    async def get_status(self, _request: Request) -> Reply:
        return Reply(self.status())

    async def get_capabilities(self, _request: Request) -> Reply:
        return Reply({**self.capabilities(), self.spec.block: self.spec.capabilities})

    def on_device_event(self, event: DeviceEvent) -> None:
        if event.device in self.spec.devices and self._last is not None:
            self.refresh()

    def opened(self, _peer: Any) -> None:
        if self._last is None:
            self._last = self.status()

    def closed(self, _peer: Any) -> None:
        pass

    def refresh(self) -> None:
        now = self.status()
        if self._last is None:
            self._last = now
            return
        changed = _diff(self._last, now)
        self._last = now
        if changed:
            self.unsolicited("Common.StatusChangedEvent", {"changed": changed})


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What of ``new`` differs from ``old``, down to the changed leaves' parents."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if value == before:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            out[key] = _diff(before, value)
        else:
            out[key] = value
    return out
