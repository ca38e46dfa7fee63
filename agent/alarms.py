# SPDX-License-Identifier: Apache-2.0
"""Alarms: raise and clear, each the retained state of ``alarm/{code}``.

    alarms = Alarms(kiosk_id, topics, send)
    alarms.raise_("door_open", "door switch open", device="door")
    alarms.clear("door_open")

``send(topic, payload)`` hands the message to the uplink path (the outbox
once it exists); a raise or clear that happens while the kiosk is offline is
delivered in order when it reconnects.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from agent.contract import Topics, encode, envelope, now_ms

__all__ = ["Alarms", "ActiveAlarm", "SEVERITY"]

log = logging.getLogger(__name__)

SEVERITY = {
    "door_open": "critical", "tamper": "critical", "store_corrupt": "critical",
    "paper_out": "critical", "printer_offline": "critical", "printer_error": "critical",
    "idreader_fault": "critical", "coproc_offline": "critical", "disk_low": "critical",
    "publish_refused": "critical", "camera_fault": "warning", "scanner_offline": "warning",
    "paper_low": "warning", "temp_high": "warning", "undervoltage": "warning",
    "outbox_backlog": "warning", "clock_unsynced": "warning",
}


@dataclasses.dataclass
class ActiveAlarm:
    code: str
    since: int
    detail: str
    device: str | None = None


Send = Callable[[str, bytes], None]


class Alarms:
    """The set of active alarms; every change is sent at once."""

    def __init__(self, kiosk: str, topics: Topics, send: Send,
                 on_change: Callable[[], None] | None = None) -> None:
        self.kiosk = kiosk
        self.topics = topics
        self._send = send
        self._on_change = on_change
        self.active: dict[str, ActiveAlarm] = {}

    def codes(self) -> list[str]:
        return sorted(self.active)

    def raise_(self, code: str, detail: str = "", *, device: str | None = None) -> bool:
        """Raise ``code``; False if it was already active (nothing sent)."""
        if code in self.active:
            return False
        alarm = ActiveAlarm(code, now_ms(), detail, device)
        self.active[code] = alarm
        log.warning("alarm raised: %s %s", code, detail)
        self._publish(alarm, True)
        return True

    def clear(self, code: str, detail: str = "") -> bool:
        alarm = self.active.pop(code, None)
        if alarm is None:
            return False
        log.info("alarm cleared: %s", code)
        self._publish(ActiveAlarm(code, now_ms(), detail or "cleared", alarm.device), False)
        return True

    def set(self, code: str, active: bool, detail: str = "", *, device: str | None = None) -> bool:
        return self.raise_(code, detail, device=device) if active else self.clear(code)

    def sync_device(self, device: str, asserted: frozenset[str], detail: str = "") -> None:
        """Make the alarms owned by ``device`` equal to ``asserted``."""
        owned = {code for code, alarm in self.active.items() if alarm.device == device}
        for code in sorted(owned - asserted):
            self.clear(code)
        for code in sorted(asserted - owned):
            self.raise_(code, detail or f"{device}: {code}", device=device)

    def _publish(self, alarm: ActiveAlarm, active: bool) -> None:
        payload = envelope(self.kiosk, code=alarm.code, active=active, since=alarm.since,
                           detail=alarm.detail, severity=SEVERITY.get(alarm.code, "warning"))
        if alarm.device:
            payload["device"] = alarm.device
        self._send(self.topics.alarm(alarm.code), encode(payload))
        if self._on_change:
            self._on_change()
