# SPDX-License-Identifier: Apache-2.0
"""The Kiosk vendor service: sessions driven over the API as a screen would, against the real agent.

Each journey checks what the screen is told (events, completion codes), what
the back office receives (the tx at the broker), and that no frame carries
the simulated card's full ID number, name or address.
"""

from __future__ import annotations

import base64
import time

import pytest
from apikit import PAYMENT_CODE, ApiClient, RunningApi, card_secrets
from kiosktest import Subscriber, wait_until
from sessions.sesskit import find_pii


def _names(done_events: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [e["header"]["name"] for e in done_events]


def _no_pii(client: ApiClient, kind: str = "resident") -> None:
    blob = "\n".join(client.raw).encode("utf-8")
    assert not find_pii(blob, card_secrets(kind)), find_pii(blob, card_secrets(kind))


def _idle(api: RunningApi) -> None:
    """The shared agent has no session left over (a failed test must not spoil the next)."""
    with api.client("kiosk") as client:
        wait_until(lambda: client.command("Kiosk.Status").payload["session"] is None, 15,
                   message="no session running")


@pytest.fixture
def kiosk(api: RunningApi) -> ApiClient:
    _idle(api)
    client = api.client("kiosk")
    try:
        yield client  # type: ignore[misc]
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["resident", "gat_permit", "foreign_pr_2017", "foreign_pr_2023"])
def test_a_whole_session_with_each_card_type(api: RunningApi, kiosk: ApiClient, kind: str) -> None:
    sub = Subscriber(api.broker_url, "kiosk/+/+/+/tx")
    try:
        services = kiosk.command("Kiosk.GetServices").payload["services"]
        quick = next(s for s in services if s["id"] == "quick_print")
        assert quick["available"] and quick["steps"] == ["read_id", "confirm", "print_receipt"]
        assert quick["name"] == {"zh": "快速打印", "en": "Quick print"}
        legal = {s["id"]: s["faceLegalBasis"] for s in services}
        assert legal["photo_legal"] and not legal["photo_consent"]
        rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print", "language": "en"})
        first = kiosk.event(rid, "Kiosk.StepEvent")["payload"]
        assert (first["step"], first["index"], first["count"], first["timeoutMs"]) == ("read_id", 0, 3, 20000)
        status = kiosk.command("Kiosk.Status").payload
        assert status["session"]["serviceId"] == "quick_print" and status["session"]["step"] == "read_id"
        assert status["language"] == "en"
        api.agent.sim("idcard", "place", kind)
        card = kiosk.event(rid, "Kiosk.CardReadEvent")["payload"]
        assert card["cardType"] == kind and "*" in card["idMasked"] and "*" in (card["nameMasked"] or "*")
        confirm = kiosk.event(rid, "Kiosk.StepEvent")["payload"]
        assert confirm["step"] == "confirm" and confirm["sessionId"] == first["sessionId"]
        assert kiosk.command("Kiosk.Confirm").code == "success"
        done = kiosk.finish(rid)
        assert done.code == "success", done.payload
        assert done.payload["outcome"] == "completed" and done.payload["receiptNumber"]
        assert "Kiosk.ReceiptEvent" in _names(done.events)
        receipt = next(e for e in done.events if e["header"]["name"] == "Kiosk.ReceiptEvent")["payload"]
        assert receipt["status"] == "printed"
        tx = sub.wait_for("/tx", lambda d: d.get("id") == done.payload["txId"], timeout=15)
        assert tx.data["data"]["id_masked"] == card["idMasked"]
        assert not find_pii(tx.payload, card_secrets(kind))
        sub.assert_valid()
        _no_pii(kiosk, kind)
    finally:
        sub.close()
        api.agent.sim("idcard", "remove")


def test_photo_retake_accept_and_the_card_address_never_sent(api: RunningApi, kiosk: ApiClient) -> None:
    rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "photo_consent"})
    kiosk.event(rid, "Kiosk.StepEvent")
    assert kiosk.command("Kiosk.AcceptPhoto").code == "sequenceError"     # nothing shown yet
    api.agent.sim("idcard", "place", "resident")
    kiosk.event(rid, "Kiosk.CardReadEvent")
    assert kiosk.event(rid, "Kiosk.StepEvent")["payload"]["step"] == "capture_photo"
    assert kiosk.command("Kiosk.SetConsent", {"face": True}).code == "success"
    assert kiosk.command("Kiosk.SetConsent", {"face": "yes"}).code == "invalidData"
    preview = kiosk.event(rid, "Kiosk.PhotoPreviewEvent")["payload"]
    assert base64.b64decode(preview["jpeg"])[:3] == b"\xff\xd8\xff"        # a JPEG the screen can show
    left = preview["retakesLeft"]
    assert kiosk.command("Kiosk.RetakePhoto").code == "success"
    again = kiosk.event(rid, "Kiosk.PhotoPreviewEvent")["payload"]
    assert again["retakesLeft"] == left - 1
    assert kiosk.command("Kiosk.AcceptPhoto").code == "success"
    kiosk.step(rid, "capture_address")
    bad = kiosk.command("Kiosk.ProvideAddress", {"useCardAddress": True, "phone": "12"})
    assert bad.code == "invalidData" and "12" not in bad.payload["errorDescription"]
    assert bad.payload["errorCode"] == "agent.session.invalid_phone"     # the screen marks the field
    assert kiosk.command("Kiosk.ProvideAddress", {"recipient": "x"}).code == "invalidData"
    assert kiosk.command("Kiosk.ProvideAddress", {"useCardAddress": True, "phone": "13800138000",
                                                  "postcode": "100000"}).code == "success"
    kiosk.step(rid, "confirm")
    assert kiosk.command("Kiosk.Confirm").code == "success"
    done = kiosk.finish(rid)
    assert done.code == "success" and done.payload["waybill"], done.payload
    _no_pii(kiosk)
    api.agent.sim("idcard", "remove")


def test_cancel_walk_away_and_commands_without_a_session(api: RunningApi, kiosk: ApiClient) -> None:
    for name in ("Kiosk.Confirm", "Kiosk.Cancel", "Kiosk.AcceptPhoto", "Kiosk.RetakePhoto", "Kiosk.MoreTime"):
        reply = kiosk.command(name)
        assert reply.code == "sequenceError" and reply.payload["errorDescription"], name
    assert kiosk.command("Kiosk.BeginSession", {"serviceId": "no_such"}).code == "invalidData"
    assert kiosk.command("Kiosk.BeginSession", {}).code == "invalidData"
    assert kiosk.command("Kiosk.BeginSession", {"serviceId": "quick_print", "language": "fr"}).code == "invalidData"
    # The citizen cancels.
    rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
    kiosk.event(rid, "Kiosk.StepEvent")
    assert kiosk.command("Kiosk.Cancel").code == "success"
    done = kiosk.finish(rid)
    assert (done.code, done.payload["outcome"], done.payload["reason"]) == ("canceled", "abandoned", "cancelled")
    # The citizen walks away at the 3 s confirm step; More time first stretches it.
    rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
    kiosk.event(rid, "Kiosk.StepEvent")
    api.agent.sim("idcard", "place", "resident")
    step = kiosk.event(rid, "Kiosk.StepEvent")["payload"]
    assert step["step"] == "confirm"
    more = kiosk.command("Kiosk.MoreTime")
    assert more.code == "success"
    stretched = kiosk.event(rid, "Kiosk.StepEvent")["payload"]
    assert stretched["step"] == "confirm" and stretched["moreTimeLeft"] == step["moreTimeLeft"] - 1
    assert stretched["remainingMs"] > 3000
    done = kiosk.finish(rid, timeout=30)
    assert (done.code, done.payload["outcome"]) == ("timeOut", "abandoned")
    assert done.payload["reason"].startswith("timeout")
    # After it, the card-left reminder reaches every screen.
    kiosk.unsolicited("Kiosk.CardLeftEvent", predicate=lambda p: p["reminder"] >= 1)
    api.agent.sim("idcard", "remove")


def test_a_second_screen_is_read_only_until_the_driver_leaves(api: RunningApi, kiosk: ApiClient) -> None:
    with api.client("kiosk") as second:
        refused = second.command("Kiosk.BeginSession", {"serviceId": "quick_print"})
        assert refused.code == "sequenceError" and "another screen" in refused.payload["errorDescription"]
        for name in ("Kiosk.Confirm", "Kiosk.Cancel", "Kiosk.SetLanguage"):
            assert second.command(name, {"language": "en"}).code == "sequenceError"
        assert second.command("Kiosk.Status").code == "success"
        assert second.command("Kiosk.GetServices").code == "success"
        # The driver's session: the read-only screen cannot cancel it.
        rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        kiosk.event(rid, "Kiosk.StepEvent")
        assert second.command("Kiosk.Cancel").code == "sequenceError"
        assert second.command("Kiosk.Status").payload["session"]["step"] == "read_id"
        # The driver goes away mid-session: the session ends (screen_lost) and its data is wiped.
        kiosk.close()
        wait_until(lambda: second.command("Kiosk.Status").payload["session"] is None, 15, message="session ended")
    # Now the next screen to connect drives.
    with api.client("kiosk") as third:
        rid = third.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        third.event(rid, "Kiosk.StepEvent")
        assert third.command("Kiosk.Cancel").code == "success"
        assert third.finish(rid).code == "canceled"


def test_screen_lost_is_recorded_as_failed(api: RunningApi) -> None:
    _idle(api)
    sub = Subscriber(api.broker_url, "kiosk/+/+/+/tx")
    try:
        with api.client("kiosk") as driver:
            rid = driver.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
            session = driver.event(rid, "Kiosk.StepEvent")["payload"]["sessionId"]
        tx = sub.wait_for("/tx", lambda d: d["data"].get("session") == session, timeout=15)
        assert (tx.data["data"]["outcome"], tx.data["data"]["reason"]) == ("failed", "screen_lost")
    finally:
        sub.close()


def test_no_paper_makes_the_receipt_service_unavailable_and_refused(api: RunningApi, kiosk: ApiClient) -> None:
    def receipt_service(services: list[dict]) -> dict:  # type: ignore[type-arg]
        return next(s for s in services if s["id"] == "quick_receipt")

    assert receipt_service(kiosk.command("Kiosk.GetServices").payload["services"])["available"]
    api.agent.sim("printer", "paper_out")
    try:
        changed = kiosk.unsolicited("Kiosk.ServicesChangedEvent",
                                    predicate=lambda p: not receipt_service(p["services"])["available"])
        entry = receipt_service(changed["payload"]["services"])
        assert entry["unavailableReason"] == "printer_out_of_paper"
        assert changed["payload"]["mode"] == "in_service" and changed["payload"]["online"] is True
        refused = kiosk.command("Kiosk.BeginSession", {"serviceId": "quick_receipt"})
        assert refused.code == "deviceNotReady" and "printer" in refused.payload["errorDescription"]
        assert refused.payload["reason"] == "printer_out_of_paper"       # what the screen explains
        # A service whose receipt is secondary still runs, and says its receipt was skipped.
        rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "pay"})
        kiosk.event(rid, "Kiosk.StepEvent")
        kiosk.command("Kiosk.Confirm")
        api.agent.sim("scanner", "scan", "hello world")
        kiosk.event(rid, "Kiosk.PaymentCodeRejectedEvent")
        api.agent.sim("scanner", "scan", PAYMENT_CODE)
        done = kiosk.finish(rid)
        assert done.code == "success"
        receipt = next(e for e in done.events if e["header"]["name"] == "Kiosk.ReceiptEvent")["payload"]
        assert receipt["status"] == "skipped" and receipt["reason"].startswith("printer")
    finally:
        api.agent.sim("printer", "refill")
    back = kiosk.unsolicited("Kiosk.ServicesChangedEvent",
                             predicate=lambda p: receipt_service(p["services"])["available"])
    assert receipt_service(back["payload"]["services"])["unavailableReason"] is None


def test_the_door_opened_mid_session_ends_it_device_not_ready(api: RunningApi, kiosk: ApiClient) -> None:
    rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
    kiosk.event(rid, "Kiosk.StepEvent")
    api.agent.sim("door", "open")
    try:
        done = kiosk.finish(rid)
        assert (done.code, done.payload["outcome"], done.payload["reason"]) == ("deviceNotReady", "failed",
                                                                                "door_open")
        closed = kiosk.unsolicited("Kiosk.ServicesChangedEvent",
                                   predicate=lambda p: not any(s["available"] for s in p["services"]))
        assert {s["unavailableReason"] for s in closed["payload"]["services"]} == {"door_open"}
        refused = kiosk.command("Kiosk.BeginSession", {"serviceId": "quick_print"})
        assert (refused.code, refused.payload["reason"]) == ("deviceNotReady", "door_open")
    finally:
        api.agent.sim("door", "close")
    kiosk.unsolicited("Kiosk.ServicesChangedEvent", predicate=lambda p: all(s["available"] for s in p["services"]))


def test_language_is_kept_and_checked(api: RunningApi, kiosk: ApiClient) -> None:
    assert kiosk.command("Kiosk.SetLanguage", {"language": "de"}).code == "invalidData"
    assert kiosk.command("Kiosk.SetLanguage", {}).code == "invalidData"
    assert kiosk.command("Kiosk.SetLanguage", {"language": "en"}).code == "success"
    assert kiosk.command("Kiosk.Status").payload["language"] == "en"
    assert kiosk.command("Kiosk.SetLanguage", {"language": "zh"}).code == "success"
    status = kiosk.command("Kiosk.Status").payload
    assert status == {"completionCode": "success", "mode": "in_service", "online": True, "language": "zh",
                      "session": None, "developer": True}
    common = kiosk.command("Common.Status").payload
    assert common["common"]["device"] == "online" and common["kiosk"]["mode"] == "in_service"
    time.sleep(0)  # nothing timed here


def test_a_rejected_card_more_time_used_up_and_no_second_session(api: RunningApi, kiosk: ApiClient) -> None:
    rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
    step = kiosk.step(rid, "read_id")
    again = kiosk.command("Kiosk.BeginSession", {"serviceId": "quick_print"})
    assert again.code == "sequenceError" and "running" in again.payload["errorDescription"]
    api.agent.sim("idcard", "place", "resident", "bad")            # a wrong check character
    rejected = kiosk.event(rid, "Kiosk.CardRejectedEvent")["payload"]
    assert rejected == {"reason": "check_character"}
    for left in range(step["moreTimeLeft"] - 1, -1, -1):
        assert kiosk.command("Kiosk.MoreTime").code == "success"
        assert kiosk.step(rid, "read_id")["moreTimeLeft"] == left
    used_up = kiosk.command("Kiosk.MoreTime")
    assert (used_up.code, used_up.payload["errorCode"]) == ("sequenceError", "agent.session.no_more_time")
    assert kiosk.command("Kiosk.Confirm").payload["errorCode"] == "agent.session.wrong_step"
    assert kiosk.command("Kiosk.Cancel").code == "success"
    assert kiosk.finish(rid).code == "canceled"
    _no_pii(kiosk)
    api.agent.sim("idcard", "remove")
