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
every dashboard. When the store itself was lost, so is that knowledge:
once after connecting, ``sweep_retained`` reads back the retained
``alarm/+`` under the kiosk's own prefix and clears every one left active
that this agent does not hold active.

Names: a peripheral's own health is ``<device>_offline`` (not there or not
answering) or ``<device>_fault`` (there but unusable); conditions keep their
names (``door_open``, ``tamper``, ``paper_out``). The names before that
scheme stay published for one release as aliases (``ALIASES``): a raise or
clear of ``idcard_offline`` also goes to ``alarm/idreader_fault``, marked
``alias_of``.

Latching (``LATCHING``): a tamper alarm stays raised when its cause goes (a
forced door is evidence) until an operator acknowledges it with the signed
``ack-alarm`` command; its row in the store keeps it across restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from agent.errors import AgentError
from agent.store.schema import migrate
from agent.wire.contract import Topics, encode, envelope, now_ms

__all__ = ["Alarms", "ActiveAlarm", "SEVERITY", "ALIASES", "LATCHING", "AlarmNotLatched", "AlarmCausePresent"]

log = logging.getLogger(__name__)

SEVERITY = {
    "door_open": "critical", "tamper": "critical", "store_corrupt": "critical",
    "paper_out": "critical", "printer_offline": "critical", "printer_fault": "critical",
    "idcard_offline": "critical", "idcard_fault": "critical", "coproc_offline": "critical", "disk_low": "critical",
    "printer_error": "critical", "idreader_fault": "critical",       # aliases, see ALIASES
    "publish_refused": "critical", "camera_fault": "warning", "scanner_offline": "warning",
    "paper_low": "warning", "temp_high": "warning", "undervoltage": "warning",
    "outbox_backlog": "warning", "clock_unsynced": "warning", "cert_expiring": "warning",
}

# New name -> the name it had before the <device>_offline / <device>_fault
# scheme; the old one is published alongside for one release, then dropped.
ALIASES = {"idcard_offline": "idreader_fault", "idcard_fault": "idreader_fault", "printer_fault": "printer_error"}

LATCHING = frozenset({"tamper"})


class AlarmNotLatched(AgentError):
    """Nothing to acknowledge: the alarm is not raised, or it is not a latching one."""

    code = "alarm.not_latched"


class AlarmCausePresent(AgentError):
    """The latched alarm's cause is still there (the loop is open): close it first."""

    code = "alarm.cause_present"


@dataclasses.dataclass
class ActiveAlarm:
    code: str
    since: int
    detail: str
    device: str | None = None


Send = Callable[[str, bytes], None]
SWEEP_WINDOW_S = 2.0      # retained messages follow the SUBACK at once; this is generous
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


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
        # Latched alarms whose cause has gone; derived again at every start by
        # the first sync, so only the raised alarm itself needs persisting.
        self.cause_gone: set[str] = set()
        self._swept = False       # sweep_retained ran (once per run)
        if conn is not None:
            migrate(conn)        # the alarms table is declared with the rest (agent/store/schema.py)
            for code, since, detail, device in conn.execute("SELECT code, since, detail, device FROM alarms"):
                self.active[code] = ActiveAlarm(code, since, detail, device)

    def codes(self) -> list[str]:
        return sorted(self.active)

    def raise_(self, code: str, detail: str = "", *, device: str | None = None) -> bool:
        """Raise ``code``; False if it was already active (nothing sent)."""
        if code in self.active:
            self._cause_back(code)
            return False
        alarm = ActiveAlarm(code, now_ms(), detail, device)
        self.active[code] = alarm
        self._persist("INSERT OR REPLACE INTO alarms VALUES (?, ?, ?, ?)",
                      (code, alarm.since, alarm.detail, alarm.device))
        log.warning("alarm raised: %s %s", code, detail)
        self._publish(alarm, True)
        self._publish_alias(code, True, alarm)
        return True

    def clear(self, code: str, detail: str = "", *, acknowledged: bool = False) -> bool:
        """Clear ``code``; a latching alarm only when ``acknowledged`` (else it is marked cause-gone)."""
        alarm = self.active.get(code)
        if alarm is None:
            return False
        if code in LATCHING and not acknowledged:
            if code not in self.cause_gone:
                self.cause_gone.add(code)
                log.warning("alarm %s: cause gone, stays raised until an operator acknowledges it", code)
                self._publish(dataclasses.replace(alarm, detail=f"{alarm.detail}; cause gone, latched until "
                                                  "acknowledged (ack-alarm)"), True, latched=True)
            return False
        del self.active[code]
        self.cause_gone.discard(code)
        self._persist("DELETE FROM alarms WHERE code = ?", (code,))
        log.info("alarm cleared: %s", code)
        cleared = ActiveAlarm(code, now_ms(), detail or "cleared", alarm.device)
        self._publish(cleared, False)
        self._publish_alias(code, False, cleared)
        return True

    def acknowledge(self, code: str, by: str) -> ActiveAlarm:
        """An operator's acknowledgement of a latched alarm whose cause is gone: it clears."""
        alarm = self.active.get(code)
        if code not in LATCHING or alarm is None:
            raise AlarmNotLatched(f"{code} is not a latched alarm raised on this kiosk "
                                  f"(latching: {', '.join(sorted(LATCHING))})")
        if code not in self.cause_gone:
            raise AlarmCausePresent(f"{code} is still asserted ({alarm.detail}); close it, then acknowledge")
        self.clear(code, f"acknowledged by {by}", acknowledged=True)
        log.warning("alarm %s acknowledged by %s (raised %d)", code, by, alarm.since)
        return alarm

    def set(self, code: str, active: bool, detail: str = "", *, device: str | None = None) -> bool:
        return self.raise_(code, detail, device=device) if active else self.clear(code)

    def sync_device(self, device: str, asserted: frozenset[str], detail: str = "") -> None:
        """Make the alarms owned by ``device`` equal to ``asserted``."""
        owned = {code for code, alarm in self.active.items() if alarm.device == device}
        for code in owned & asserted:
            self._cause_back(code)
        for code in sorted(owned - asserted):
            self.clear(code)
        for code in sorted(asserted - owned):
            self.raise_(code, detail or f"{device}: {code}", device=device)

    def _cause_back(self, code: str) -> None:
        """A latched alarm whose cause returned (the loop opened again) is no longer just latched."""
        if code in self.cause_gone:
            self.cause_gone.discard(code)
            self._publish(self.active[code], True, latched=False)

    async def sweep_retained(self, uplink: Any, window_s: float = SWEEP_WINDOW_S) -> list[str]:
        """Once per run: clear retained ``alarm/{code}`` left active by a run whose store was lost.

        Subscribes to the kiosk's own ``alarm/+`` for ``window_s`` (the ACL
        lets a kiosk read its own prefix), then unsubscribes. Returns the
        codes cleared.
        """
        if self._swept:
            return []
        self._swept = True
        pattern = self.topics.alarm("+")
        retained: dict[str, dict[str, Any]] = {}

        def on_message(msg: Any) -> None:
            code = msg.topic.rsplit("/", 1)[-1]
            if not msg.retain or not _CODE.match(code):
                return          # a live publish (ours), or a topic no alarm of ours could have
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                return
            if isinstance(doc, dict) and doc.get("active") is True:
                retained[code] = doc

        uplink.subscribe(pattern, on_message)
        try:
            await asyncio.sleep(window_s)
        finally:
            uplink.unsubscribe(pattern)
        held = set(self.active) | {ALIASES[code] for code in self.active if code in ALIASES}
        stale = sorted(code for code in retained if code not in held)
        for code in stale:
            device = retained[code].get("device")
            log.warning("alarm %s was left active on the broker by an earlier run; cleared", code)
            self._publish(ActiveAlarm(code, now_ms(), "cleared: not active on this kiosk (its earlier state was lost)",
                                      device if isinstance(device, str) else None), False)
        return stale

    def _persist(self, sql: str, args: tuple[object, ...]) -> None:
        if self._conn is None:
            return
        try:
            with self._conn:
                self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            # A full disk must not stop the alarm from going out.
            log.error("alarm state not persisted: %s", exc)

    def _publish(self, alarm: ActiveAlarm, active: bool, *, alias: str | None = None,
                 latched: bool | None = None) -> None:
        code = alias or alarm.code
        payload = envelope(self.kiosk, code=code, active=active, since=alarm.since,
                           detail=alarm.detail, severity=SEVERITY.get(code, "warning"))
        if alarm.device:
            payload["device"] = alarm.device
        if alias:
            payload["alias_of"] = alarm.code
        if latched is not None:
            payload["latched"] = latched
        self._send(self.topics.alarm(code), encode(payload))
        if self._on_change and not alias:
            self._on_change()

    def _publish_alias(self, code: str, active: bool, alarm: ActiveAlarm) -> None:
        """The old name follows while any of its new names is active (idcard_offline, idcard_fault)."""
        alias = ALIASES.get(code)
        if alias is None or alias in self.active:        # an old-named row from before the rename
            return
        if any(other in self.active for other, old in ALIASES.items() if old == alias and other != code):
            return
        self._publish(alarm, active, alias=alias)
