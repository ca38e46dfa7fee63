# SPDX-License-Identifier: Apache-2.0
"""A whole journey for each service of the default catalogue, in chromium, against the real agent.

The citizen taps the screen; the card, the payment code and the paper are the
simulators' (driven through the agent's simulator control socket, as
``kiosk-agent sim`` does); the record is checked where the fleet sees it, at
the broker. What is asserted is what the citizen reads, what the simulated
printer printed and what left the kiosk.
"""

from __future__ import annotations

import json
import re
from typing import Any

from uikit import ALIPAY_CODE, PAYMENT_CODE, PHONE, Citizen, KioskScreen, card_secrets, find_secrets, session_tx

from agent.sessions.sessionio import mask_id, mask_reference
from hal.sim.idcard import sample_card

CARD = sample_card("resident")


def receipt_follow_up(screen: KioskScreen, receipt: str) -> str:
    """The follow-up ``receipt`` record's status (printed / failed / skipped) for receipt number ``receipt``."""
    record = screen.wait_tx(lambda d: d["data"].get("type") == "receipt" and d["data"].get("receipt") == receipt)
    return str(record["data"]["status"])


def assert_only_masked(screen: KioskScreen) -> None:
    """No session record at the broker carries the card's full number, name or address."""
    assert screen.tx is not None
    for message in screen.tx.matching("/tx"):
        for secret in card_secrets("resident"):
            assert secret not in json.dumps(message.data, ensure_ascii=False), f"{secret!r} in {message.topic}"


def test_pension_record_print(kiosk_screen: KioskScreen) -> None:
    """Card, check the masked details, confirm: the receipt comes out of the printer, the tx reaches the broker."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("pension_record_print")
    citizen.sees("remaining")                       # the step's countdown is on screen
    citizen.place_card()
    citizen.checks_details()
    citizen.confirms()
    citizen.sees("printed", 40_000)
    shown = citizen.done()
    citizen.sees("take_card")

    record = session_tx(kiosk_screen, "pension_record_print")
    assert record["outcome"] == "completed" and record["receipt"] == shown["receipt"]
    assert record["id_masked"] == mask_id(CARD.id_number)
    printed = "\n".join(kiosk_screen.printed())
    assert shown["receipt"] in printed and str(mask_id(CARD.id_number)) in printed
    assert CARD.id_number not in printed and CARD.name not in printed
    assert receipt_follow_up(kiosk_screen, shown["receipt"]) == "printed"
    assert_only_masked(kiosk_screen)
    citizen.goes_home()
    kiosk_screen.assert_no_leaks()
    kiosk_screen.assert_contract()


def test_driving_licence_renewal(kiosk_screen: KioskScreen) -> None:
    """Photo accepted, the card's address by one tap, a wrong code refused then a payment code, the waybill shown."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("driving_licence_renewal")
    citizen.place_card()
    citizen.accepts_photo()
    citizen.card_address(PHONE)
    citizen.checks_details()
    citizen.confirms()
    citizen.pays("6901234567892")                   # a product barcode is not a payment code
    citizen.sees("not_paid_code")
    kiosk_screen.scan(PAYMENT_CODE)
    citizen.sees("printed", 40_000)
    shown = citizen.done(waybill=True)
    assert re.fullmatch(r"[A-Z]{2}\d{9}[A-Z]{2}", shown["waybill"]), shown

    record = session_tx(kiosk_screen, "driving_licence_renewal")
    assert record["outcome"] == "completed"
    assert record["waybill"] == shown["waybill"] and record["receipt"] == shown["receipt"]
    assert record["payment"] == {"method": "wechat", "ref_masked": mask_reference(PAYMENT_CODE)}
    assert record["id_masked"] == mask_id(CARD.id_number)
    assert record["face"] == "sealed:legal_basis"
    printed = "\n".join(kiosk_screen.printed())
    assert shown["waybill"] in printed and PAYMENT_CODE not in printed
    assert_only_masked(kiosk_screen)
    citizen.goes_home()
    kiosk_screen.assert_no_leaks()
    kiosk_screen.assert_contract()
    # The photo preview reached the page as an image, and the page kept it nowhere.
    assert kiosk_screen.recorder.messages("Kiosk.PhotoPreviewEvent")
    assert not kiosk_screen.page.locator("img.photo").count()


def test_residence_permit_with_the_on_screen_keyboard(kiosk_screen: KioskScreen) -> None:
    """No consent to keep the photo, a retake, and a mailing address typed by touch alone (pinyin candidates)."""
    citizen = Citizen(kiosk_screen)
    page = kiosk_screen.page
    citizen.choose("residence_permit_application")
    citizen.place_card()
    citizen.sees("photo")
    citizen.tap("consent_no")
    page.locator("img.photo").wait_for(state="visible", timeout=30_000)
    citizen.tap("retake")
    citizen.accepts_photo()

    citizen.sees("address")
    citizen.tap("other_address")
    typing = Typist(page)
    typing.field("phone").digits(PHONE)
    typing.field("recipient").pinyin("wang", "王").pinyin("li", "李")
    typing.field("address").pinyin("bei", "北").pinyin("jing", "京").pinyin("shi", "市") \
        .pinyin("lu", "路").keys("8").pinyin("hao", "号")
    typing.field("postcode").digits("100001")
    assert page.locator("#field-recipient").input_value() == "王李"
    assert page.locator("#field-address").input_value() == "北京市路8号"
    citizen.tap("submit_address")

    citizen.checks_details()
    citizen.confirms()
    citizen.sees("printed", 40_000)
    shown = citizen.done(waybill=True)
    record = session_tx(kiosk_screen, "residence_permit_application")
    assert record["outcome"] == "completed" and record["waybill"] == shown["waybill"]
    assert record["face"] == "erased"               # no legal basis, no consent: the photo stayed and went
    # The typed address went to the agent (the citizen's own input) and to the broker only sealed:
    # no message on any topic carries it in clear (the evidence bundle is encrypted).
    assert kiosk_screen.tx is not None
    assert not [m.topic for m in kiosk_screen.tx.messages if find_secrets(m.payload, ["北京市路8号", "王李"])]
    assert_only_masked(kiosk_screen)
    citizen.goes_home()
    kiosk_screen.assert_no_leaks()
    kiosk_screen.assert_contract()


def test_utility_bill_payment(kiosk_screen: KioskScreen) -> None:
    """No card: confirm, pay by Alipay, receipt."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("utility_bill_payment")
    citizen.sees("本业务无需读取身份证")
    citizen.confirms()
    citizen.pays(ALIPAY_CODE)
    citizen.sees("printed", 40_000)
    shown = citizen.done()
    record = session_tx(kiosk_screen, "utility_bill_payment")
    assert record["outcome"] == "completed" and record["card_type"] is None and record["id_masked"] is None
    assert record["payment"] == {"method": "alipay", "ref_masked": mask_reference(ALIPAY_CODE)}
    assert shown["receipt"] in "\n".join(kiosk_screen.printed())
    citizen.goes_home()
    kiosk_screen.assert_no_leaks([ALIPAY_CODE])
    kiosk_screen.assert_contract()


class Typist:
    """Touches on the on-screen keyboard of the address form (never the physical keyboard)."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def field(self, name: str) -> Typist:
        self.page.locator(f"#field-{name}").click()
        return self

    def digits(self, digits: str) -> Typist:
        keypad = self.page.locator("[data-keyboard] .keypad")
        for digit in digits:
            keypad.locator(f"[data-key='{digit}']").click()
        return self

    def keys(self, letters: str) -> Typist:
        board = self.page.locator("[data-keyboard] .simple-keyboard")
        for letter in letters:
            board.locator(f"[data-skbtn='{letter}']").click()
        return self

    def pinyin(self, syllable: str, character: str) -> Typist:
        """A syllable's letters, then the character among the candidates above the keys."""
        self.keys(syllable)
        self.page.locator(".hg-candidate-box-list-item", has_text=character).first.click()
        return self
