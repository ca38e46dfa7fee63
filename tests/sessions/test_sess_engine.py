# SPDX-License-Identifier: Apache-2.0
"""The session engine inside a real agent: simulators on ptys, a real broker.

GIVEN the agent as ``kiosk-agent run`` builds it, WHEN simulated citizens
walk away, consent or not, pay, or the kiosk is interrupted, THEN the
journal gets the right record and the next citizen starts clean.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from kiosktest import Subscriber, wait_until, wait_until_async
from sesskit import QUICK_SERVICES, BackOffice, running_agent, session_config, wait_event

from agent.config import load_config
from agent.sessions.engine import NotInService
from agent.sessions.evidence import parse_content
from agent.sim.devbroker import DevBroker
from agent.wire.sealing import Bundle, open_bundle
from hal.sim.idcard import sample_card, synthetic_number


def card(name: str, body17: str, kind: str = "resident") -> Any:
    return dataclasses.replace(sample_card(kind), name=name, id_number=synthetic_number(body17))


def tx_data(sub: Subscriber, session_id: str, timeout: float = 15.0) -> dict[str, Any]:
    msg = sub.wait_for("/tx", lambda d: d["data"].get("session") == session_id, timeout=timeout)
    return msg.data  # type: ignore[no-any-return]


def unseal(bo: BackOffice, sub: Subscriber, tx_id: str) -> dict[str, Any]:
    msg = sub.wait_for("/evidence", lambda d: d["tx"] == tx_id, timeout=15)
    return parse_content(open_bundle(bo.key, Bundle.from_dict(msg.data["bundle"]), tx_id))


@pytest.fixture
def rig(tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> tuple[Any, BackOffice, Subscriber]:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES))
    return cfg, bo, subscriber


def test_walk_away_is_abandoned_with_timings_and_the_next_citizen_starts_clean(rig: Any) -> None:
    cfg, bo, sub = rig

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            reader = agent.peripherals.simulators["idcard"]

            # Citizen A reads the card, then walks away at "confirm" (3 s timeout).
            first = (await engine.begin("quick_print"))["session"]
            reader.place(card("甲某某", "99000019800101001"))
            seen = await wait_event(events, "card_read")
            assert seen["id_masked"].startswith("99") and "*" in seen["id_masked"]
            ended = await wait_event(events, "ended", timeout=15)
            assert ended["outcome"] == "abandoned" and ended["reason"] == "timeout:confirm"
            await wait_event(events, "card_left", timeout=5)      # the card still lies on the reader
            status = engine.status()
            assert status["state"] == "idle" and status["card_left"] and "card_read" not in status

            rec = tx_data(sub, first)
            data = rec["data"]
            assert data["outcome"] == "abandoned" and data["evidence"] is False and data["receipt"] is None
            steps = {s["kind"]: s for s in data["steps"]}
            assert steps["read_id"]["status"] == "done" and steps["read_id"]["ms"] >= 0
            assert steps["confirm"]["status"] == "timeout" and 2900 <= steps["confirm"]["ms"] <= 6000
            assert steps["print_receipt"] == {"kind": "print_receipt", "status": "not_reached", "ms": None}
            assert not sub.matching("/evidence", lambda d: d["tx"] == rec["id"])

            # Citizen B: A's card is lifted, B's placed; B completes and only B is sealed.
            reader.remove()
            second = (await engine.begin("quick_print"))["session"]
            assert engine.status()["card_read"] is False and engine.status()["id_masked"] is None
            reader.place(card("乙某某", "99000019900202002"))
            await wait_event(events, "step", step="confirm")
            await engine.confirm()
            assert (await wait_event(events, "ended"))["outcome"] == "completed"
            rec2 = tx_data(sub, second)
            assert rec2["data"]["receipt"] and rec2["seq"] == rec["seq"] + 1
            assert rec2["data"]["steps"][-1]["status"] == "after_commit"
            content = unseal(bo, sub, rec2["id"])
            assert content["card"]["name"] == "乙某某" and len(content["photo_wlt"]) == 1024
            assert "甲某某" not in json.dumps(content, ensure_ascii=False, default=str)
            # The receipt came out of the (simulated) printer after the commit, masked only.
            printer = agent.peripherals.simulators["printer"]
            wait_until(lambda: rec2["data"]["receipt"] in printer.transcript_text(), 10, message="receipt")
            assert "乙某某" not in printer.transcript_text()

    asyncio.run(scenario())


def test_face_photo_default_deny_consent_and_legal_basis(rig: Any) -> None:
    cfg, bo, sub = rig

    async def citizen(agent: Any, engine: Any, events: asyncio.Queue[dict[str, Any]], service: str,
                      consent: bool) -> dict[str, Any]:
        reader = agent.peripherals.simulators["idcard"]
        reader.remove()
        session = (await engine.begin(service))["session"]
        reader.place(card("丙某某", "99000019750303003"))
        while True:
            event = await asyncio.wait_for(events.get(), 20)
            if event["event"] == "photo_preview":
                await engine.accept_photo()
                continue
            if event["event"] != "step":
                continue
            if event["step"] == "capture_photo" and consent:
                await engine.set_consent(face=True)
            elif event["step"] == "capture_address":
                await engine.provide_address(recipient="丙某某", phone="19900000000",
                                             address="模拟省测试市样例路3号", postcode="999999")
            elif event["step"] == "confirm":
                await engine.confirm()
                break
        assert (await wait_event(events, "ended"))["outcome"] == "completed"
        return tx_data(sub, session)

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            jpeg = agent.peripherals.devices["camera"].camera.capture_still().jpeg

            denied = await citizen(agent, engine, events, "photo_consent", consent=False)
            assert denied["data"]["face"] == "erased" and denied["data"]["waybill"]
            content = unseal(bo, sub, denied["id"])
            assert content["face_jpeg"] is None and content["mailing"]["postcode"] == "999999"
            assert "face_jpeg" not in sub.wait_for("/evidence", lambda d: d["tx"] == denied["id"]).data["contents"]

            consented = await citizen(agent, engine, events, "photo_consent", consent=True)
            assert consented["data"]["face"] == "sealed:consent"
            content = unseal(bo, sub, consented["id"])
            assert content["face_jpeg"] == jpeg and content["face_basis"] == "consent"

            legal = await citizen(agent, engine, events, "photo_legal", consent=False)
            assert legal["data"]["face"] == "sealed:legal_basis"
            content = unseal(bo, sub, legal["id"])
            assert content["face_jpeg"] == jpeg and content["legal_basis"].startswith("test:")

    asyncio.run(scenario())


def test_payment_maintenance_and_door_end_sessions_cleanly(rig: Any) -> None:
    cfg, _bo, sub = rig

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            scanner = agent.peripherals.simulators["scanner"]

            paid = (await engine.begin("pay"))["session"]
            await wait_event(events, "step", step="confirm")
            await engine.confirm()
            await wait_event(events, "step", step="scan_payment")
            scanner.scan("6901234567892")                    # a product barcode is not a payment code
            await wait_event(events, "not_a_payment_code")
            scanner.scan("134567890123456789")
            assert (await wait_event(events, "ended"))["outcome"] == "completed"
            data = tx_data(sub, paid)["data"]
            assert data["payment"] == {"method": "wechat", "ref_masked": "13************6789"}
            assert data["card_type"] is None and data["evidence"] is False

            # Maintenance mode ends the session and turns the next citizen away.
            session = (await engine.begin("quick_print"))["session"]
            agent.set_mode("maintenance")
            ended = await wait_event(events, "ended")
            assert (ended["outcome"], ended["reason"]) == ("failed", "maintenance")
            with pytest.raises(NotInService):
                await engine.begin("quick_print")
            assert tx_data(sub, session)["data"]["steps"][0]["status"] == "failed"
            agent.set_mode("in_service")

            # The door opening ends the session too.
            session = (await engine.begin("quick_print"))["session"]
            agent.peripherals.sim_actions()["door"]["open"]([])
            ended = await wait_event(events, "ended")
            assert (ended["outcome"], ended["reason"]) == ("failed", "door_open")
            agent.peripherals.sim_actions()["door"]["close"]([])
            await wait_until_async(lambda: "door_open" not in agent.alarms.active, 10,   # debounced
                                   message="the door alarm cleared")
            assert tx_data(sub, session)["data"]["outcome"] == "failed"

            # Shutdown with a citizen at the kiosk: recorded as failed before the agent stops.
            last = (await engine.begin("quick_print"))["session"]
            await wait_event(events, "step", session=last)      # the citizen is mid-step
        assert tx_data(sub, last)["data"]["reason"] == "shutdown"

    asyncio.run(scenario())


def test_bundles_are_deleted_after_tx_ack_and_at_retention_end(tmp_path: Path, broker: DevBroker) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES))
    # tx/ack's own schema belongs to the journal; this subscriber listens to tx and evidence only.
    sub = Subscriber(broker.url, cfg.prefix + "tx", cfg.prefix + "evidence")

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            reader = agent.peripherals.simulators["idcard"]
            ids = []
            for n in range(3):
                reader.remove()
                session = (await engine.begin("quick_print"))["session"]
                reader.place(card("丁某某", f"9900001970040400{n}"))
                await wait_event(events, "step", step="confirm")
                await engine.confirm()
                await wait_event(events, "ended")
                ids.append(tx_data(sub, session)["id"])
            assert sorted(engine.evidence.ids()) == sorted(ids)

            # The back office acknowledges the first two: their bundles go, the third stays.
            ack = json.dumps({"v": 1, "ts": 0, "ids": ids[:2]}).encode()
            sub.client.publish(agent.topics.tx_ack, ack, qos=1)
            await wait_until_async(lambda: engine.evidence.count() == 1, 10, message="two bundles deleted")
            assert engine.evidence.ids() == [ids[2]]
            # Retention: a sweep a retention period later removes the rest.
            import time
            assert engine.evidence.sweep(now=time.time() + cfg.evidence.retention_days * 86_400 + 1) == 1
            assert engine.evidence.count() == 0

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
