# SPDX-License-Identifier: Apache-2.0
"""Elder mode and English through whole journeys, and on the screens a session ends on.

The elder-mode rules are measured in the page as rendered (computed font
sizes, button boxes, text/background contrast), with the measuring script and
rules of test_ui_accessibility.py (which walks every step screen in both modes);
here the mode is chosen once at home, as a citizen would, and must hold through
the journey and the end screens of a walk-away and an opened door, and be off
again for the next citizen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect
from test_journeys_degraded import WALK_AWAY_SERVICES
from test_ui_accessibility import MEASURE, breaches
from uikit import PAYMENT_CODE, PHONE, Citizen, KioskScreen, session_tx

from agent.sessions.sessionio import mask_id
from hal.sim.idcard import sample_card

ELDER_TEXT_PX, ELDER_HEADING_PX, ELDER_TARGET_PX = 24, 40, 60


def elder_breaches(screen: KioskScreen, where: str) -> list[str]:
    """The elder rules broken by what is on the screen now (``where`` names it in the report)."""
    found: dict[str, Any] = screen.page.evaluate(MEASURE)
    return [f"{where}: {problem}" for problem in breaches(found, elder=True)]


def test_measures_are_real(kiosk_screen: KioskScreen) -> None:
    """The home screen in normal mode is smaller than the elder rules: the measure can tell the modes apart."""
    Citizen(kiosk_screen).at_home()
    assert elder_breaches(kiosk_screen, "home, normal mode"), "normal mode already meets the elder rules?"


def test_elder_mode_through_a_journey(screen_factory: Callable[..., KioskScreen]) -> None:
    screen = screen_factory(extra=WALK_AWAY_SERVICES)       # one pension service, short confirm step
    citizen = Citizen(screen)
    page = screen.page
    citizen.at_home()
    citizen.tap("elder")
    expect(page.locator("[data-action=elder]")).to_have_attribute("aria-pressed", "true")
    problems = elder_breaches(screen, "home")
    heading = page.get_by_role("heading", name=citizen.text("home"))
    assert float(heading.evaluate("h => parseFloat(getComputedStyle(h).fontSize)")) >= ELDER_HEADING_PX
    box = citizen.tile("pension_record_print").bounding_box()
    assert box and box["width"] >= ELDER_TARGET_PX and box["height"] >= ELDER_TARGET_PX

    # A session that completes.
    citizen.choose("pension_record_print")
    citizen.sees("place_card")
    problems += elder_breaches(screen, "read_id")
    screen.place_card()
    citizen.checks_details()
    problems += elder_breaches(screen, "confirm")
    citizen.confirms()
    citizen.done()
    problems += elder_breaches(screen, "end")
    citizen.goes_home()
    # The next citizen gets normal text again.
    expect(page.locator("[data-action=elder]")).to_have_attribute("aria-pressed", "false")

    # Walk away in elder mode: the countdown and "more time" are large too, and so is the end screen.
    citizen.tap("elder")
    citizen.choose("pension_record_print")
    screen.place_card()
    citizen.checks_details()
    citizen.sees(re.compile(r"剩余 \d+ 秒"))
    more = screen.button(citizen.text("more_time"))
    more_box = more.bounding_box()
    assert more_box and more_box["width"] >= ELDER_TARGET_PX and more_box["height"] >= ELDER_TARGET_PX
    citizen.sees("timeout", 60_000)
    citizen.sees("erased")
    problems += elder_breaches(screen, "walked away")
    citizen.goes_home()

    # The door opened mid-session, in elder mode.
    citizen.tap("elder")
    citizen.choose("pension_record_print")
    screen.place_card()
    citizen.checks_details()
    screen.sim("door", "open")
    citizen.sees("door", 40_000)
    problems += elder_breaches(screen, "door opened")
    screen.sim("door", "close")
    assert not problems, "\n".join(problems)


def test_english_journey(kiosk_screen: KioskScreen) -> None:
    """Chosen at home: the screens, the receipt and the record are in English; the next citizen gets Chinese."""
    citizen = Citizen(kiosk_screen)
    citizen.at_home()
    citizen.switch_language()
    expect(kiosk_screen.page.locator("html")).to_have_attribute("lang", "en")
    citizen.choose("driving_licence_renewal")
    citizen.place_card()
    citizen.accepts_photo()
    citizen.card_address(PHONE)
    citizen.checks_details()
    citizen.sees("Resident ID card")
    citizen.confirms()
    citizen.pays(PAYMENT_CODE)
    citizen.sees("printed", 40_000)
    shown = citizen.done(waybill=True)
    citizen.sees("take_card")
    assert not re.search(r"[\u4e00-\u9fff]", kiosk_screen.page.locator("main").inner_text()), \
        "Chinese text on the English end screen"

    printed = kiosk_screen.printed()
    receipt_at = max(i for i, line in enumerate(printed) if line.strip() == "Driving licence renewal")
    receipt = "\n".join(printed[receipt_at:])
    assert f"Receipt: {shown['receipt']}" in receipt and f"EMS waybill: {shown['waybill']}" in receipt
    assert f"ID: {mask_id(sample_card('resident').id_number)}" in receipt and "WeChat Pay" in receipt
    record = session_tx(kiosk_screen, "driving_licence_renewal")
    assert record.get("language") == "en" and record["waybill"] == shown["waybill"]

    citizen.tap("home_button")
    Citizen(kiosk_screen, "zh").at_home()               # the next citizen starts in Chinese
    kiosk_screen.assert_no_leaks()
    kiosk_screen.assert_contract()
