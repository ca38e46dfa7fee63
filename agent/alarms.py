# SPDX-License-Identifier: Apache-2.0
"""Alarms: raise and clear, each the retained state of ``alarm/{code}``.

    alarms = Alarms(kiosk_id, topics, send)
    alarms.raise_("door_open", "door switch open", device="door")
    alarms.clear("door_open")

``send(topic, payload)`` hands the message to the uplink path (the outbox
once it exists); a raise or clear that happens while the kiosk is offline is
delivered in order when it reconnects.

The active set is kept in the store: after a restart the agent still knows
which ``alarm/{code}`` messages it left retained as active, so a door closed
while the agent was down is cleared at start instead of staying "open" on
every dashboard.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
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
    "outbox_backlog": "warning", "clock_unsynced": "warning", "cert_expiring": "warning",
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
                 on_change: Callable[[], None] | None = None, conn: sqlite3.Connection | None = None) -> None:
        self.kiosk = kiosk
        self.topics = topics
        self._send = send
        self._on_change = on_change
        self._conn = conn
        self.active: dict[str, ActiveAlarm] = {}
        if conn is not None:
            conn.execute("CREATE TABLE IF NOT EXISTS alarms (code TEXT PRIMARY KEY, since INTEGER NOT NULL, "
                         "detail TEXT NOT NULL, device TEXT)")
            for code, since, detail, device in conn.execute("SELECT code, since, detail, device FROM alarms"):
                self.active[code] = ActiveAlarm(code, since, detail, device)

    def codes(self) -> list[str]:
        return sorted(self.active)

    def raise_(self, code: str, detail: str = "", *, device: str | None = None) -> bool:
        """Raise ``code``; False if it was already active (nothing sent)."""
        if code in self.active:
            return False
        alarm = ActiveAlarm(code, now_ms(), detail, device)
        self.active[code] = alarm
        self._persist("INSERT OR REPLACE INTO alarms VALUES (?, ?, ?, ?)",
                      (code, alarm.since, alarm.detail, alarm.device))
        log.warning("alarm raised: %s %s", code, detail)
        self._publish(alarm, True)
        return True

    def clear(self, code: str, detail: str = "") -> bool:
        alarm = self.active.pop(code, None)
        if alarm is None:
            return False
        self._persist("DELETE FROM alarms WHERE code = ?", (code,))
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

    def _persist(self, sql: str, args: tuple[object, ...]) -> None:
        if self._conn is None:
            return
        try:
            with self._conn:
                self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            # A full disk must not stop the alarm from going out.
            log.error("alarm state not persisted: %s", exc)

    def _publish(self, alarm: ActiveAlarm, active: bool) -> None:
        payload = envelope(self.kiosk, code=alarm.code, active=active, since=alarm.since,
                           detail=alarm.detail, severity=SEVERITY.get(alarm.code, "warning"))
        if alarm.device:
            payload["device"] = alarm.device
        self._send(self.topics.alarm(alarm.code), encode(payload))
        if self._on_change:
            self._on_change()
