# SPDX-License-Identifier: Apache-2.0
"""What every peripheral offers the agent: status, events, self-test.

The HAL is synchronous and may block; a peripheral runs its own thread(s)
and reports through the ``emit`` callable it was started with. ``emit`` may
be called from any thread: the agent wraps it with
``loop.call_soon_threadsafe`` before handing it down.

A backend or driver **must** implement ``name``, ``start``, ``stop`` and
``status``; it **may** override ``selftest`` (the default reports the status)
and ``info`` (model and firmware where the device tells them).

    door = DoorSwitch(pin)
    door.start(lambda ev: print(ev.device, ev.kind, ev.data))
    print(door.status().state)       # "ok"
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DeviceEvent", "DeviceStatus", "SelftestResult", "Peripheral", "Emit",
           "OK", "DEGRADED", "OFFLINE", "FAULT", "UNKNOWN"]

OK = "ok"                # working as expected
DEGRADED = "degraded"    # working with a warning (paper near end)
OFFLINE = "offline"      # not connected / not answering
FAULT = "fault"          # connected but unusable (paper out, cover open, SAM fault)
UNKNOWN = "unknown"      # not yet probed


@dataclasses.dataclass(frozen=True)
class DeviceEvent:
    """Something a peripheral saw: a status change, a card, a scan, a key."""

    device: str
    kind: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    ts: float = dataclasses.field(default_factory=time.time)


@dataclasses.dataclass(frozen=True)
class DeviceStatus:
    """A peripheral's state as health reports it.

    ``alarms`` is the set of alarm codes the device asserts right now
    (``{"paper_low"}``); the agent raises and clears alarms by diffing it.
    ``code`` is a stable error code (``HalError.code``) when not OK.
    """

    state: str = UNKNOWN
    alarms: frozenset[str] = frozenset()
    code: str | None = None
    detail: str = ""
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.code:
            out["code"] = self.code
        if self.detail:
            out["detail"] = self.detail
        if self.alarms:
            out["alarms"] = sorted(self.alarms)
        out.update(self.info)
        return out


@dataclasses.dataclass(frozen=True)
class SelftestResult:
    """One line of the self-test table."""

    device: str
    passed: bool
    reason: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


Emit = Callable[[DeviceEvent], None]


class Peripheral:
    """Base for everything the agent supervises. See the module docstring."""

    name: str = "peripheral"
    kind: str = "peripheral"

    def start(self, emit: Emit) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def status(self) -> DeviceStatus:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Inventory entry for the ``state`` birth: kind, model, firmware."""
        return {"kind": self.kind, **self.status().info}

    def selftest(self) -> SelftestResult:
        st = self.status()
        return SelftestResult(self.name, st.state in (OK, DEGRADED), st.detail or st.state)
