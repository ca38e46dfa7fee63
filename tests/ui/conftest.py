# SPDX-License-Identifier: Apache-2.0
"""Browser fixtures: one chromium per run, and a kiosk screen (real agent, real broker) per test.

    def test_something(kiosk_screen):              # the default catalogue, broker online
        kiosk_screen.click("Pension payment record print")

    def test_other(screen_factory):                # a config of its own
        screen = screen_factory(extra=SHORT_TIMEOUTS)

The page is opened at ``http://127.0.0.1:PORT/?token=...`` with the token the
agent wrote at start; see uikit.py for what a ``KioskScreen`` offers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from uikit import CHROMIUM, KioskScreen, card_secrets, find_secrets, launch_browser, start_screen

from agent.sim.devbroker import DevBroker
from hal.sim.idcard import SAMPLE_KINDS


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screen_factory(tmp_path: Path, broker: DevBroker, browser: Any) -> Iterator[Callable[..., KioskScreen]]:
    """Starts screens (agent + page) with ``start_screen``'s options; all closed after the test."""
    started: list[KioskScreen] = []

    def make(name: str = "kiosk", **kwargs: Any) -> KioskScreen:
        screen = start_screen(tmp_path / name, broker, browser, **kwargs)
        started.append(screen)
        return screen

    yield make
    errors = []
    secrets = [secret for kind in SAMPLE_KINDS for secret in card_secrets(kind)]
    for screen in started:
        screen.close()
        errors += screen.agent_errors()
        # Citizen data never reaches a log either, whatever card the test used.
        errors += [f"agent log: {hit}" for hit in find_secrets(screen.agent.log, secrets)]
    if errors:
        # The daemon keeps serving whatever the screen did: an error in its log fails the test.
        pytest.fail("the agent logged errors (or citizen data) during the test:\n" + "\n".join(errors[:20]))


@pytest.fixture
def kiosk_screen(screen_factory: Callable[..., KioskScreen]) -> KioskScreen:
    """The default simulation config (shipped catalogue), local API on, page open."""
    return screen_factory()
