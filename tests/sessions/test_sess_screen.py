# SPDX-License-Identifier: Apache-2.0
"""What the citizen's screen gets from the session engine, inside a real agent.

GIVEN the agent as ``kiosk-agent run`` builds it (simulators on ptys, a real
broker), WHEN a screen drives sessions through the engine's API -- the photo
preview with retakes, "more time", the language, "use the address on my ID
card", the screen going away -- THEN the events carry what the screen shows
(masked name and number, receipt number, waybill, countdowns) and never the
citizen's data in clear, the photo preview is zeroed once used, the record
and the receipt follow the language, and availability changes are announced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from kiosktest import Subscriber, wait_until_async
from sesskit import QUICK_SERVICES, BackOffice, find_pii, running_agent, session_config, wait_event

from agent.config import load_config
from agent.sessions.engine import (
    InvalidAddress,
    InvalidPhone,
    InvalidPostcode,
    NoCardAddress,
    NoDevice,
    NoMoreTime,
    NoRetakesLeft,
    NotInService,
    OfflineNotAllowed,
    PrinterUnavailable,
    UnsupportedLanguage,
    WrongStep,
)
from agent.sessions.evidence import parse_content
from agent.sessions.sessionio import mask_name
from agent.sim.devbroker import DevBroker
from agent.wire.sealing import Bundle, open_bundle
from hal.protocols.escpos import render_receipt
from hal.sim.idcard import sample_card, synthetic_number

SCREEN = '''
[sessions]
more_time_limit = 1
photo_retakes = 1

[[services]]
id = "short_confirm"
name_zh = "短确认"
name_en = "Short confirm"
offline = true
steps = [{ kind = "confirm", timeout_s = 3 }]

[[services]]
id = "record_print"
name_zh = "记录打印"
name_en = "Record print"
offline = false
receipt = "purpose"
steps = [{ kind = "read_id", timeout_s = 20 }, { kind = "confirm", timeout_s = 20 },
         { kind = "print_receipt", timeout_s = 20 }]
'''

NAME, ADDRESS = "金丝雀明", "模拟省金丝雀市测试路99号"
NUMBER = synthetic_number("99000019870605124")
CJK = re.compile(r"[\u2e80-\u9fff\uff00-\uffef]")


def canary(kind: str = "resident") -> Any:
    return dataclasses.replace(sample_card(kind), name=NAME, id_number=NUMBER, address=ADDRESS)


def tx_data(sub: Subscriber, session_id: str) -> dict[str, Any]:
    msg = sub.wait_for("/tx", lambda d: d["data"].get("type") == "session" and d["data"].get("session") == session_id,
                       timeout=15)
    return msg.data  # type: ignore[no-any-return]


def unseal(bo: BackOffice, sub: Subscriber, tx_id: str) -> dict[str, Any]:
    msg = sub.wait_for("/evidence", lambda d: d["tx"] == tx_id, timeout=15)
    return parse_content(open_bundle(bo.key, Bundle.from_dict(msg.data["bundle"]), tx_id))


class Screen:
    """A listener as a screen would be: it sees each event when sent (and copies the preview then)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.previews: list[bytearray] = []       # the engine's own buffers, to check they are zeroed
        self.shown: list[bytes] = []              # what the screen copied while showing it

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "photo_preview":
            self.previews.append(event["jpeg"])
            self.shown.append(bytes(event["jpeg"]))
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def next(self, kind: str, **match: Any) -> dict[str, Any]:
        return await wait_event(self.queue, kind, **match)

    async def services_until(self, check: Any) -> dict[str, Any]:
        """The first ``services_changed`` whose services (by id) pass ``check`` (earlier ones are steps on the way)."""
        while True:
            event = await self.next("services_changed")
            if check({s["id"]: s for s in event["services"]}):
                return event


@pytest.fixture
def rig(tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> tuple[Any, BackOffice, Subscriber]:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES + SCREEN))
    return cfg, bo, subscriber


def test_photo_preview_retake_card_address_and_pii_free_events(rig: Any) -> None:
    cfg, bo, sub = rig

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            screen = Screen()
            engine.add_listener(screen)
            reader = agent.peripherals.simulators["idcard"]
            camera = agent.peripherals.devices["camera"].camera
            jpeg = camera.capture_still().jpeg

            session = (await engine.begin("photo_consent"))["session"]
            with pytest.raises(WrongStep):
                await engine.accept_photo()                    # nothing to accept at read_id
            reader.place(canary())
            read = await screen.next("card_read")
            assert read["name_masked"] == "金**明" == mask_name(NAME)
            assert read["id_masked"] == NUMBER[:2] + "*" * 12 + NUMBER[-4:] and read["card_type"] == "resident"

            first = await screen.next("photo_preview")
            assert first["retakes_left"] == 1 and screen.shown[0] == jpeg
            captures = camera.captures
            await engine.retake_photo()
            again = await screen.next("step", step="capture_photo")     # the countdown starts again
            assert again["remaining_s"] > 15 and again["count"] == 5
            second = await screen.next("photo_preview")
            assert second["retakes_left"] == 0 and camera.captures == captures + 1
            assert not any(screen.previews[0]), "the first preview was zeroed when the photo was retaken"
            with pytest.raises(NoRetakesLeft):
                await engine.retake_photo()
            await engine.accept_photo()                      # no consent: the photo is erased at the end

            await screen.next("step", step="capture_address")
            for bad, error in (({"phone": "12345"}, InvalidPhone),
                               ({"phone": "13800000000", "recipient": "", "address": "x", "postcode": "100000"},
                                InvalidAddress),
                               ({"phone": "13800000000", "recipient": "某", "address": "x", "postcode": "1000"},
                                InvalidPostcode)):
                with pytest.raises(error) as caught:
                    await engine.provide_address(**bad)
                assert caught.value.code.startswith("agent.session.invalid_")
                assert "12345" not in str(caught.value)                  # never repeats what was typed
            assert engine.status()["step"] == "capture_address"          # the session goes on
            await engine.provide_address(use_card_address=True, phone="13800000000")
            await screen.next("step", step="confirm")
            await engine.confirm()
            printed = await screen.next("receipt_printed")
            ended = await screen.next("ended")
            assert printed["status"] == "printed" and ended["outcome"] == "completed"

            data = tx_data(sub, session)
            rec = data["data"]
            assert ended["tx"] == data["id"] and ended["receipt_number"] == rec["receipt"]
            assert ended["waybill"] == rec["waybill"] and re.fullmatch(r"EA\d{9}CN", ended["waybill"])
            assert rec["face"] == "erased" and rec["language"] == "zh"
            mailing = unseal(bo, sub, data["id"])["mailing"]
            assert mailing == {"recipient": NAME, "phone": "13800000000", "address": ADDRESS, "postcode": "",
                               "source": "id_card"}

            # The preview buffers the screen was given are zeros now; the JPEG is nowhere on disk.
            assert screen.previews and all(not any(buf) for buf in screen.previews)
            await agent.outbox.wait_drained(20)
            chunk = jpeg[len(jpeg) // 2:len(jpeg) // 2 + 64]
            for path in cfg.storage.dir.rglob("*"):
                if path.is_file():
                    assert chunk not in path.read_bytes(), f"the face photo is in {path}"

            # No event but the preview carries the citizen's data in clear; the receipt has the masked name.
            others = [e for e in screen.seen if e["event"] != "photo_preview"]
            assert not find_pii(json.dumps(others, ensure_ascii=False, default=str).encode("utf-8"),
                                [NAME, NUMBER, ADDRESS, "13800000000"])
            lines = agent.peripherals.simulators["printer"].receipt_lines()
            assert "姓名：金**明" in lines and not find_pii("\n".join(lines).encode(), [NAME, NUMBER])

            # A card without an address (a 2017 permanent residence card): the citizen must type one.
            reader.remove()
            await engine.begin("photo_consent")
            foreigner = sample_card("foreign_pr_2017")
            assert foreigner.address == "" and foreigner.name_en
            reader.place(foreigner)
            assert (await screen.next("card_read"))["name_masked"] == mask_name(foreigner.name or foreigner.name_en)
            await screen.next("photo_preview")
            await engine.accept_photo()
            await screen.next("step", step="capture_address")
            with pytest.raises(NoCardAddress):
                await engine.provide_address(use_card_address=True, phone="13800000000")
            await engine.cancel()
            assert (await screen.next("ended"))["outcome"] == "abandoned"

    asyncio.run(scenario())


def test_more_time_language_and_abort(rig: Any) -> None:
    cfg, _bo, sub = rig

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            screen = Screen()
            engine.add_listener(screen)
            printer = agent.peripherals.simulators["printer"]

            # More time: the walk-away comes one timeout later, and only once.
            session = (await engine.begin("short_confirm"))["session"]
            step = await screen.next("step")
            assert (step["timeout_s"], step["more_time_left"], step["index"], step["count"]) == (3, 1, 0, 1)
            extended = await engine.more_time()
            assert extended == await screen.next("step") and extended["more_time_left"] == 0
            assert extended["remaining_s"] > step["remaining_s"]
            with pytest.raises(NoMoreTime):
                await engine.more_time()
            ended = await screen.next("ended")
            assert (ended["outcome"], ended["reason"]) == ("abandoned", "timeout:confirm")
            assert tx_data(sub, session)["data"]["steps"][0]["ms"] >= 6000 - 50    # 3 s + 3 s more

            # English from the start, Chinese on the way: the receipt and the record follow.
            with pytest.raises(UnsupportedLanguage):
                await engine.begin("pay", language="fr")
            session = (await engine.begin("pay", language="en"))["session"]
            assert engine.status()["language"] == "en"
            await screen.next("step", step="confirm")
            await engine.confirm()
            await screen.next("step", step="scan_payment")
            agent.peripherals.simulators["scanner"].scan("134567890123456789")
            await screen.next("receipt_printed")
            ended = await screen.next("ended")
            assert tx_data(sub, session)["data"]["language"] == "en"
            lines = render_receipt(printer.last_receipt() or b"")
            assert lines[0] == "Pay" and f"Receipt: {ended['receipt_number']}" in lines
            assert "Paid: WeChat Pay 13************6789" in lines and not any(CJK.search(ln) for ln in lines)
            assert engine.status()["language"] == "zh"             # the next citizen starts in the default

            session = (await engine.begin("pay", language="en"))["session"]
            engine.set_language("zh")
            await screen.next("step", step="confirm")
            await engine.confirm()
            await screen.next("step", step="scan_payment")
            agent.peripherals.simulators["scanner"].scan("281234567890123456")
            await screen.next("receipt_printed")
            await screen.next("ended")
            assert tx_data(sub, session)["data"]["language"] == "zh"
            assert render_receipt(printer.last_receipt() or b"")[0] == "缴费"

            # The screen is gone: the session fails, its data is wiped, the record says why.
            reader = agent.peripherals.simulators["idcard"]
            session = (await engine.begin("quick_print"))["session"]
            reader.place(canary())
            await screen.next("card_read")
            running = engine.session
            assert await engine.abort("screen_lost") is True
            assert running.card is None and running.photo_wlt is None and engine.session is None
            ended = await screen.next("ended")
            assert (ended["outcome"], ended["reason"], ended["receipt_number"]) == ("failed", "screen_lost", None)
            rec = tx_data(sub, session)["data"]
            assert rec["reason"] == "screen_lost" and rec["steps"][1]["status"] == "interrupted"
            assert await engine.abort("screen_lost") is False           # nothing left to end

    asyncio.run(scenario())


def test_services_say_why_not_and_announce_changes(rig: Any) -> None:
    cfg, _bo, _sub = rig

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            screen = Screen()
            engine.add_listener(screen)
            printer = agent.peripherals.simulators["printer"]

            def menu() -> dict[str, dict[str, Any]]:
                return {s["id"]: s for s in engine.services()}

            await wait_until_async(lambda: menu()["record_print"]["available"], 20, message="the printer polled")
            assert all(s["unavailable_reason"] is None for s in menu().values())

            printer.set_state(paper_out=True)
            changed = await screen.services_until(lambda m: not m["record_print"]["available"])
            entry = {s["id"]: s for s in changed["services"]}["record_print"]
            assert (entry["available"], entry["unavailable_reason"]) == (False, "printer_out_of_paper")
            assert entry["unavailable"] == "printer: paper_out"
            assert changed["mode"] == "in_service" and changed["online"] is True
            with pytest.raises(PrinterUnavailable) as caught:
                await engine.begin("record_print")
            assert caught.value.unavailable_reason == "printer_out_of_paper"
            assert menu()["quick_print"]["available"]                  # a secondary receipt: still offered
            printer.refill()
            await screen.services_until(lambda m: m["record_print"]["available"])

            agent.set_mode("maintenance")
            changed = await screen.next("services_changed")
            assert changed["mode"] == "maintenance"
            assert {s["unavailable_reason"] for s in changed["services"]} == {"maintenance"}
            with pytest.raises(NotInService) as refused:
                await engine.begin("quick_print")
            assert refused.value.unavailable_reason == "maintenance"
            agent.set_mode("in_service")
            await screen.next("services_changed", mode="in_service")

            agent.peripherals.sim_actions()["door"]["open"]([])
            changed = await screen.services_until(lambda m: not m["quick_print"]["available"])
            assert {s["unavailable_reason"] for s in changed["services"]} == {"door_open"}
            agent.peripherals.sim_actions()["door"]["close"]([])
            await screen.services_until(lambda m: all(s["available"] for s in m.values()))

            # The card reader stops answering: what reads a card is greyed with its own reason, the rest
            # stays offered, and all comes back when the supervisor finds it again.
            reader = agent.peripherals.sim_actions()["idcard"]
            reader["unplug"]([])
            changed = await screen.services_until(lambda m: not m["quick_print"]["available"])
            offline = {s["id"]: s["unavailable_reason"] for s in changed["services"] if not s["available"]}
            needs_card = {s.id for s in engine.catalogue if engine.catalogue.needs(s, "read_id")}
            assert set(offline) == needs_card and set(offline.values()) == {"device_offline"}
            with pytest.raises(NoDevice) as refused:
                await engine.begin("quick_print")
            assert refused.value.unavailable_reason == "device_offline"
            reader["replug"]([])
            await screen.services_until(lambda m: all(s["available"] for s in m.values()))

    asyncio.run(scenario())


def test_offline_and_missing_devices_are_reasons_too(tmp_path: Path, broker: DevBroker) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    # No broker where this kiosk looks, and no camera.
    path = session_config(tmp_path / "kiosk", broker.url, bo,
                          extra=QUICK_SERVICES + SCREEN + "\n[devices.camera]\nenabled = false\n")
    text = path.read_text(encoding="utf-8").replace(broker.url, "mqtt://127.0.0.1:9")
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)

    async def scenario() -> None:
        async with running_agent(cfg, connect=False) as (_agent, engine):
            menu = {s["id"]: s for s in engine.services()}
            assert menu["record_print"]["unavailable_reason"] == "offline"
            assert menu["photo_consent"]["unavailable_reason"] == "device_missing"
            assert menu["quick_print"]["available"]                         # offline-capable
            assert engine.availability()["online"] is False
            with pytest.raises(OfflineNotAllowed) as caught:
                await engine.begin("record_print")
            assert caught.value.unavailable_reason == "offline"

    asyncio.run(scenario())
