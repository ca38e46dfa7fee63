# SPDX-License-Identifier: Apache-2.0
"""The citizen session engine: one session at a time, step by step.

A component, built by the daemon (``Agent.session_engine``) with what it uses.
Device events (ID card read, scan) and the calls of a kiosk UI drive a
state machine over the service's steps (:mod:`agent.sessions.catalogue`). Every
session ends as ``completed``, ``abandoned`` (the citizen cancelled or
walked away: a step timed out) or ``failed`` (the kiosk could not go on: a
device fault, maintenance mode, the door opened, shutdown), and becomes one
PII-free transaction record in the journal, with each step's timing. A
completed session that read a card also leaves a sealed evidence bundle
(:mod:`agent.sessions.evidence`). Whatever the outcome, the session's personal data
is then wiped, so the next citizen starts clean.

The UI API is plain async methods (``begin`` rather than ``start``, which
is the component lifecycle):

    engine = agent.session_engine
    engine.services()        # the menu, each entry with available / unavailable_reason
    await engine.begin("pension_record_print", language="en")   # SessionError if busy, not in service, ...
    engine.set_language("zh")                # any time: the receipt and the record follow it
    engine.status()          # {"state": "active", "step": "read_id", ...}: never PII
    await engine.set_consent(face=True)
    await engine.accept_photo()              # or retake_photo(), after a photo_preview event
    await engine.provide_address(use_card_address=True, phone="13800000000")
    await engine.provide_address(recipient="...", phone="...", address="...", postcode="...")
    await engine.more_time()                 # the waiting step's countdown, once more
    await engine.confirm()
    await engine.cancel()                    # the citizen: abandoned
    await engine.abort("screen_lost")        # the kiosk: failed, data wiped
    engine.add_listener(lambda ev: print(ev["event"]))   # step, card_read, photo_preview, ended, ...
    await engine.wait_idle()

Listener events carry no PII beyond masked forms (``name_masked`` "张*明",
``id_masked`` "11**********1234"); the one exception is ``photo_preview``,
whose ``jpeg`` is a copy the engine zeroes when the photo is retaken and when
the session ends, so a listener must use it (encode it) during its call.

The receipt is printed only after the transaction is committed (fsync) to
the journal; the print step therefore appears in the record as
``after_commit``, and a follow-up ``receipt`` record says how the print went
(``printed``, ``failed`` or ``skipped``, with the printer's code). A service
whose receipt is its purpose is refused while the printer cannot print, and
looked at again before its commit: a printer gone since ``begin`` ends the
session ``failed`` / ``printer_unavailable``, nothing committed as completed.

A card reader that cannot read (its SAM reports a fault, its status turns
``fault``, or READER_FAULT_READS reads fail in a row during read_id) sends
``card_rejected {reason: "reader_fault"}`` and ends the session ``failed`` /
``idcard: <code>``, a device fault, instead of waiting out the step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import inspect
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.config import Config, ServiceConfig
from agent.errors import AgentError
from agent.sessions.catalogue import Catalogue
from agent.sessions.evidence import EvidenceContent, EvidenceStore, evidence_payload, seal_content
from agent.sessions.sessionio import (
    DeviceIO,
    dev_recipient_key,
    mask_id,
    mask_name,
    mask_reference,
    s10_waybill,
)
from agent.store.database import Store
from agent.tasks import spawn
from agent.wire.contract import Topics
from hal.device import FAULT as FAULT_STATE
from hal.device import DeviceEvent

__all__ = ["SessionEngine", "SessionError", "Busy", "NotInService", "OfflineNotAllowed", "NoSession",
           "WrongStep", "PrinterUnavailable", "NoDevice", "NoRetakesLeft", "NoMoreTime", "UnsupportedLanguage",
           "InvalidInput", "InvalidPhone", "InvalidPostcode", "InvalidAddress", "NoCardAddress",
           "mask_id", "mask_name", "mask_reference", "s10_waybill", "COMPLETED", "ABANDONED",
           "FAILED", "PRINTER_UNAVAILABLE", "READER_FAULT", "RECEIPT_PRINTED", "RECEIPT_FAILED", "RECEIPT_SKIPPED",
           "LANGUAGES", "UNAVAILABLE_REASONS"]

log = logging.getLogger(__name__)

COMPLETED, ABANDONED, FAILED = "completed", "abandoned", "failed"
PRINTER_UNAVAILABLE = "printer_unavailable"   # the failed reason of a receipt-purpose session at its commit
READER_FAULT = "reader_fault"                 # card_rejected: the reader, not the card, failed
RECEIPT_PRINTED, RECEIPT_FAILED, RECEIPT_SKIPPED = "printed", "failed", "skipped"
_TICK_S = 0.25            # how often a waiting step looks at mode and door
SERVICES_WATCH_S = 0.5    # how often availability (mode, online, printer, door) is compared for services_changed
CARD_REMINDERS = 3
# Card read errors in a row (no card read between them) after which the reader, not the card, is at fault:
# a card moved mid-read fails once or twice, a broken reader fails at every poll.
READER_FAULT_READS = 3
# SAM status words that say the reader's SAM is broken, whatever card is on it (hal.protocols.sam).
_SAM_FAULT_CODES = frozenset({"hal.idcard.sam_selftest", "hal.idcard.sam_unauthorised"})
SWEEP_INTERVAL_S = 3600.0
LANGUAGES = ("zh", "en")
# Why a service is not offered now: the screen shows a text per code (docs/local-api.yaml).
UNAVAILABLE_REASONS = ("offline", "printer_out_of_paper", "printer_unavailable", "maintenance", "out_of_service",
                       "door_open", "device_missing", "device_offline")
_STEP_DEVICES = {"read_id": "idcard", "capture_photo": "camera", "scan_payment": "scanner"}
_ABORT_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PHONE = re.compile(r"1[3-9][0-9]{9}|0[1-9][0-9]{1,2}-?[1-9][0-9]{6,7}")   # mobile, or area code + landline
_POSTCODE = re.compile(r"[0-9]{6}")
_MAX_RECIPIENT, _MAX_ADDRESS = 40, 200


class SessionError(AgentError):
    """A UI call that cannot be served now.

    ``unavailable_reason`` is set on a refused ``begin()``: one of
    UNAVAILABLE_REASONS, the same code ``services()`` gives.
    """

    code = "agent.session.error"
    unavailable_reason: str | None = None


class Busy(SessionError):
    """Another citizen's session is running."""

    code = "agent.session.busy"


class NotInService(SessionError):
    """The kiosk is in maintenance or out of service."""

    code = "agent.session.not_in_service"


class OfflineNotAllowed(SessionError):
    """The service needs the back office and the kiosk is offline."""

    code = "agent.session.offline"


class PrinterUnavailable(SessionError):
    """The service's receipt is its purpose and the printer cannot print; ``reason`` is for the UI."""

    code = "agent.session.printer_unavailable"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NoDevice(SessionError):
    """The service needs a peripheral this kiosk does not have configured."""

    code = "agent.session.device_missing"


class NoSession(SessionError):
    """No session is running."""

    code = "agent.session.none"


class WrongStep(SessionError):
    """The call does not fit the current step."""

    code = "agent.session.wrong_step"


class NoRetakesLeft(SessionError):
    """The citizen has used every retake of the face photo."""

    code = "agent.session.no_retakes_left"


class NoMoreTime(SessionError):
    """The step's "more time" presses are used up."""

    code = "agent.session.no_more_time"


class UnsupportedLanguage(SessionError):
    """A language the kiosk does not speak (LANGUAGES)."""

    code = "agent.session.bad_language"


class InvalidInput(SessionError):
    """What the citizen entered is not acceptable; the message never repeats it."""

    code = "agent.session.invalid_input"


class InvalidPhone(InvalidInput):
    code = "agent.session.invalid_phone"


class InvalidPostcode(InvalidInput):
    code = "agent.session.invalid_postcode"


class InvalidAddress(InvalidInput):
    """Recipient or address empty, too long, or with control characters."""

    code = "agent.session.invalid_address"


class NoCardAddress(InvalidInput):
    """"Use the address on my ID card" with a card that has none (a foreigner's permanent residence card)."""

    code = "agent.session.no_card_address"


def _checked_phone(phone: object) -> str:
    text = phone.strip().replace(" ", "") if isinstance(phone, str) else ""
    if not _PHONE.fullmatch(text):
        raise InvalidPhone("a phone number is 11 digits starting with 1, or an area code and a landline number")
    return text


def _checked_postcode(postcode: object) -> str:
    text = postcode.strip() if isinstance(postcode, str) else ""
    if not _POSTCODE.fullmatch(text):
        raise InvalidPostcode("a postcode is 6 digits")
    return text


def _checked_text(value: object, what: str, limit: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InvalidAddress(f"the {what} is required")
    if len(text) > limit:
        raise InvalidAddress(f"the {what} is longer than {limit} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise InvalidAddress(f"the {what} contains control characters")
    return text


class _StepFailed(Exception):
    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class _ReceiptNotPrinted(_StepFailed):
    """The print step ended without a receipt: ``failed`` (tried) or ``skipped`` (not tried)."""

    def __init__(self, status: str, code: str, alarms: tuple[str, ...] = ()) -> None:
        super().__init__(FAILED, f"printer: {code}")
        self.status = status
        self.code = code
        self.alarms = alarms


@dataclasses.dataclass
class _Step:
    kind: str
    timeout_s: float
    status: str = "not_reached"      # done | timeout | interrupted | failed | after_commit | not_reached
    started: float | None = None
    ended: float | None = None
    deadline: float | None = None    # monotonic; more_time() and a photo retake move it
    more_time_used: int = 0

    def record(self) -> dict[str, Any]:
        ms = None if self.started is None or self.ended is None else round((self.ended - self.started) * 1000)
        return {"kind": self.kind, "status": self.status, "ms": ms}


class _State(enum.Enum):
    ACTIVE = "active"
    ENDING = "ending"


@dataclasses.dataclass
class Session:
    """One citizen's session. Everything PII lives here and is wiped at the end."""

    service: ServiceConfig
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    started_ms: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))
    started: float = dataclasses.field(default_factory=time.monotonic)
    steps: list[_Step] = dataclasses.field(default_factory=list)
    index: int = 0
    state: _State = _State.ACTIVE
    inputs: asyncio.Queue[tuple[str, Any]] = dataclasses.field(default_factory=asyncio.Queue)
    consent_face: bool = False
    language: str = "zh"
    interrupt: tuple[str, str] | None = None     # (outcome, reason) asked for by cancel(), abort() or stop()
    aborted: str | None = None                   # the reason abort() gave
    retakes_left: int = 0
    preview_waiting: bool = False                # a photo_preview is shown: accept_photo / retake_photo
    # -- PII (wiped) ---------------------------------------------------------
    card: dict[str, Any] | None = None
    photo_wlt: bytearray | None = None
    face_jpeg: bytearray | None = None
    previews: list[bytearray] = dataclasses.field(default_factory=list)   # copies handed to listeners
    mailing: dict[str, str] | None = None
    # -- not PII (kept for the record) ---------------------------------------
    card_type: str | None = None
    id_masked: str | None = None
    name_masked: str | None = None               # for the receipt and the screen, never the record
    payment: dict[str, str] | None = None

    def drop_previews(self) -> None:
        """Zero the preview copies listeners were given (a retake, the session's end)."""
        for buf in self.previews:
            buf[:] = bytes(len(buf))
        self.previews.clear()

    def wipe(self) -> None:
        self.drop_previews()
        for buf in (self.photo_wlt, self.face_jpeg):
            if buf is not None:
                buf[:] = bytes(len(buf))
        if self.card is not None:
            self.card.clear()
        if self.mailing is not None:
            self.mailing.clear()
        self.card = self.photo_wlt = self.face_jpeg = self.mailing = None
        while not self.inputs.empty():
            self.inputs.get_nowait()


class Online(Protocol):
    """Whether the back office is reachable (:class:`agent.uplink.connection.Uplink`)."""

    @property
    def connected(self) -> bool: ...


class AlarmView(Protocol):
    """The alarms in force, by code (:class:`agent.runtime.alarms.Alarms`)."""

    @property
    def active(self) -> Mapping[str, object]: ...


class HealthSections(Protocol):
    """Health as the engine reports to it (:class:`agent.runtime.health.HealthReporter`)."""

    sections: dict[str, Callable[[], dict[str, Any]]]

    def publish_now(self, reason: str) -> dict[str, Any]: ...


DeviceListener = Callable[[DeviceEvent], None]


class SessionEngine:
    """The session component; see the module docstring for the UI API."""

    def __init__(self, cfg: Config, io: DeviceIO, *, store: Store, topics: Topics, uplink: Online,
                 mode: Callable[[], str], alarms: AlarmView | None = None, health: HealthSections | None = None,
                 device_events: list[DeviceListener] | None = None) -> None:
        self.cfg = cfg
        self.catalogue = Catalogue.from_config(cfg)
        self.io = io
        self.store = store
        self.topics = topics
        self.uplink = uplink
        self.mode = mode                    # the kiosk's service mode now (a command may change it)
        self.alarms = alarms
        self.health = health
        self.device_events = device_events  # the daemon's fan-out of DeviceEvents
        self.evidence: EvidenceStore | None = None
        self.recipient: bytes | None = None
        self.session: Session | None = None
        self.last: dict[str, Any] | None = None
        self.counts = {COMPLETED: 0, ABANDONED: 0, FAILED: 0}
        self._runner: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[Callable[[dict[str, Any]], Any]] = []     # a UI's may be async
        self._card_left = False       # a card read in the last session may still be on the reader
        self._reminders = 0
        self._reminder: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = False
        self._held: str | None = None     # why no new session starts now (a restart waits)
        self._notifying: set[asyncio.Future[Any]] = set()
        self.language = cfg.sessions.language      # the screen's language now; a session starts in it
        self._availability: tuple[Any, ...] | None = None   # last seen, for services_changed
        self._watcher: asyncio.TimerHandle | None = None

    # -- component lifecycle --------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self.recipient = self.cfg.evidence.recipient_public_key or dev_recipient_key(self.cfg)
        if self.recipient is None:
            log.warning("evidence.recipient_public_key is not set: services that read an ID card are refused")
        self.evidence = EvidenceStore(self.store.path, retention_days=self.cfg.evidence.retention_days)
        if self.device_events is None:
            log.error("no device events given: the session engine receives none")
        else:
            self.device_events.append(self.on_device_event)
        # The journal owns the tx/ack subscription and calls its listeners with the acknowledged ids.
        self.io.journal.add_ack_listener(self.on_tx_ack)
        # The uplink subscribed before this engine started: an ack that came in between is
        # marked in the journal but reached no listener. Listening first, then looking, leaves no gap.
        try:
            self.evidence.erase_acknowledged()
        except AgentError as exc:
            log.error("%s: %s", exc.code, exc)
        if self.health is not None:
            self.health.sections["sessions"] = self.health_section
        self._sweep()
        self._availability = self._availability_key()
        self._watcher = asyncio.get_running_loop().call_later(SERVICES_WATCH_S, self._watch_services)
        log.info("session engine ready: %d services%s", len(self.catalogue),
                 " (default catalogue)" if self.catalogue.default else "")

    def hold(self, reason: str | None) -> None:
        """Start no new session while ``reason`` holds (None: serve again); the one running goes on."""
        self._held = reason
        self.check_services()

    async def stop(self) -> None:
        self._stopping = True
        session = self.session
        if session is not None and session.state is _State.ACTIVE:
            session.interrupt = (FAILED, "shutdown")
            session.inputs.put_nowait(("tick", None))
        if self._runner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), 4.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - shutdown must go on
                self._runner.cancel()
        listeners = self.device_events
        if listeners is not None and self.on_device_event in listeners:
            listeners.remove(self.on_device_event)
        for timer in (self._reminder, self._sweeper, self._watcher):
            if timer is not None:
                timer.cancel()
        self._watcher = None
        if self.evidence is not None:
            self.evidence.close()
            self.evidence = None

    # -- UI API ---------------------------------------------------------------

    def add_listener(self, cb: Callable[[dict[str, Any]], Any]) -> None:
        """``cb(event)`` for each step change, end, reminder; events carry no PII."""
        self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[dict[str, Any]], Any]) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def services(self) -> list[dict[str, Any]]:
        """The menu: ids, names, steps, and whether each is offered now.

        ``available``; ``unavailable_reason``, one of UNAVAILABLE_REASONS (what
        the screen explains); ``unavailable``, the detail (``printer: paper_out``).
        """
        menu = self.catalogue.describe()
        for entry, service in zip(menu, self.catalogue):
            refusal = self._refusal(service)
            entry["available"] = refusal is None
            entry["unavailable_reason"] = refusal.unavailable_reason if refusal is not None else None
            entry["unavailable"] = self._detail(refusal) if refusal is not None else None
        return menu

    def availability(self) -> dict[str, Any]:
        """What ``services_changed`` carries: the mode, whether online, and ``services()``."""
        return {"mode": self.mode(), "online": bool(self.uplink.connected), "services": self.services()}

    def check_services(self) -> None:
        """Emit ``services_changed`` if availability, mode or online differ from the last look."""
        key = self._availability_key()
        if key != self._availability:
            self._availability = key
            self._notify({"event": "services_changed", **self.availability()})

    def _availability_key(self) -> tuple[Any, ...]:
        return (self.mode(), bool(self.uplink.connected),
                tuple((r.unavailable_reason, self._detail(r)) if r else None
                      for r in map(self._refusal, self.catalogue)))

    def _watch_services(self) -> None:
        # Mode and the uplink tell nobody when they change; a cheap look twice a second.
        self._watcher = None
        if self._stopping:
            return
        try:
            self.check_services()
        except Exception:  # a look must not stop the looking
            log.exception("services availability check failed")
        self._watcher = asyncio.get_running_loop().call_later(SERVICES_WATCH_S, self._watch_services)

    @staticmethod
    def _detail(refusal: SessionError) -> str:
        return refusal.reason if isinstance(refusal, PrinterUnavailable) else str(refusal)

    def _refusal(self, service: ServiceConfig) -> SessionError | None:
        """Why ``service`` cannot start now (the error begin() raises), or None; busy is not a refusal."""
        def refused(error: SessionError, reason: str) -> SessionError:
            error.unavailable_reason = reason
            return error

        if self._stopping:
            return refused(NotInService("the agent is stopping"), "out_of_service")
        mode = self.mode()
        if mode != "in_service":
            return refused(NotInService(f"not serving citizens: {mode}"),
                           "maintenance" if mode == "maintenance" else "out_of_service")
        if self.alarms is not None and "door_open" in self.alarms.active:
            return refused(NotInService("not serving citizens: door_open"), "door_open")
        if self._held is not None:
            return refused(NotInService(f"not serving citizens: {self._held}"), "out_of_service")
        if not service.offline and not self.uplink.connected:
            return refused(OfflineNotAllowed(f"{service.id} needs the back office and the kiosk is offline"),
                           "offline")
        for step in service.steps:
            device = _STEP_DEVICES.get(step.kind)
            if device is not None and device not in self.io.devices:
                return refused(NoDevice(f"{service.id} needs the {device}, which this kiosk does not have"),
                               "device_missing")
            # Only ``<device>_offline``: its supervisor keeps probing and clears it. A ``camera_fault``
            # clears on the next good capture, which a service nobody may start would never make.
            if device is not None and self.alarms is not None and f"{device}_offline" in self.alarms.active:
                return refused(NoDevice(f"{service.id} needs the {device}, which is not answering"),
                               "device_offline")
        if self.catalogue.needs(service, "read_id") and self.recipient is None:
            return refused(SessionError("no evidence.recipient_public_key: ID card services are disabled"),
                           "out_of_service")
        if service.receipt == "purpose":
            problem = self.io.printer_problem()
            if problem is not None:
                return refused(PrinterUnavailable(f"{service.id} is its receipt and the printer cannot print: "
                                                  f"{problem.code} ({problem.detail})", problem.reason()),
                               "printer_out_of_paper" if "paper_out" in problem.alarms else "printer_unavailable")
        return None

    def _language(self, language: str | None) -> str:
        if language is None:
            return self.language
        if language not in LANGUAGES:
            raise UnsupportedLanguage(f"language must be one of {', '.join(LANGUAGES)}")
        return language

    def set_language(self, language: str) -> None:
        """The screen's language, any time: the running session's receipt and record follow it."""
        self.language = self._language(language)
        if self.session is not None:
            self.session.language = self.language

    async def begin(self, service_id: str, language: str | None = None) -> dict[str, Any]:
        """Start a session for ``service_id`` in ``language`` (default: the screen's); returns ``status()``."""
        service = self.catalogue.get(service_id)
        language = self._language(language)
        refusal = self._refusal(service)
        if self.session is not None and not (self._stopping or self._held is not None):
            raise Busy("a session is running")      # a stop or a restart waiting says so rather than "busy"
        if refusal is not None:
            raise refusal
        self._cancel_reminder()
        self.language = language
        session = Session(service, steps=[_Step(s.kind, s.timeout_s) for s in service.steps], language=language,
                          retakes_left=self.cfg.sessions.photo_retakes)
        self.session = session
        self._idle.clear()
        log.info("session %s started: %s (%s)", session.id[:8], service.id, language)
        self._runner = asyncio.create_task(self._run(session), name=f"session-{session.id[:8]}")
        return self.status()

    async def confirm(self) -> None:
        self._input("confirm", None, expect="confirm")

    async def cancel(self) -> None:
        """The citizen pressed cancel: the session ends ``abandoned``."""
        session = self._active()
        session.interrupt = session.interrupt or (ABANDONED, "cancelled")
        session.inputs.put_nowait(("tick", None))

    async def set_consent(self, *, face: bool) -> None:
        """Separate consent to send the face photo to the back office (default: no)."""
        session = self._active()
        session.consent_face = bool(face)
        log.info("session %s: face consent %s", session.id[:8], "given" if face else "withdrawn")

    async def provide_address(self, *, use_card_address: bool = False, recipient: str | None = None,
                              phone: str, address: str | None = None, postcode: str | None = None) -> None:
        """The mailing address, for services that mail a document (sealed, never logged).

        ``use_card_address=True``: the name and address on the ID card read in
        this session, which never leave the engine but into the sealed
        evidence; ``postcode`` is then optional (a card has none). Otherwise
        ``recipient``, ``address`` and ``postcode`` are all required. Errors
        are InvalidInput subclasses whose messages never repeat the input.
        """
        session = self._active()
        self._expect(session, "capture_address")
        phone = _checked_phone(phone)
        if use_card_address:
            card = session.card or {}
            name = str(card.get("name") or card.get("name_en") or "").strip()
            on_card = str(card.get("address") or "").strip()
            if not name or not on_card:
                raise NoCardAddress("this ID card carries no address: please enter one")
            code = _checked_postcode(postcode) if postcode else ""
            mailing = {"recipient": name, "phone": phone, "address": on_card, "postcode": code,
                       "source": "id_card"}
        else:
            mailing = {"recipient": _checked_text(recipient, "recipient", _MAX_RECIPIENT), "phone": phone,
                       "address": _checked_text(address, "address", _MAX_ADDRESS),
                       "postcode": _checked_postcode(postcode), "source": "entered"}
        self._input("address", mailing, expect="capture_address")

    async def accept_photo(self) -> None:
        """The citizen keeps the photo shown in the last ``photo_preview``."""
        session = self._active()
        self._expect(session, "capture_photo")
        if not session.preview_waiting:
            raise WrongStep("no photo is shown yet")
        session.preview_waiting = False
        session.inputs.put_nowait(("accept_photo", None))

    async def retake_photo(self) -> None:
        """Another capture (``sessions.photo_retakes`` at most); its countdown starts again."""
        session = self._active()
        self._expect(session, "capture_photo")
        if not session.preview_waiting:
            raise WrongStep("no photo is shown yet")
        if session.retakes_left <= 0:
            raise NoRetakesLeft("no retakes left: keep this photo or cancel")
        session.retakes_left -= 1
        session.preview_waiting = False
        session.inputs.put_nowait(("retake_photo", None))

    async def more_time(self) -> dict[str, Any]:
        """Extend the waiting step's countdown by its own timeout; returns the new ``step`` event (also sent)."""
        session = self._active()
        step = session.steps[session.index]
        if step.kind == "print_receipt" or step.deadline is None:
            raise WrongStep(f"nothing to wait for in {step.kind}")
        if step.more_time_used >= self.cfg.sessions.more_time_limit:
            raise NoMoreTime(f"no more time left for {step.kind}")
        step.more_time_used += 1
        step.deadline += step.timeout_s
        log.info("session %s: more time for %s (%d/%d)", session.id[:8], step.kind, step.more_time_used,
                 self.cfg.sessions.more_time_limit)
        event = self._step_event(session, step)
        self._notify(event)
        return event

    async def abort(self, reason: str = "screen_lost") -> bool:
        """End the running session as ``failed`` for a kiosk-side ``reason`` (the screen is gone).

        Returns once the session is recorded and its data wiped; False when none was running.
        A session past its commit (printing the receipt) finishes the print and stays completed.
        """
        if not _ABORT_REASON.fullmatch(reason):
            raise InvalidInput("an abort reason is a short lowercase word (screen_lost)")
        session = self.session
        if session is None or session.state is not _State.ACTIVE:
            return False
        session.aborted = reason
        session.interrupt = (FAILED, reason)
        session.inputs.put_nowait(("tick", None))
        runner = self._runner
        if runner is not None:
            await asyncio.wait({runner})
        log.info("session %s aborted: %s", session.id[:8], reason)
        return True

    def status(self) -> dict[str, Any]:
        """What a UI shows; no PII beyond the masked forms."""
        session = self.session
        out: dict[str, Any] = {"state": "idle", "mode": self.mode(), "online": bool(self.uplink.connected),
                               "language": self.language, "card_left": self._card_left,
                               "last": self.last, "counts": dict(self.counts)}
        if session is not None:
            step = session.steps[session.index] if session.index < len(session.steps) else None
            remaining = None
            if step is not None and step.deadline is not None and step.ended is None:
                remaining = max(0.0, step.deadline - time.monotonic())
            out.update(state=session.state.value, session=session.id, service=session.service.id,
                       step=step.kind if step else None, step_index=session.index,
                       steps_total=len(session.steps), step_remaining_s=remaining,
                       more_time_left=self._more_time_left(step) if step else 0,
                       card_read=session.card is not None, card_type=session.card_type,
                       id_masked=session.id_masked, name_masked=session.name_masked,
                       consent_face=session.consent_face, photo_waiting=session.preview_waiting,
                       retakes_left=session.retakes_left, language=session.language)
        return out

    async def wait_idle(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _active(self) -> Session:
        session = self.session
        if session is None or session.state is not _State.ACTIVE:
            raise NoSession("no session is running")
        return session

    @staticmethod
    def _expect(session: Session, kind: str) -> None:
        if session.steps[session.index].kind != kind:
            raise WrongStep(f"the current step is {session.steps[session.index].kind}, not {kind}")

    def _input(self, kind: str, value: Any, *, expect: str | None = None) -> None:
        session = self._active()
        if expect is not None:
            self._expect(session, expect)
        session.inputs.put_nowait((kind, value))

    def _more_time_left(self, step: _Step) -> int:
        if step.kind == "print_receipt":
            return 0
        return max(0, self.cfg.sessions.more_time_limit - step.more_time_used)

    def _step_event(self, session: Session, step: _Step) -> dict[str, Any]:
        remaining = max(0.0, step.deadline - time.monotonic()) if step.deadline is not None else step.timeout_s
        return {"event": "step", "session": session.id, "step": step.kind, "index": session.index,
                "count": len(session.steps), "timeout_s": step.timeout_s, "remaining_s": round(remaining, 1),
                "more_time_left": self._more_time_left(step)}

    # -- device events --------------------------------------------------------

    def on_device_event(self, event: DeviceEvent) -> None:
        """Called by the agent for every DeviceEvent, on the loop."""
        if event.device == "idcard" and event.kind in ("card_read", "card_removed"):
            # A new read means the old card was lifted; a removal (if a reader
            # can report one) ends the reminders as well.
            self._cancel_reminder()
        if event.kind not in ("card_read", "scan"):
            self.check_services()       # a printer out of paper, the door: the menu may change now
        session = self.session
        if session is None or session.state is not _State.ACTIVE:
            return
        reading = event.device == "idcard" and session.steps[session.index].kind == "read_id"
        if event.device == "idcard" and event.kind == "card_read":
            session.inputs.put_nowait(("card", event.data.get("card")))
        # Only read_id waits for the reader: a faulty one, polling on, errs at every poll meanwhile.
        elif reading and event.kind == "card_error":
            session.inputs.put_nowait(("card_error", str(event.data.get("code") or "hal.idcard.error")))
        elif reading and event.kind == "status" and event.data.get("state") == FAULT_STATE:
            session.inputs.put_nowait(("reader_fault", str(event.data.get("code") or "hal.idcard.fault")))
        elif event.device == "scanner" and event.kind == "scan":
            session.inputs.put_nowait(("scan", dict(event.data)))
        elif self._kiosk_interrupt() is not None:
            session.inputs.put_nowait(("tick", None))      # wake the step to notice at once

    def _kiosk_interrupt(self) -> tuple[str, str] | None:
        mode = self.mode()
        if mode != "in_service":
            return FAILED, mode
        alarms = self.alarms
        if alarms is not None and "door_open" in alarms.active:
            return FAILED, "door_open"
        return None

    # -- the state machine ----------------------------------------------------

    async def _run(self, session: Session) -> None:
        outcome, reason, committed = COMPLETED, None, None
        try:
            for i, step in enumerate(session.steps):
                session.index = i
                if step.kind == "print_receipt" and committed is None:
                    if session.service.receipt == "purpose" and self.io.printer_problem() is not None:
                        # The citizen came for the printout: checked at begin, and again now, before
                        # anything is committed, since the printer may have gone during the session.
                        step.status = "failed"
                        outcome, reason = FAILED, PRINTER_UNAVAILABLE
                        break
                    committed = await self._commit(session, COMPLETED, None)
                step.started = time.monotonic()
                step.deadline = step.started + step.timeout_s
                self._notify(self._step_event(session, step))
                try:
                    await self._do_step(session, step, committed)
                    step.status = "after_commit" if committed is not None else "done"
                    if step.kind == "print_receipt" and committed is not None:
                        await self._record_receipt(session, committed, RECEIPT_PRINTED)
                        self._notify({"event": "receipt_printed", "session": session.id, "status": RECEIPT_PRINTED,
                                      "reason": None})
                except _StepFailed as exc:
                    step.status = "interrupted" if exc.reason in ("cancelled", "shutdown", session.aborted) else \
                        "timeout" if exc.reason.startswith("timeout") else "failed"
                    if committed is not None:      # after the commit the service is delivered
                        if isinstance(exc, _ReceiptNotPrinted):
                            await self._record_receipt(session, committed, exc.status, exc.code, exc.alarms)
                        self._notify({"event": "receipt_failed", "session": session.id, "reason": exc.reason,
                                      "status": getattr(exc, "status", RECEIPT_FAILED)})
                        break
                    outcome, reason = exc.outcome, exc.reason
                    break
                finally:
                    step.ended = time.monotonic()
            if committed is None:
                committed = await self._commit(session, outcome, reason)
        except Exception:  # a bug must not leave PII or a stuck kiosk behind
            log.exception("session %s crashed", session.id[:8])
            outcome, reason = FAILED, "internal_error"
        finally:
            session.state = _State.ENDING
            session.wipe()
            self.counts[outcome] += 1
            record = committed if isinstance(committed, dict) else {}
            self.last = {"session": session.id, "service": session.service.id, "outcome": outcome,
                         "reason": reason, "tx": record.get("id"), "receipt_number": record.get("receipt"),
                         "waybill": record.get("waybill")}
            log.info("session %s %s%s (%s)", session.id[:8], outcome, f": {reason}" if reason else "",
                     session.service.id)
            self.session = None
            self.language = self.cfg.sessions.language     # the next citizen starts in the kiosk's language
            self._idle.set()
            self._notify({"event": "ended", **self.last})
            if session.card_type is not None and not self._stopping:
                self._card_left, self._reminders = True, 0
                self._remind_card()

    async def _do_step(self, session: Session, step: _Step, committed: dict[str, Any] | None) -> None:
        kind = step.kind
        if kind == "capture_photo":
            await self._photo(session, step)
            return
        if kind == "print_receipt":
            assert committed is not None
            problem = self.io.printer_problem()
            if problem is not None:
                # Known unable: no bytes to a printer out of paper, no citizen waiting for a timeout.
                raise _ReceiptNotPrinted(RECEIPT_SKIPPED, problem.code, problem.alarms)
            try:
                await asyncio.wait_for(self.io.print_receipt(session.service, committed, language=session.language,
                                                             name_masked=session.name_masked), step.timeout_s)
            except TimeoutError:
                raise _ReceiptNotPrinted(RECEIPT_FAILED, "agent.session.print_timeout") from None
            except Exception as exc:  # noqa: BLE001 - the printer's code goes into the receipt record
                after = self.io.printer_problem()
                raise _ReceiptNotPrinted(RECEIPT_FAILED, str(getattr(exc, "code", exc.__class__.__name__)),
                                         after.alarms if after else ()) from None
            return
        if kind == "scan_payment":
            self.io.trigger_scanner(True)
        read_errors = 0
        if kind == "read_id":
            reader = self.io.devices.get("idcard")
            status = reader.status() if reader is not None else None
            if status is not None and status.state == FAULT_STATE:     # faulty before the step began
                self._reader_fault(session, status.code or "hal.idcard.fault")
        while True:
            item_kind, value = await self._next_input(session, step)
            if kind == "read_id" and item_kind == "card":
                read_errors = 0
                if self._accept_card(session, value):
                    return
            elif kind == "read_id" and item_kind == "card_error":
                read_errors += 1
                if value in _SAM_FAULT_CODES or read_errors >= READER_FAULT_READS:
                    self._reader_fault(session, value)
            elif kind == "read_id" and item_kind == "reader_fault":
                self._reader_fault(session, value)
            elif kind == "confirm" and item_kind == "confirm":
                return
            elif kind == "capture_address" and item_kind == "address":
                session.mailing = value
                return
            elif kind == "scan_payment" and item_kind == "scan":
                self.io.trigger_scanner(False)
                method = value.get("payment")
                if method in ("wechat", "alipay"):
                    session.payment = {"method": method, "ref_masked": mask_reference(str(value.get("code", "")))}
                    return
                self._notify({"event": "not_a_payment_code", "session": session.id})

    async def _photo(self, session: Session, step: _Step) -> None:
        """Capture, show (``photo_preview``), and wait for accept or retake; a retake restarts the countdown."""
        while True:
            self._check_interrupt(session)
            try:
                jpeg = await asyncio.wait_for(self.io.capture_still(), step.timeout_s)
            except TimeoutError:
                raise _StepFailed(FAILED, "camera_timeout") from None
            except Exception as exc:  # noqa: BLE001 - a device error ends the session, named
                raise _StepFailed(FAILED, f"camera: {getattr(exc, 'code', exc.__class__.__name__)}") from None
            session.drop_previews()
            if session.face_jpeg is not None:
                session.face_jpeg[:] = bytes(len(session.face_jpeg))
            session.face_jpeg = jpeg
            preview = bytearray(jpeg)
            session.previews.append(preview)
            session.preview_waiting = True
            self._notify({"event": "photo_preview", "session": session.id, "jpeg": preview,
                          "retakes_left": session.retakes_left})
            while True:
                item_kind, _value = await self._next_input(session, step)
                if item_kind == "accept_photo":
                    session.drop_previews()      # the screen has shown it; only the sealed copy may live on
                    return
                if item_kind == "retake_photo":
                    break
            step.deadline = time.monotonic() + step.timeout_s
            self._notify(self._step_event(session, step))

    async def _next_input(self, session: Session, step: _Step) -> tuple[str, Any]:
        while True:
            self._check_interrupt(session)
            assert step.deadline is not None
            left = step.deadline - time.monotonic()
            if left <= 0:
                raise _StepFailed(ABANDONED, f"timeout:{step.kind}")
            try:
                item = await asyncio.wait_for(session.inputs.get(), min(left, _TICK_S))
            except TimeoutError:
                continue
            if item[0] != "tick":
                return item

    def _reader_fault(self, session: Session, code: str) -> None:
        """The card reader cannot read any card: tell the screen, end the session failed (a device fault)."""
        log.warning("session %s: card reader fault (%s)", session.id[:8], code)
        self._notify({"event": "card_rejected", "session": session.id, "reason": READER_FAULT})
        raise _StepFailed(FAILED, f"idcard: {code}")

    def _check_interrupt(self, session: Session) -> None:
        if self._stopping:
            raise _StepFailed(FAILED, "shutdown")
        found = self._kiosk_interrupt()
        if found is not None:
            raise _StepFailed(*found)
        if session.interrupt is not None:      # cancel() or stop(), maybe while the camera worked
            raise _StepFailed(*session.interrupt)

    def _accept_card(self, session: Session, record: Any) -> bool:
        try:
            card = self.io.card_fields(record)
        except Exception as exc:  # noqa: BLE001 - an unreadable record is a rejected card, not a crash
            log.warning("session %s: card record not usable (%s)", session.id[:8], exc.__class__.__name__)
            self._notify({"event": "card_rejected", "session": session.id, "reason": "unreadable"})
            return False
        if not card.check_ok:
            self._notify({"event": "card_rejected", "session": session.id, "reason": "check_character"})
            card.wipe()
            return False
        session.card, session.photo_wlt = card.fields, card.photo_wlt
        session.card_type, session.id_masked = card.card_type, mask_id(card.id_number)
        session.name_masked = mask_name(str(card.fields.get("name") or card.fields.get("name_en") or ""))
        self._notify({"event": "card_read", "session": session.id, "card_type": card.card_type,
                      "name_masked": session.name_masked, "id_masked": session.id_masked})
        return True

    # -- commit: journal, evidence --------------------------------------------

    def _face_basis(self, session: Session) -> str | None:
        if session.service.face_legal_basis:
            return "legal_basis"
        return "consent" if session.consent_face else None

    async def _commit(self, session: Session, outcome: str, reason: str | None) -> dict[str, Any]:
        """Journal the transaction (fsync), then seal and queue its evidence."""
        service = session.service
        completed = outcome == COMPLETED
        tx: dict[str, Any] = {
            "type": "session", "session": session.id, "service": service.id, "outcome": outcome,
            "reason": reason, "started": session.started_ms, "ended": int(time.time() * 1000),
            "duration_ms": round((time.monotonic() - session.started) * 1000),
            "steps": [s.record() if s.status != "not_reached" or not completed else {**s.record(), "status":
                      "after_commit"} for s in session.steps],
            "card_type": session.card_type, "id_masked": session.id_masked,
            "receipt": None, "payment": session.payment, "waybill": None, "face": None, "evidence": False,
            "language": session.language}
        if completed and self.catalogue.needs(service, "print_receipt"):
            tx["receipt"] = self._receipt_number()
        if completed and service.mail_document:
            tx["waybill"] = s10_waybill(self.store.bump_counter("waybill"))
        basis = self._face_basis(session)
        if session.face_jpeg is not None:
            tx["face"] = f"sealed:{basis}" if completed and basis else "erased"
        with_evidence = completed and session.card is not None and self.recipient is not None
        tx["evidence"] = with_evidence
        record = await self.io.journal_record(tx)
        tx_id, seq = record["id"], record.get("seq")
        if with_evidence:
            assert session.card is not None and session.photo_wlt is not None and self.recipient is not None
            content = EvidenceContent(service=service.id, card=dict(session.card),
                                      photo_wlt=bytearray(session.photo_wlt),
                                      face_jpeg=bytearray(session.face_jpeg) if basis and session.face_jpeg else None,
                                      face_basis=basis, legal_basis=service.face_legal_basis,
                                      mailing=dict(session.mailing) if session.mailing else None)
            try:
                bundle = seal_content(self.recipient, tx_id, content)
                contents = content.contents()
            finally:
                content.wipe()
            payload = evidence_payload(self.cfg.kiosk.id, tx_id, seq, service.id, bundle, contents)
            try:
                assert self.evidence is not None
                self.evidence.put(tx_id, payload)
                await self.io.enqueue("evidence", self.topics.evidence, payload)
            except AgentError as exc:
                # The transaction is committed and stays completed; only the bundle is at risk.
                log.error("evidence for tx %s not queued: %s: %s", tx_id, exc.code, exc)
        return {**tx, "id": tx_id, "seq": seq}

    async def _record_receipt(self, session: Session, committed: dict[str, Any], status: str,
                              code: str | None = None, alarms: tuple[str, ...] = ()) -> None:
        """Journal how the receipt of ``committed`` went, and count it durably.

        A follow-up record because the session record is already on disk
        (signed, hash-chained) before the printer gets a byte.
        """
        tx = {"type": "receipt", "tx": committed["id"], "service": session.service.id,
              "receipt": committed.get("receipt"), "role": session.service.receipt or "secondary", "status": status,
              "code": code, "alarms": list(alarms)}
        try:
            self.store.bump_counter(f"receipts_{status}")
        except AgentError as exc:
            log.error("receipt counter not stored: %s: %s", exc.code, exc)
        try:
            await self.io.journal_record(tx)
        except AgentError as exc:
            # The session record stands; only the outcome of its receipt is lost.
            log.error("receipt record for tx %s not journalled: %s: %s", committed["id"], exc.code, exc)
        if status != RECEIPT_PRINTED:
            log.warning("session %s: receipt %s (%s%s)", session.id[:8], status, code,
                        f", {', '.join(alarms)}" if alarms else "")
            if self.health is not None:
                self.health.publish_now("change")      # the fleet sees the counter move now, not at the next period

    def health_section(self) -> dict[str, Any]:
        """Health's ``sessions``: outcomes since start, receipts since the database was created."""
        store = self.store
        receipts = {status: store.counter(f"receipts_{status}")
                    for status in (RECEIPT_PRINTED, RECEIPT_FAILED, RECEIPT_SKIPPED)}
        return {**self.counts, "receipts": receipts}

    def _receipt_number(self) -> str:
        n = self.store.bump_counter("receipt")
        return f"{self.cfg.kiosk.id.upper()}-{dt.date.today():%Y%m%d}-{n:06d}"

    # -- tx/ack and retention -------------------------------------------------

    def on_tx_ack(self, ids: list[str]) -> None:
        if self.evidence is not None:
            self.evidence.ack(ids)

    def _sweep(self) -> None:
        if self.evidence is not None:
            try:
                self.evidence.sweep()
            except AgentError as exc:
                log.error("%s: %s", exc.code, exc)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    # -- reminders and notifications --------------------------------------------

    def _remind_card(self) -> None:
        """"Take your ID card": at the session's end, then every card_reminder_s.

        A GA 467 SAM answers find-card with 80 both for a lifted card and for
        one left after a read, so the reader cannot tell; the reminders stop
        after CARD_REMINDERS, at the next session, or on a new card read.
        """
        self._reminder = None
        if not self._card_left:
            return
        if self._reminders >= CARD_REMINDERS:
            self._card_left = False
            return
        self._reminders += 1
        # The first is the ordinary "take your card"; repeats are worth a warning.
        log.log(logging.INFO if self._reminders == 1 else logging.WARNING,
                "reminder %d/%d: the citizen's ID card may still be on the reader", self._reminders, CARD_REMINDERS)
        self._notify({"event": "card_left", "reminder": self._reminders})
        self.io.beep()
        self._reminder = asyncio.get_running_loop().call_later(self.cfg.sessions.card_reminder_s, self._remind_card)

    def _cancel_reminder(self) -> None:
        self._card_left = False
        if self._reminder is not None:
            self._reminder.cancel()
            self._reminder = None

    def _notify(self, event: dict[str, Any]) -> None:
        for cb in list(self._listeners):
            try:
                result = cb(event)
                if inspect.isawaitable(result):
                    spawn(result, name="session-listener", keep=self._notifying)
            except Exception:  # a UI bug must not break the session
                log.exception("session listener failed")

