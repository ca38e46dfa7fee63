# SPDX-License-Identifier: Apache-2.0
"""Receipts a citizen can see or miss, on the printer simulator's pty.

GIVEN the agent as ``kiosk-agent run`` builds it, WHEN the printer runs out of
paper or is unplugged, THEN a service whose receipt is its purpose is not
offered (with a reason a UI can show) until the printer can print again, and
every completed session with a receipt step is followed by a signed
``receipt`` record saying printed / failed / skipped, counted in health.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kiosktest import Subscriber
from sesskit import (
    QUICK_SERVICES,
    RECORD_PRINT,
    BackOffice,
    resident_card,
    running_agent,
    session_config,
    until,
    wait_event,
)

from agent.config import load_config
from agent.sessions.engine import PrinterUnavailable
from agent.sim.devbroker import DevBroker


def card(body17: str) -> Any:
    return resident_card(body17, "戊某某")


async def records(sub: Subscriber, kind: str, session_id: str) -> dict[str, Any]:
    """The ``tx`` record of ``kind`` ("session" or "receipt") for ``session_id``, as the fleet got it."""
    def session_record() -> list[Any]:
        return sub.matching("/tx", lambda d: d["data"].get("type") == "session"
                            and d["data"].get("session") == session_id)

    found = await until(session_record, "the session record")
    if kind == "receipt":      # it names the session record by its id
        tx_id = found[-1].data["id"]
        found = await until(lambda: sub.matching("/tx", lambda d: d["data"].get("type") == "receipt"
                                                 and d["data"].get("tx") == tx_id), "its receipt record")
    return found[-1].data  # type: ignore[no-any-return]


async def serve(agent: Any, engine: Any, events: asyncio.Queue[dict[str, Any]], service: str,
                body17: str) -> tuple[str, list[dict[str, Any]]]:
    """One citizen through read_id, confirm, print_receipt; the session id and the events after confirm."""
    reader = agent.peripherals.simulators["idcard"]
    reader.remove()
    session: str = (await engine.begin(service))["session"]
    reader.place(card(body17))
    await wait_event(events, "step", step="confirm")
    await engine.confirm()
    seen = [await asyncio.wait_for(events.get(), 20)]
    while seen[-1]["event"] != "ended":
        seen.append(await asyncio.wait_for(events.get(), 20))
    assert seen[-1]["outcome"] == "completed"
    return session, seen


def test_purpose_receipt_service_is_refused_while_the_printer_cannot_print(
        tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES + RECORD_PRINT))

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            printer = agent.peripherals.sim_actions()["printer"]
            await until(lambda: agent.peripherals.devices["printer"].status().state == "ok", "printer ok")
            menu = {s["id"]: s for s in engine.services()}
            assert menu["record_print"]["available"] and menu["record_print"]["receipt"] == "purpose"

            printer["paper_out"]([])
            await until(lambda: "paper_out" in agent.alarms.active, "paper_out raised")
            with pytest.raises(PrinterUnavailable) as refused:
                await engine.begin("record_print")
            assert refused.value.code == "agent.session.printer_unavailable"
            assert refused.value.reason == "printer: paper_out"
            menu = {s["id"]: s for s in engine.services()}
            assert (menu["record_print"]["available"], menu["record_print"]["unavailable"]) == \
                (False, "printer: paper_out")
            # A service whose receipt is secondary is still offered.
            assert menu["quick_print"]["available"] and menu["quick_print"]["unavailable"] is None
            assert engine.status()["state"] == "idle"

            printer["refill"]([])
            await until(lambda: "paper_out" not in agent.alarms.active, "paper_out cleared")
            session, _ = await serve(agent, engine, events, "record_print", "99000019600505005")
            assert (await records(subscriber, "receipt", session))["data"]["status"] == "printed"

            printer["unplug"]([])
            await until(lambda: "printer_offline" in agent.alarms.active, "printer_offline raised")
            with pytest.raises(PrinterUnavailable) as refused:
                await engine.begin("record_print")
            assert refused.value.reason == "printer: printer_offline"
            printer["replug"]([])
            await until(lambda: not engine.services()[-1]["unavailable"], "record_print offered again")
            await engine.begin("record_print")
            await engine.cancel()

    asyncio.run(scenario())
    subscriber.assert_valid()


def test_secondary_receipt_outcome_is_recorded_and_counted(
        tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    # The printer's status is polled once at attach and then not for ten
    # minutes, so "paper out" is first noticed by the print itself: a failed print.
    slow_poll = "\n[devices.printer]\npoll_interval_s = 600\n"
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES + slow_poll))

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            printer = agent.peripherals.sim_actions()["printer"]
            await until(lambda: agent.peripherals.devices["printer"].status().state == "ok", "printer ok")

            printed, seen = await serve(agent, engine, events, "quick_print", "99000019700606006")
            session_rec = await records(subscriber, "session", printed)
            receipt = (await records(subscriber, "receipt", printed))["data"]
            assert receipt == {"type": "receipt", "tx": session_rec["id"], "service": "quick_print",
                               "receipt": session_rec["data"]["receipt"],
                               "role": "secondary", "status": "printed", "code": None, "alarms": []}
            assert not [e for e in seen if e["event"] == "receipt_failed"]

            printer["paper_out"]([])
            failed, seen = await serve(agent, engine, events, "quick_print", "99000019700606007")
            assert [(e["session"], e["status"]) for e in seen if e["event"] == "receipt_failed"] == \
                [(failed, "failed")]
            assert (await records(subscriber, "session", failed))["data"]["outcome"] == "completed"
            receipt = (await records(subscriber, "receipt", failed))["data"]
            assert (receipt["status"], receipt["code"], receipt["alarms"]) == \
                ("failed", "hal.printer.not_ready", ["paper_out"])

            printer["refill"]([])
            printer["unplug"]([])
            await until(lambda: "printer_offline" in agent.alarms.active, "printer_offline raised")
            skipped, seen = await serve(agent, engine, events, "quick_print", "99000019700606008")
            receipt = (await records(subscriber, "receipt", skipped))["data"]
            assert (receipt["status"], receipt["alarms"]) == ("skipped", ["printer_offline"])
            assert [e["status"] for e in seen if e["event"] == "receipt_failed"] == ["skipped"]
            assert receipt["code"].startswith("hal.")

            # The fleet sees the counted failures in health, published at once.
            health = await until(lambda: subscriber.matching("/health", lambda d: d.get("sessions", {})
                                                             .get("receipts", {}).get("skipped") == 1), "health")
            assert health[-1].data["sessions"]["receipts"] == {"printed": 1, "failed": 1, "skipped": 1}
            printer["replug"]([])

    asyncio.run(scenario())
    subscriber.assert_valid()
