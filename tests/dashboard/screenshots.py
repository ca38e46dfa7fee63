# SPDX-License-Identifier: Apache-2.0
"""``make screenshots-dashboard``: a PNG of every dashboard page, in Chinese and English, office and wide screens.

    python tests/dashboard/screenshots.py [OUT_DIR] [--scale 0.5]    # default build/screenshots/dashboard

The whole back office runs for real, as in tests/dashboard/test_dashboard_ui.py:
a private PostgreSQL, Mosquitto, ``kiosk-ledger serve`` (ingest and history),
``kiosk-ledger dashboard``, two agents on simulated hardware (one serving
simulated citizens), and a light simulated fleet (tests/dashboard/fleetsim.py:
the agent's own payloads on their own connections, signed transaction
records) so the fleet page has sites, alarms, a kiosk in maintenance, paper
running low, a few kiosks gone offline and two registered but never seen. The images are for people (the
README, reviews), never expectations a test compares with.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests", ROOT / "tests" / "dashboard"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from dashkit import PgCluster  # noqa: E402
from dashui import (  # noqa: E402
    OFFICE,
    WIDE,
    DashboardStack,
    KioskSpec,
    Manager,
    launch_browser,
)
from fleetsim import FleetSim, make_fleet  # noqa: E402
from kiosktest import wait_until  # noqa: E402

from fleet.ledger.db import connect, register_kiosk  # noqa: E402

REAL, BUSY = "k-real-1", "k-real-2"
SCREENS = {"office": OFFICE, "wide": WIDE}


class Camera:
    """Saves a page in each language, numbered in the order taken."""

    def __init__(self, out: Path) -> None:
        self.out, self.count = out, 0
        self.saved: list[Path] = []

    def shoot(self, manager: Manager, name: str, *, full_page: bool = False) -> None:
        self.count += 1
        start = manager.lang
        for lang in (start, "en" if start == "zh" else "zh"):
            if manager.lang != lang:
                manager.switch_language()
                manager.page.wait_for_timeout(300)      # the plots redraw
            target = self.out / f"{self.count:02d}-{name}-{lang}.png"
            manager.page.screenshot(path=str(target), full_page=full_page, animations="disabled", caret="hide")
            self.saved.append(target)
        if manager.lang != start:
            manager.switch_language()


def light_fleet(stack: DashboardStack, count: int, *, prefix: str, seed: int) -> list[Any]:
    kiosks = make_fleet(count, "north", seed=seed, with_keys=True, prefix=prefix)
    with connect(stack.dsn) as conn:
        for kiosk in kiosks:
            register_kiosk(conn, kiosk.kiosk, kiosk.fleet, kiosk.ledger.public_key, source="screenshots")
    return kiosks


def populate(stack: DashboardStack) -> list[FleetSim]:
    """A fleet with something to see: alarms, maintenance, paper, transactions, kiosks gone offline."""
    assert stack.broker is not None
    rng = random.Random(17)
    kiosks = light_fleet(stack, 44, prefix="k", seed=17)
    gone = light_fleet(stack, 4, prefix="g", seed=18)
    sims = [FleetSim(stack.broker.port, kiosks, health_interval_s=5).start(),
            FleetSim(stack.broker.port, gone, health_interval_s=5).start()]
    main = sims[0]
    for kiosk in kiosks:
        main.transactions(kiosk.kiosk, rng.randrange(2, 12))
    main.alarm("k0003", "door_open", detail="cabinet door opened")
    main.alarm("k0011", "paper_low")
    main.alarm("k0020", "paper_out")
    main.alarm("k0027", "printer_offline")
    main.alarm("k0035", "temp_high", detail="62 °C")
    main.mode("k0040", "maintenance")
    main.command("k0003", "selftest", result={"passed": True, "devices": []})
    sims[1].kill(0)                                     # their connections drop: the broker sends the Wills
    # Two kiosks registered at commissioning and never switched on yet: "never seen".
    with connect(stack.dsn) as conn:
        for kiosk in make_fleet(2, "north", seed=19, with_keys=True, prefix="n"):
            register_kiosk(conn, kiosk.kiosk, kiosk.fleet, kiosk.ledger.public_key, source="screenshots")
    return sims


def shoot_all(stack: DashboardStack, browser: Any, out: Path, scale: float) -> list[Path]:
    camera = Camera(out)
    for screen, viewport in SCREENS.items():
        admin = Manager(browser, stack, None, viewport=viewport, scale=scale)
        if screen == "office":
            admin.page.goto(f"{stack.url}/login")
            admin.ready("login")
            camera.shoot(admin, "login")
        admin.login("adm-zhao")
        admin.page.wait_for_timeout(500)
        camera.shoot(admin, f"fleet-{screen}")
        if screen == "office":
            admin.page.locator("[data-site]").first.click()
            camera.shoot(admin, "fleet-one-site")
        admin.open(f"/kiosks/{BUSY}", "kiosk")
        admin.page.wait_for_selector("#plots[data-ready]", state="attached")
        camera.shoot(admin, f"kiosk-{screen}", full_page=True)
        admin.open("/alarms", "alarms")
        if screen == "office":
            row = admin.page.locator("#alarm-rows tr[data-kiosk='k0011']")
            row.get_by_role("button").click()
            row.locator("textarea").fill("已通知网点补纸 / outlet asked to refill")
            camera.shoot(admin, "alarms-acknowledging")
            row.get_by_role("button", name=admin.text("btn.ackSave")).click()
            admin.page.wait_for_timeout(300)
        camera.shoot(admin, f"alarms-{screen}")
        admin.open("/reports?by=service", "reports")
        admin.page.wait_for_selector("#report-table")
        camera.shoot(admin, f"reports-{screen}")
        if screen == "office":
            admin.open("/audit", "audit")
            camera.shoot(admin, "audit")
        admin.close()
    return camera.saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "build" / "screenshots" / "dashboard"))
    parser.add_argument("--scale", type=float, default=1.0, help="device scale factor (0.5: half-size PNGs)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="dash-shots-") as tmp, PgCluster() as pg:
        stack = DashboardStack(Path(tmp), pg, kiosks=[KioskSpec(REAL, "beijing-001"),
                                                      KioskSpec(BUSY, "beijing-002", sessions_per_minute=30)])
        sims: list[FleetSim] = []
        try:
            stack.start()
            sims = populate(stack)
            # A few health reports and a citizen or two on the busy kiosk before the pictures.
            wait_until(lambda: stack.rows("SELECT count(*) FROM health_history WHERE kiosk = %s", (BUSY,))[0][0]
                       >= 6, 90, message="health reports")
            wait_until(lambda: stack.rows("SELECT count(*) FROM tx WHERE kiosk = %s AND kind = 'session'",
                                          (BUSY,))[0][0] >= 2, 90, message="citizens served")
            # The cabinet opened for a few seconds: an episode in the kiosk's alarm history.
            stack.kiosk(BUSY).sim("door", "open")
            time.sleep(3)
            stack.kiosk(BUSY).sim("door", "close")
            wait_until(lambda: stack.rows("SELECT 1 FROM alarm_history WHERE kiosk = %s AND cleared_at IS NOT NULL",
                                          (BUSY,)), 30, message="the door's episode closed")
            # Ten seconds offline (kill -9, then back): the kiosk page shades it on the plots.
            stack.kiosk(BUSY).kill()
            stack.wait_status(BUSY, online=False)
            time.sleep(10)
            stack.kiosk(BUSY).start()
            stack.wait_status(BUSY, online=True)
            wait_until(lambda: stack.rows("SELECT count(*) FROM health_history WHERE kiosk = %s", (BUSY,))[0][0]
                       >= 9, 60, message="health after the restart")
            time.sleep(1)
            with sync_playwright() as playwright:
                browser = launch_browser(playwright)
                saved = shoot_all(stack, browser, out, args.scale)
                browser.close()
        finally:
            for sim in sims:
                sim.stop()
            stack.stop()
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
