# SPDX-License-Identifier: Apache-2.0
"""Faults a citizen meets mid-session, and an ack that came before anyone listened.

GIVEN the agent as ``kiosk-agent run`` builds it (simulators on ptys, a real
broker), WHEN the printer goes away before a receipt-purpose service commits,
the card reader's SAM fails during read_id, or ``kiosk-agent sim camera fail``
breaks the camera, THEN the session ends ``failed`` with a device reason the
screen maps to its error (nothing committed as completed), and the kiosk serves
the next citizen once the device is back. And a ``tx/ack`` the journal marked
while the agent started (before the engine listened) still erases its bundle.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

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
from agent.localapi import messages
from agent.localapi.kiosk import completion_code
from agent.sessions.engine import READER_FAULT_READS
from agent.sim.devbroker import DevBroker
from agent.sim.simcontrol import send_sim_command, socket_path


def card(body17: str) -> Any:
    return resident_card(body17, "己某某")


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def session_record(sub: Subscriber, session_id: str) -> dict[str, Any]:
    msg = sub.wait_for("/tx", lambda d: d["data"].get("type") == "session" and d["data"].get("session") == session_id,
                       timeout=15)
    return msg.data  # type: ignore[no-any-return]


def test_an_ack_marked_before_the_engine_listened_erases_its_bundle_at_start(
        tmp_path: Path, broker: DevBroker) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES))

    async def first_run() -> tuple[str, Path]:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            reader = agent.peripherals.simulators["idcard"]
            reader.remove()
            await engine.begin("quick_print")
            reader.place(card("99000019800101001"))
            await wait_event(events, "step", step="confirm")
            await engine.confirm()
            ended = await wait_event(events, "ended")
            assert ended["outcome"] == "completed"
            assert engine.evidence.ids() == [ended["tx"]]
            return str(ended["tx"]), Path(engine.store.path)

    tx_id, db_path = asyncio.run(first_run())
    # The agent is down. What a tx/ack delivered during the next start, before the engine adds its
    # ack listener, leaves behind: the journal's mark (the statement the journal's ack job runs) and
    # the bundle still on disk.
    with sqlite3.connect(db_path) as conn:
        marked = conn.execute("UPDATE journal SET acked_ms = ? WHERE id = ? AND acked_ms IS NULL",
                              (int(time.time() * 1000), tx_id)).rowcount
        left = conn.execute("SELECT count(*) FROM evidence WHERE tx_id = ?", (tx_id,)).fetchone()[0]
    conn.close()
    assert (marked, left) == (1, 1)

    async def second_run() -> None:
        async with running_agent(cfg, connect=False) as (_agent, engine):
            assert engine.evidence.count() == 0, "the acknowledged record's bundle is still on disk"

    asyncio.run(second_run())
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM evidence").fetchone()[0] == 0
    conn.close()


def test_a_purpose_receipt_service_fails_when_the_printer_goes_before_confirm(
        tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES + RECORD_PRINT))

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            printer = agent.peripherals.sim_actions()["printer"]
            reader = agent.peripherals.simulators["idcard"]
            await until(lambda: agent.peripherals.devices["printer"].status().state == "ok", "printer ok")
            reader.remove()
            session = (await engine.begin("record_print"))["session"]
            reader.place(card("99000019800101002"))
            await wait_event(events, "step", step="confirm")

            printer["unplug"]([])     # the citizen is reading the confirm screen
            await until(lambda: "printer_offline" in agent.alarms.active, "printer_offline raised")
            await engine.confirm()
            ended = await wait_event(events, "ended", session=session)
            assert (ended["outcome"], ended["reason"], ended["receipt_number"]) == \
                ("failed", "printer_unavailable", None)
            assert completion_code(ended["outcome"], ended["reason"]) == messages.DEVICE_NOT_READY
            record = session_record(subscriber, session)["data"]
            assert (record["outcome"], record["reason"], record["receipt"], record["evidence"]) == \
                ("failed", "printer_unavailable", None, False)
            assert [s["status"] for s in record["steps"]] == ["done", "done", "failed"]
            assert engine.evidence.count() == 0
            assert not subscriber.matching("/tx", lambda d: d["data"].get("type") == "receipt")

            # Printer back: the same service completes with its printout.
            printer["replug"]([])
            await until(lambda: engine.services()[-1]["available"], "record_print offered again")
            reader.remove()
            session = (await engine.begin("record_print"))["session"]
            reader.place(card("99000019800101002"))
            await wait_event(events, "step", step="confirm")
            await engine.confirm()
            ended = await wait_event(events, "ended", session=session)
            assert ended["outcome"] == "completed" and ended["receipt_number"]

    asyncio.run(scenario())
    subscriber.assert_valid()


def test_a_reader_sam_fault_during_read_id_ends_the_session_as_a_hardware_error(
        tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES))

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            reader_sim = agent.peripherals.simulators["idcard"]
            reader_sim.remove()
            # Two failed reads in a row (a card moved mid-read) are not a broken reader: the card is read.
            session = (await engine.begin("quick_print"))["session"]
            await wait_event(events, "step", step="read_id")
            reader_sim.fail_next(0x41, count=READER_FAULT_READS - 1)
            await until(lambda: not reader_sim.control_actions()["status"]([])["fail_next"], "the failures answered")
            reader_sim.place(card("99000019800101003"))
            read = await wait_event(events, "card_read", session=session)
            assert read["card_type"] == "resident"
            await engine.cancel()
            ended = await wait_event(events, "ended", session=session)
            assert ended["reason"] == "cancelled"
            assert not [e for e in drain(events) if e.get("event") == "card_rejected"]

            reader_sim.remove()
            session = (await engine.begin("quick_print"))["session"]
            await wait_event(events, "step", step="read_id")
            await asyncio.to_thread(send_sim_command, socket_path(cfg.storage.dir), "idcard", "sam_fault", [])
            reader_sim.place(card("99000019800101003"))

            rejected = await wait_event(events, "card_rejected", session=session)
            assert rejected["reason"] == "reader_fault"
            ended = await wait_event(events, "ended", session=session)
            assert (ended["outcome"], ended["reason"]) == ("failed", "idcard: hal.idcard.sam_selftest")
            assert completion_code(ended["outcome"], ended["reason"]) == messages.HARDWARE_ERROR
            record = session_record(subscriber, session)["data"]
            assert (record["outcome"], record["card_type"], record["evidence"]) == ("failed", None, False)
            assert record["steps"][0]["status"] == "failed"

            # The SAM recovers: the next citizen's card is read.
            await asyncio.to_thread(send_sim_command, socket_path(cfg.storage.dir), "idcard", "sam_fault", ["off"])
            reader_sim.remove()
            session = (await engine.begin("quick_print"))["session"]
            reader_sim.place(card("99000019800101003"))
            assert (await wait_event(events, "card_read", session=session))["card_type"] == "resident"
            await engine.cancel()
            await wait_event(events, "ended", session=session)

    asyncio.run(scenario())
    subscriber.assert_valid()


def test_sim_camera_fail_ends_the_photo_step_as_a_hardware_error_and_recover_serves_again(
        tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    config = session_config(tmp_path / "kiosk", broker.url, bo, extra=QUICK_SERVICES)
    cfg = load_config(config)
    sim = socket_path(cfg.storage.dir)

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            reader = agent.peripherals.simulators["idcard"]
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent", "sim", "--config", str(config), "camera", "fail",
                stdout=asyncio.subprocess.PIPE)
            out, _ = await cli.communicate()
            assert cli.returncode == 0, out
            reply = json.loads(out)
            assert reply["ok"] and reply["failing"] is True, reply
            reader.remove()
            session = (await engine.begin("photo_legal"))["session"]
            reader.place(card("99000019800101004"))
            await wait_event(events, "step", step="capture_photo")
            ended = await wait_event(events, "ended", session=session)
            assert ended["outcome"] == "failed" and ended["reason"].startswith("camera: "), ended
            assert completion_code(ended["outcome"], ended["reason"]) == messages.HARDWARE_ERROR
            assert "camera_fault" in agent.alarms.active
            record = session_record(subscriber, session)["data"]
            assert (record["outcome"], record["face"], record["evidence"]) == ("failed", None, False)

            reply = await asyncio.to_thread(send_sim_command, sim, "camera", "recover", [])
            assert reply["failing"] is False
            reader.remove()
            session = (await engine.begin("photo_legal"))["session"]
            reader.place(card("99000019800101004"))
            preview = await wait_event(events, "photo_preview", session=session)
            assert bytes(preview["jpeg"][:2]) == b"\xff\xd8"
            await engine.cancel()
            await wait_event(events, "ended", session=session)

    asyncio.run(scenario())
    subscriber.assert_valid()
