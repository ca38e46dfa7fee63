# SPDX-License-Identifier: Apache-2.0
"""Journeys when something is wrong: no paper, the door opened, the citizen gone, the broker gone.

Each is what the citizen reads on the screen and what the fleet gets at the
broker; the agent's config is the shipped simulation config, with short step
timeouts for the walk-away (a service of its own, so it takes seconds).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosktest import Subscriber, wait_until
from playwright.sync_api import expect
from uikit import (
    PAYMENT_CODE,
    Citizen,
    KioskScreen,
    Operator,
    PageRecorder,
    one_pension_service,
    pension_journey,
    session_tx,
)

from agent.sim.devbroker import DevBroker, free_port

WALK_AWAY_SERVICES = one_pension_service(confirm_s=8, other_s=30)


def test_printer_out_of_paper(kiosk_screen: KioskScreen) -> None:
    """The receipt-purpose service is greyed with its reason; a secondary-receipt one completes without it."""
    citizen = Citizen(kiosk_screen)
    citizen.at_home()
    pension = citizen.tile("pension_record_print")
    expect(pension).to_be_enabled()
    kiosk_screen.sim("printer", "paper_out")
    expect(pension).to_be_disabled(timeout=40_000)
    expect(pension).to_contain_text(citizen.text("unavailable") + citizen.text("paper_out"))
    for other in ("utility_bill_payment", "driving_licence_renewal", "residence_permit_application"):
        expect(citizen.tile(other)).to_be_enabled()

    citizen.choose("utility_bill_payment")
    citizen.confirms()
    citizen.pays(PAYMENT_CODE)
    citizen.sees("done", 30_000)
    # The engine skips a printer it knows is out of paper; either way the screen says no receipt came out
    # and that the service is done.
    citizen.sees(re.compile("(凭条未能打印|未打印凭条)，您的业务已办结并记录在案"))
    record = session_tx(kiosk_screen, "utility_bill_payment")
    assert record["outcome"] == "completed"
    follow_up = kiosk_screen.wait_tx(lambda d: d["data"].get("type") == "receipt"
                                     and d["data"].get("receipt") == record["receipt"])["data"]
    assert follow_up["status"] in ("failed", "skipped"), follow_up
    citizen.goes_home()

    kiosk_screen.sim("printer", "refill")
    expect(pension).to_be_enabled(timeout=40_000)
    expect(pension).not_to_contain_text(citizen.text("paper_out"))


def test_door_opened_mid_session(kiosk_screen: KioskScreen) -> None:
    """The screen says the cabinet was opened and the data erased; the session failed; home when it closes."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("pension_record_print")
    citizen.place_card()
    citizen.checks_details()
    kiosk_screen.sim("door", "open")
    citizen.sees("paused", 40_000)
    citizen.sees("door")
    citizen.sees("erased")
    citizen.sees("take_card")
    record = session_tx(kiosk_screen, "pension_record_print")
    assert record["outcome"] == "failed" and record["reason"] == "door_open"
    assert not kiosk_screen.printed() or record["receipt"] is None
    kiosk_screen.sim("door", "close")
    citizen.goes_home()
    expect(citizen.tile("pension_record_print")).to_be_enabled(timeout=40_000)
    kiosk_screen.assert_contract()


def test_citizen_walks_away(screen_factory: Callable[..., KioskScreen]) -> None:
    """A visible countdown and "more time"; then "session ended, your data was erased" and home by itself."""
    screen = screen_factory(extra=WALK_AWAY_SERVICES)
    citizen = Citizen(screen)
    citizen.choose("pension_record_print")
    citizen.place_card()
    citizen.checks_details()
    countdown = screen.page.locator("[data-step=confirm] [data-countdown]")
    expect(countdown).to_have_text(re.compile(r"剩余 \d+ 秒"))
    def seconds() -> int:
        return int(re.sub(r"\D", "", countdown.inner_text()) or 0)

    before = seconds()
    citizen.tap("more_time")
    # The agent answered with a deadline one step timeout later: the countdown went up, not down.
    wait_until(lambda: seconds() > before, 20, message=f"the countdown to rise above {before} s")
    # ... and then nobody touches the screen.
    citizen.sees("timeout", 60_000)
    citizen.sees("长时间没有操作，本次办理已结束。")
    citizen.sees("erased")
    expect(screen.page.locator("[data-screen=ended] [data-countdown]")).to_have_text(re.compile(r"\d+ 秒后返回首页"))
    citizen.at_home(60_000)                          # by itself: nothing was tapped
    record = session_tx(screen, "pension_record_print")
    assert record["outcome"] == "abandoned" and record["reason"] == "timeout:confirm"
    assert not any("业务编号" in line for line in screen.printed())
    screen.assert_no_leaks()
    screen.assert_contract()


def test_broker_offline(screen_factory: Callable[..., KioskScreen], tmp_path: Path) -> None:
    """Online-only services greyed with the reason; an offline service completes, and its tx arrives later."""
    port = free_port()                              # nothing listens here yet: the kiosk is offline
    screen = screen_factory(broker_url=f"mqtt://127.0.0.1:{port}")
    citizen = Citizen(screen)
    citizen.at_home()
    citizen.sees("offline_banner")
    for online_only in ("driving_licence_renewal", "utility_bill_payment", "residence_permit_application"):
        tile = citizen.tile(online_only)
        expect(tile).to_be_disabled()
        expect(tile).to_contain_text(citizen.text("unavailable") + citizen.text("offline"))

    citizen.choose("pension_record_print")
    citizen.place_card()
    citizen.checks_details()
    citizen.confirms()
    citizen.sees("printed", 40_000)
    shown = citizen.done()
    assert any(shown["receipt"] in line for line in screen.printed())
    citizen.goes_home()

    # The broker comes back: nothing was lost, the record reaches it, the services come back.
    with DevBroker(tmp_path / "late-broker", port=port) as broker:
        late = Subscriber(broker.url, "kiosk/#")
        try:
            record = late.wait_for("/tx", lambda d: d["data"].get("type") == "session"
                                   and d["data"].get("receipt") == shown["receipt"], timeout=60).data
            assert record["data"]["outcome"] == "completed" and record["data"]["service"] == "pension_record_print"
            expect(citizen.tile("driving_licence_renewal")).to_be_enabled(timeout=60_000)
            expect(screen.page.get_by_text(citizen.text("offline_banner"))).to_have_count(0)
        finally:
            late.close()


def test_a_card_that_does_not_check_out(kiosk_screen: KioskScreen) -> None:
    """A card with a wrong check character is refused in words; the citizen's own card then goes through."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("pension_record_print")
    citizen.sees("place_card")
    kiosk_screen.sim("idcard", "place", "resident", "bad")
    citizen.sees("证件号码校验失败，请使用本人有效证件")
    citizen.sees("place_card")                      # still waiting for a card
    kiosk_screen.sim("idcard", "remove")
    kiosk_screen.place_card("resident")
    citizen.checks_details()
    citizen.tap("cancel")
    citizen.sees("已取消办理")
    citizen.sees("erased")
    record = session_tx(kiosk_screen, "pension_record_print")
    assert record["outcome"] == "abandoned" and record["reason"] == "cancelled"


def second_screen(screen: KioskScreen) -> tuple[Any, PageRecorder]:
    """Another page on the same kiosk (its own connection), recorded like the first."""
    page = screen.context.new_page()
    recorder = PageRecorder()
    recorder.attach(page)
    page.goto(screen.url)
    return page, recorder


def test_a_second_screen_only_watches(kiosk_screen: KioskScreen) -> None:
    """While one screen drives the kiosk, another cannot start a session; it says why and goes home."""
    Citizen(kiosk_screen).at_home()                  # the first screen is connected: it drives
    page, _recorder = second_screen(kiosk_screen)
    page.get_by_role("button", name="养老金发放记录打印").click()
    expect(page.get_by_role("heading", name="另一个屏幕正在使用本机")).to_be_visible(timeout=30_000)
    expect(page.locator("main").get_by_text("本屏幕只能查看状态，不能办理业务。")).to_be_visible()
    # The driving screen is unaffected: its citizen completes a session.
    record = pension_journey(kiosk_screen)
    assert record["outcome"] == "completed"
    page.close()


def test_the_driving_screen_lost_mid_session(kiosk_screen: KioskScreen) -> None:
    """The browser of a session goes away: the session fails as screen_lost, data wiped; the next screen drives."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("pension_record_print")
    citizen.place_card()
    citizen.checks_details()
    kiosk_screen.page.close()
    record = session_tx(kiosk_screen, "pension_record_print")
    assert record["outcome"] == "failed" and record["reason"] == "screen_lost"

    page, recorder = second_screen(kiosk_screen)     # the kiosk browser restarted
    kiosk_screen.page, kiosk_screen.recorder = page, recorder
    tx = pension_journey(kiosk_screen)
    assert tx["outcome"] == "completed"
    kiosk_screen.assert_no_leaks()


def test_maintenance(screen_factory: Callable[..., KioskScreen], broker: DevBroker, tmp_path: Path) -> None:
    """Staff put the kiosk in maintenance: the home says so; a session under way ends, data erased."""
    operator = Operator(tmp_path / "operator")
    screen = screen_factory(extra=operator.trust)
    citizen = Citizen(screen)
    citizen.at_home()
    operator.set_mode(broker, "maintenance")
    expect(screen.page.get_by_role("heading", name="设备维护中")).to_be_visible(timeout=40_000)
    citizen.sees("工作人员正在维护本机，请稍后再来或使用其他自助机。")
    expect(citizen.tile("pension_record_print")).to_have_count(0)
    operator.set_mode(broker, "out_of_service")
    expect(screen.page.get_by_role("heading", name="暂停服务")).to_be_visible(timeout=40_000)
    operator.set_mode(broker, "in_service")
    citizen.at_home()

    citizen.choose("pension_record_print")
    citizen.place_card()
    citizen.checks_details()
    operator.set_mode(broker, "maintenance")
    citizen.sees("暂时无法办理", 40_000)
    citizen.sees("设备维护中")
    citizen.sees("erased")
    record = session_tx(screen, "pension_record_print")
    assert record["outcome"] == "failed" and record["reason"] == "maintenance"
    screen.assert_no_leaks()
    screen.assert_contract()


def test_more_time_is_limited_and_the_card_reminder_shows_at_home(screen_factory: Callable[..., KioskScreen]) -> None:
    """"More time" works as often as the agent allows (sessions.more_time_limit, 2), then is gone;
    a card left on the reader after the session is pointed out on the home screen."""
    screen = screen_factory(extra=WALK_AWAY_SERVICES)
    citizen = Citizen(screen)
    citizen.choose("pension_record_print")
    citizen.sees("place_card")
    countdown = screen.page.locator("[data-step=read_id] [data-countdown]")
    expect(countdown).to_have_text(re.compile(r"剩余 \d+ 秒"))

    def seconds() -> int:
        return int(re.sub(r"\D", "", countdown.inner_text()) or 0)

    def rose_above(before: int) -> Callable[[], bool]:
        return lambda: seconds() > before

    for _ in range(2):
        before = seconds()
        citizen.tap("more_time")
        wait_until(rose_above(before), 20, message=f"the countdown to rise above {before} s")
    expect(screen.button(citizen.text("more_time"))).to_have_count(0)
    assert seconds() > 60                               # 30 s + twice 30 s more, minus what went by

    screen.place_card()
    citizen.checks_details()                            # read: the card was in the session
    citizen.tap("cancel")
    citizen.sees("erased")
    citizen.goes_home()
    # The card is still on the reader: the home screen says so (role alert, not colour alone).
    expect(screen.page.get_by_role("alert").filter(has_text=citizen.text("take_card"))).to_be_visible(timeout=40_000)


def test_the_agent_killed_and_restarted(kiosk_screen: KioskScreen) -> None:
    """kill -9 of the agent: the open page says the service restarted (its token is stale); the kiosk
    browser opened again at the new address serves the next citizen."""
    citizen = Citizen(kiosk_screen)
    citizen.at_home()
    agent = kiosk_screen.agent
    assert agent.proc is not None
    os.killpg(agent.proc.pid, signal.SIGKILL)            # the agent and its firmware runner, as a crash
    agent.proc.wait(10)
    expect(kiosk_screen.page.locator("[data-screen=please_wait]")).to_be_visible(timeout=40_000)
    token_file = agent.state_dir / "ui-token"
    old_token = kiosk_screen.token
    agent.start()

    def new_token() -> bool:
        try:        # the agent removes the old token at start, then writes the new one: either may be seen
            return token_file.read_text().strip() not in ("", old_token)
        except FileNotFoundError:
            return False

    wait_until(new_token, 90, message="the restarted agent's new token")
    citizen.sees("自助机服务已重启，本页面的访问令牌已失效。请稍候，或用新的地址重新打开本页面。", 60_000)

    kiosk_screen.token = token_file.read_text().strip()   # what the kiosk browser unit does on a new token
    kiosk_screen.open()
    record = pension_journey(kiosk_screen)
    assert record["outcome"] == "completed"
    kiosk_screen.assert_no_leaks()


def test_card_reader_fault_mid_session(kiosk_screen: KioskScreen) -> None:
    """The reader's SAM fails during read_id: the screen says a device failed and the session stopped."""
    citizen = Citizen(kiosk_screen)
    citizen.choose("pension_record_print")
    citizen.sees("place_card")
    kiosk_screen.sim("idcard", "sam_fault")
    kiosk_screen.place_card()
    citizen.sees("设备故障", 60_000)
    citizen.sees("设备出现故障，本次办理已终止。请使用其他自助机或前往服务窗口。")
    record = session_tx(kiosk_screen, "pension_record_print")
    assert record["outcome"] == "failed" and str(record["reason"]).startswith("idcard"), record
    kiosk_screen.sim("idcard", "sam_fault", "off")
    citizen.goes_home()
    kiosk_screen.assert_contract()
