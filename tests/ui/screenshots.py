# SPDX-License-Identifier: Apache-2.0
"""``make screenshots``: a PNG of every kiosk screen, in Chinese and English, normal and elder mode.

    python tests/ui/screenshots.py [OUT_DIR] [--scale 0.5]     # default build/screenshots, full size

Walks real journeys (the agent on simulated hardware, a private Mosquitto,
Debian's chromium) and at each screen switches language and text size the way
a citizen would, saving ``NN-<screen>-<zh|en>-<normal|elder>.png``. The images
are for people (the README, reviews), never expectations a test compares with.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "ui"):
    sys.path.insert(0, str(path))

from uikit import (  # noqa: E402
    PHONE,
    Citizen,
    KioskScreen,
    Operator,
    launch_browser,
    one_pension_service,
    running_screen,
)

from agent.sim.devbroker import free_port  # noqa: E402

SHORT_STEPS = one_pension_service(confirm_s=3, other_s=60)
VARIANTS = (("zh", False), ("zh", True), ("en", False), ("en", True))


class Camera:
    """Saves the current screen in the four variants, numbered in the order taken."""

    def __init__(self, out: Path) -> None:
        self.out, self.count = out, 0
        self.saved: list[Path] = []

    def shoot(self, screen: KioskScreen, name: str) -> None:
        page = screen.page
        self.count += 1
        for lang, elder in VARIANTS:
            toggle = page.locator("[data-action=elder]")
            if (toggle.get_attribute("aria-pressed") == "true") != elder:
                toggle.click()
            if not page.locator(f"html[lang^={lang}]").count():
                page.locator("[data-action=language]").click()
            page.wait_for_selector(f"html{'.elder' if elder else ':not(.elder)'}[lang^={lang}]", state="attached")
            target = self.out / f"{self.count:02d}-{name}-{lang}-{'elder' if elder else 'normal'}.png"
            page.screenshot(path=str(target), full_page=True, animations="disabled", caret="hide")
            self.saved.append(target)
        # Back to Chinese, normal text: the journeys below read Chinese.
        if page.locator("html[lang^=en]").count():
            page.locator("[data-action=language]").click()
        if page.locator("[data-action=elder]").get_attribute("aria-pressed") == "true":
            page.locator("[data-action=elder]").click()


def wait_screen(screen: KioskScreen, selector: str, timeout: float = 20_000) -> None:
    screen.page.wait_for_selector(selector, state="visible", timeout=timeout)


def main_journeys(screen: KioskScreen, camera: Camera) -> None:
    citizen, page = Citizen(screen), screen.page
    citizen.at_home()
    camera.shoot(screen, "home")
    screen.sim("printer", "paper_out")
    wait_screen(screen, "[data-service=pension_record_print][disabled]")
    camera.shoot(screen, "home-printer-out-of-paper")
    screen.sim("printer", "refill")
    wait_screen(screen, "[data-service=pension_record_print]:not([disabled])")

    citizen.choose("driving_licence_renewal")
    wait_screen(screen, "[data-step=read_id]")
    camera.shoot(screen, "read-id")
    screen.place_card()
    wait_screen(screen, "[data-step=capture_photo] img.photo")
    camera.shoot(screen, "photo-preview")
    citizen.tap("use_photo")
    wait_screen(screen, "[data-step=capture_address] .keypad")
    citizen.keypad(PHONE)
    camera.shoot(screen, "address-card-or-other")
    citizen.tap("other_address")
    page.locator("#field-address").click()
    for letter in "bei":
        page.locator(f"[data-keyboard] [data-skbtn='{letter}']").click()
    wait_screen(screen, ".hg-candidate-box-list-item")
    camera.shoot(screen, "address-keyboard-pinyin")
    page.get_by_role("button", name="返回", exact=True).click()     # back: use the card's address after all
    citizen.tap("use_card_address")
    wait_screen(screen, "[data-step=confirm]")
    camera.shoot(screen, "confirm")
    citizen.confirms()
    wait_screen(screen, "[data-step=scan_payment]")
    camera.shoot(screen, "scan-payment")
    screen.scan("6901234567892")
    wait_screen(screen, "[data-step=scan_payment] .notice")
    camera.shoot(screen, "scan-payment-not-a-payment-code")
    screen.scan()
    wait_screen(screen, "[data-screen=end]", 30_000)
    camera.shoot(screen, "done-mailed")
    citizen.goes_home()

    citizen.choose("residence_permit_application")
    screen.place_card()
    wait_screen(screen, "[data-step=capture_photo] .consent")
    citizen.tap("consent_no")
    camera.shoot(screen, "photo-consent")
    citizen.tap("cancel")
    wait_screen(screen, "[data-screen=ended]")
    camera.shoot(screen, "cancelled")
    citizen.goes_home()

    citizen.choose("pension_record_print")
    screen.place_card()
    wait_screen(screen, "[data-step=confirm]")
    screen.sim("door", "open")
    wait_screen(screen, "[data-screen=ended]")
    camera.shoot(screen, "door-opened")
    screen.sim("door", "close")
    citizen.goes_home()

    citizen.choose("pension_record_print")
    wait_screen(screen, "[data-step=read_id]")
    screen.sim("idcard", "place", "resident", "bad")
    wait_screen(screen, "[data-step=read_id] .notice")
    camera.shoot(screen, "read-id-card-refused")
    screen.sim("idcard", "remove")
    screen.place_card()
    wait_screen(screen, "[data-step=confirm]")
    citizen.confirms()
    wait_screen(screen, "[data-screen=end]", 30_000)
    camera.shoot(screen, "done-receipt-printed")
    citizen.goes_home()

    screen.page.locator("[data-action=dev]").click()
    wait_screen(screen, "#dev-panel")
    camera.shoot(screen, "developer-panel")
    screen.page.locator("[data-action=dev]").click()


def walk_away(screen: KioskScreen, camera: Camera) -> None:
    citizen = Citizen(screen)
    citizen.choose("pension_record_print")
    screen.place_card()
    wait_screen(screen, "[data-step=confirm] [data-countdown]")
    screen.page.get_by_text(re.compile(r"剩余 [12] 秒")).wait_for(timeout=10_000)
    camera.shoot(screen, "countdown")
    wait_screen(screen, "[data-screen=ended]", 30_000)
    camera.shoot(screen, "walked-away-data-erased")


def offline_and_gone(screen: KioskScreen, camera: Camera) -> None:
    Citizen(screen).sees("offline_banner", 30_000)
    camera.shoot(screen, "home-offline")
    screen.agent.kill()                              # the agent is gone: the screen waits for it
    wait_screen(screen, "[data-screen=please_wait]", 30_000)
    camera.shoot(screen, "please-wait-agent-gone")


def staff_modes(operator: Operator) -> Any:
    def run(screen: KioskScreen, camera: Camera) -> None:
        assert screen.broker is not None
        Citizen(screen).at_home()
        operator.set_mode(screen.broker, "maintenance")
        wait_screen(screen, "[data-screen=maintenance]")
        camera.shoot(screen, "maintenance")
        operator.set_mode(screen.broker, "out_of_service")
        wait_screen(screen, "[data-screen=out_of_service]")
        camera.shoot(screen, "out-of-service")
    return run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "build" / "screenshots")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="device pixels per CSS pixel (0.5: half-size images, for the README)")
    args = parser.parse_args(argv[1:])
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    camera = Camera(out)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        options: dict[str, Any] = {"viewport": {"width": 1080, "height": 1920}, "device_scale_factor": args.scale}
        try:
            for name, run, kwargs in _runs(Path(tmp)):
                with running_screen(Path(tmp) / name, browser, **options, **kwargs) as screen:
                    run(screen, camera)
        finally:
            browser.close()
    print(f"{len(camera.saved)} screenshots of {camera.count} screens in {out}")
    return 0


def _runs(tmp: Path) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    yield "journeys", main_journeys, {}
    operator = Operator(tmp / "operator")
    yield "modes", staff_modes(operator), {"extra": operator.trust}
    yield "walk-away", walk_away, {"extra": SHORT_STEPS}
    yield "offline", offline_and_gone, {"broker_url": f"mqtt://127.0.0.1:{free_port()}"}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
