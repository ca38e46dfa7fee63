# SPDX-License-Identifier: Apache-2.0
"""``/kiosk``: the vendor service (``Kiosk.*``) over the citizen session engine.

``Kiosk.BeginSession`` is long-running: acknowledged, then one event per
step, card read, photo preview, receipt, and one completion when the session
ends. The other session commands complete at once. Only the connection that
drives (:attr:`agent.localapi.service.Peer.drives`) may begin or steer a
session; the others read status and receive the unsolicited events. If the
driving screen goes away mid-session the session is aborted (``screen_lost``)
and its data wiped.

What reaches the screen is built field by field here from the engine's
events, never forwarded whole: card data only in the masked forms, the photo
preview as base64 made during the engine's call (the engine zeroes its copy
afterwards) and kept nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any, Protocol

from agent.localapi import messages
from agent.localapi.service import CommandError, Peer, Reply, Request, Service
from agent.sessions.catalogue import UnknownService
from agent.sessions.engine import (
    Busy,
    InvalidInput,
    NoSession,
    SessionError,
    UnsupportedLanguage,
)

__all__ = ["KioskService", "Sessions", "completion_code"]

log = logging.getLogger(__name__)

LANGUAGES = ("zh", "en")
END_WAIT_S = 10.0        # after a cancel, how long the completion waits for the session to wind down
SCREEN_LOST = "screen_lost"


class Sessions(Protocol):
    """The session engine as this service uses it (:class:`agent.sessions.engine.SessionEngine`)."""

    language: str

    def services(self) -> list[dict[str, Any]]: ...
    def status(self) -> dict[str, Any]: ...
    async def begin(self, service_id: str, language: str | None = None) -> dict[str, Any]: ...
    def set_language(self, language: str) -> None: ...
    async def confirm(self) -> None: ...
    async def cancel(self) -> None: ...
    async def abort(self, reason: str) -> bool: ...
    async def set_consent(self, *, face: bool) -> None: ...
    async def accept_photo(self) -> None: ...
    async def retake_photo(self) -> None: ...
    async def provide_address(self, *, use_card_address: bool = False, recipient: str | None = None, phone: str,
                              address: str | None = None, postcode: str | None = None) -> None: ...
    async def more_time(self) -> dict[str, Any]: ...
    def add_listener(self, cb: Callable[[dict[str, Any]], Any]) -> None: ...
    def remove_listener(self, cb: Callable[[dict[str, Any]], Any]) -> None: ...


def completion_code(outcome: str, reason: str | None) -> str:
    """The XFS4IoT completion code of a session that ended with ``outcome`` for ``reason``."""
    why = reason or ""
    if outcome == "completed":
        return messages.SUCCESS
    if outcome == "abandoned":
        return messages.TIMEOUT if why.startswith("timeout") else messages.CANCELED
    if why == SCREEN_LOST:
        return messages.CANCELED
    if why == "internal_error":
        return messages.INTERNAL_ERROR
    if why in ("printer_unavailable", "printer_out_of_paper"):
        # Availability, like a refused begin: the device said so before anything was tried.
        return messages.DEVICE_NOT_READY
    if why.split(":")[0].split("_")[0] in ("camera", "printer", "idcard", "scanner", "hal"):
        return messages.HARDWARE_ERROR
    return messages.DEVICE_NOT_READY


def _ms(seconds: Any) -> int | None:
    return None if not isinstance(seconds, (int, float)) else max(0, round(seconds * 1000))


class _Active:
    """The BeginSession request a session belongs to."""

    def __init__(self, request: Request, count: int) -> None:
        self.request = request
        self.count = count
        self.session_id: str | None = None
        self.ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()


class KioskService(Service):
    """See the module docstring."""

    path, interface = "kiosk", "Kiosk"
    events = ("Kiosk.ServicesChangedEvent", "Kiosk.CardLeftEvent", "Kiosk.StepEvent", "Kiosk.CardReadEvent",
              "Kiosk.CardRejectedEvent", "Kiosk.PhotoPreviewEvent", "Kiosk.PaymentCodeRejectedEvent",
              "Kiosk.ReceiptEvent")

    def __init__(self, engine: Sessions, *, mode: Callable[[], str], online: Callable[[], bool],
                 developer: bool) -> None:
        super().__init__()
        self.engine = engine
        self.mode = mode
        self.online = online
        self.developer = developer
        self.active: _Active | None = None
        self._last_services: Any = None
        self.commands.update({
            "Common.Status": self.common_status,
            "Common.Capabilities": self.get_capabilities,
            "Kiosk.Status": self.kiosk_status,
            "Kiosk.GetServices": self.get_services,
            "Kiosk.BeginSession": self.begin_session,
            "Kiosk.Confirm": self.confirm,
            "Kiosk.Cancel": self.cancel,
            "Kiosk.SetConsent": self.set_consent,
            "Kiosk.AcceptPhoto": self.accept_photo,
            "Kiosk.RetakePhoto": self.retake_photo,
            "Kiosk.ProvideAddress": self.provide_address,
            "Kiosk.MoreTime": self.more_time,
            "Kiosk.SetLanguage": self.set_language,
        })

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.engine.add_listener(self.on_engine_event)

    async def stop(self) -> None:
        self.engine.remove_listener(self.on_engine_event)

    def closed(self, peer: Peer) -> None:
        # The server cancels the peer's BeginSession, whose handler then aborts the session.
        active = self.active
        if active is not None and active.request.peer is peer and not active.ended.done():
            log.warning("the driving screen went away mid-session: ending it (%s)", SCREEN_LOST)

    def refresh(self) -> None:
        # services_changed comes from the engine; this catches what it does not watch.
        self._send_services_if_changed()

    # -- queries --------------------------------------------------------------------------

    def services_payload(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.engine.services():
            out.append({
                "id": entry["id"], "name": {"zh": entry["name_zh"], "en": entry["name_en"]},
                "available": bool(entry.get("available")), "unavailableReason": entry.get("unavailable_reason"),
                "steps": [step["kind"] for step in entry.get("steps", [])],
                "mailDocument": bool(entry.get("mail_document")), "offline": bool(entry.get("offline")),
                "faceLegalBasis": bool(entry.get("face_legal_basis")),
            })
        return out

    def _availability(self) -> dict[str, Any]:
        return {"mode": self.mode(), "online": bool(self.online()), "services": self.services_payload()}

    def _send_services_if_changed(self) -> None:
        now = self._availability()
        if now != self._last_services:
            first = self._last_services is None
            self._last_services = now
            if not first:
                self.unsolicited("Kiosk.ServicesChangedEvent", now)

    def opened(self, peer: Peer) -> None:
        if self._last_services is None:
            self._last_services = self._availability()

    async def common_status(self, _request: Request) -> Reply:
        mode = self.mode()
        device = {"in_service": "online", "maintenance": "maintenance"}.get(mode, "offline")
        return Reply({"common": {"device": device}, "kiosk": self._status()})

    async def get_capabilities(self, _request: Request) -> Reply:
        return Reply(self.capabilities())

    def _status(self) -> dict[str, Any]:
        st = self.engine.status()
        session = None
        if st.get("session"):
            session = {"id": st["session"], "serviceId": st.get("service"), "step": st.get("step"),
                       "index": st.get("step_index"), "count": st.get("steps_total")}
        return {"mode": self.mode(), "online": bool(self.online()), "language": self.engine.language,
                "session": session, "developer": self.developer}

    async def kiosk_status(self, _request: Request) -> Reply:
        return Reply(self._status())

    async def get_services(self, _request: Request) -> Reply:
        return Reply({"services": self.services_payload()})

    # -- the session ----------------------------------------------------------------------

    @staticmethod
    def _must_drive(request: Request) -> None:
        if not request.peer.drives:
            raise CommandError(messages.SEQUENCE_ERROR, "another screen drives the kiosk; this connection is "
                                                        "read-only")

    async def begin_session(self, request: Request) -> Reply:
        self._must_drive(request)
        service_id = request.payload.get("serviceId")
        language = request.payload.get("language")
        if not isinstance(service_id, str) or not service_id:
            raise CommandError(messages.INVALID_DATA, "serviceId must be a service id (Kiosk.GetServices)")
        if language is not None and language not in LANGUAGES:
            raise CommandError(messages.INVALID_DATA, f"language must be one of {', '.join(LANGUAGES)}")
        if self.active is not None:
            raise CommandError(messages.SEQUENCE_ERROR, "a session is running")
        count = next((len(e.get("steps", [])) for e in self.engine.services() if e.get("id") == service_id), 0)
        active = _Active(request, count)
        self.active = active
        try:
            try:
                status = await self.engine.begin(service_id, language=language)
            except UnknownService as exc:
                raise CommandError(messages.INVALID_DATA, str(exc)) from None
            except UnsupportedLanguage as exc:
                raise CommandError(messages.INVALID_DATA, str(exc)) from None
            except Busy as exc:
                raise CommandError(messages.SEQUENCE_ERROR, str(exc)) from None
            except SessionError as exc:
                reason = exc.unavailable_reason
                # reason: the same code GetServices gives (the screen explains it); errorDescription: prose.
                raise CommandError(messages.DEVICE_NOT_READY, f"{reason}: {exc}" if reason else str(exc),
                                   {"reason": reason, "errorCode": exc.code}) from None
            active.session_id = status.get("session")
            try:
                ended = await asyncio.shield(active.ended)
            except asyncio.CancelledError:
                if request.cancel_reason is None:
                    raise
                # Common.Cancel or the command's timeout: the citizen's session ends too.
                # The screen gone away: the kiosk ends it (failed, screen_lost), data wiped.
                try:
                    if request.peer.gone:
                        await self.engine.abort(SCREEN_LOST)
                    else:
                        await self.engine.cancel()
                except NoSession:
                    pass
                try:
                    ended = await asyncio.wait_for(asyncio.shield(active.ended), END_WAIT_S)
                except TimeoutError:
                    raise CommandError(request.cancel_reason, "the session did not end in time") from None
                return Reply(self._ended_payload(ended), request.cancel_reason,
                             "canceled" if request.cancel_reason == messages.CANCELED else "timeout expired")
            code = completion_code(ended.get("outcome", ""), ended.get("reason"))
            error = None if code == messages.SUCCESS else (ended.get("reason") or ended.get("outcome"))
            return Reply(self._ended_payload(ended), code, error)
        finally:
            if self.active is active:
                self.active = None

    @staticmethod
    def _ended_payload(ended: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": ended.get("outcome"), "reason": ended.get("reason"),
                               "sessionId": ended.get("session")}
        for key, name in (("receipt_number", "receiptNumber"), ("waybill", "waybill"), ("tx", "txId")):
            if ended.get(key) is not None:
                out[name] = ended[key]
        return out

    async def _steer(self, request: Request, call: Callable[[], Any]) -> Reply:
        self._must_drive(request)
        try:
            result = call()
            if asyncio.iscoroutine(result):
                await result
        except (InvalidInput, UnsupportedLanguage) as exc:
            # errorCode says which field is wrong (agent.session.invalid_phone, .no_card_address, ...).
            raise CommandError(messages.INVALID_DATA, str(exc), {"errorCode": exc.code}) from None
        except SessionError as exc:      # no session, wrong step, retakes or more time used up
            raise CommandError(messages.SEQUENCE_ERROR, str(exc), {"errorCode": exc.code}) from None
        return Reply()

    async def confirm(self, request: Request) -> Reply:
        return await self._steer(request, self.engine.confirm)

    async def cancel(self, request: Request) -> Reply:
        return await self._steer(request, self.engine.cancel)

    async def set_consent(self, request: Request) -> Reply:
        face = request.payload.get("face")
        if not isinstance(face, bool):
            raise CommandError(messages.INVALID_DATA, "face must be true or false")
        return await self._steer(request, lambda: self.engine.set_consent(face=face))

    async def accept_photo(self, request: Request) -> Reply:
        return await self._steer(request, self.engine.accept_photo)

    async def retake_photo(self, request: Request) -> Reply:
        return await self._steer(request, self.engine.retake_photo)

    async def more_time(self, request: Request) -> Reply:
        return await self._steer(request, self.engine.more_time)

    async def set_language(self, request: Request) -> Reply:
        language = request.payload.get("language")
        if language not in LANGUAGES:
            raise CommandError(messages.INVALID_DATA, f"language must be one of {', '.join(LANGUAGES)}")
        return await self._steer(request, lambda: self.engine.set_language(language))

    async def provide_address(self, request: Request) -> Reply:
        p = request.payload
        strings = ("recipient", "phone", "address", "postcode")
        for key in strings:
            if key in p and not isinstance(p[key], str):
                raise CommandError(messages.INVALID_DATA, f"{key} must be a string")
        if p.get("useCardAddress") is True:
            if not isinstance(p.get("phone"), str):
                raise CommandError(messages.INVALID_DATA, "phone is required")
            return await self._steer(request, lambda: self.engine.provide_address(
                use_card_address=True, phone=p["phone"], postcode=p.get("postcode")))
        if "useCardAddress" in p and p["useCardAddress"] is not False:
            raise CommandError(messages.INVALID_DATA, "useCardAddress must be true or false")
        missing = [key for key in strings if not isinstance(p.get(key), str)]
        if missing:
            raise CommandError(messages.INVALID_DATA, f"missing {', '.join(missing)} (or useCardAddress: true "
                                                      "and phone)")
        return await self._steer(request, lambda: self.engine.provide_address(
            recipient=p["recipient"], phone=p["phone"], address=p["address"], postcode=p["postcode"]))

    # -- engine events ----------------------------------------------------------------------

    def on_engine_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "services_changed":
            self._send_services_if_changed()
            return
        if kind == "card_left":
            self.unsolicited("Kiosk.CardLeftEvent", {"reminder": ev.get("reminder")})
            return
        active = self.active
        if active is None or (active.session_id is not None and ev.get("session") not in (None, active.session_id)):
            return
        request = active.request
        if kind == "step":
            count = ev.get("count", active.count)
            request.event("Kiosk.StepEvent", {
                "sessionId": ev.get("session"), "step": ev.get("step"), "index": ev.get("index"),
                "count": count, "timeoutMs": _ms(ev.get("timeout_s")),
                "remainingMs": _ms(ev.get("remaining_s", ev.get("timeout_s"))),
                "moreTimeLeft": int(ev.get("more_time_left") or 0)})
        elif kind == "card_read":
            request.event("Kiosk.CardReadEvent", {"cardType": ev.get("card_type"),
                                                  "nameMasked": ev.get("name_masked"),
                                                  "idMasked": ev.get("id_masked")})
        elif kind == "card_rejected":
            request.event("Kiosk.CardRejectedEvent", {"reason": ev.get("reason")})
        elif kind == "photo_preview":
            jpeg = ev.get("jpeg")
            # Encoded now: the engine zeroes its copy after this call; nothing here keeps it.
            encoded = base64.b64encode(bytes(jpeg)).decode("ascii") if isinstance(jpeg, (bytes, bytearray)) else ""
            request.event("Kiosk.PhotoPreviewEvent", {"jpeg": encoded, "retakesLeft": ev.get("retakes_left")})
        elif kind == "not_a_payment_code":
            request.event("Kiosk.PaymentCodeRejectedEvent", {})
        elif kind in ("receipt_printed", "receipt_failed"):
            request.event("Kiosk.ReceiptEvent", {"status": ev.get("status", "printed" if kind == "receipt_printed"
                                                                   else "failed"), "reason": ev.get("reason")})
        elif kind == "ended" and not active.ended.done():
            active.ended.set_result(dict(ev))
