# SPDX-License-Identifier: Apache-2.0
"""Canary citizens: a planted name, ID number and address never appear in clear.

GIVEN a simulated card carrying a known (synthetic) name and ID number and a
known mailing address, WHEN citizens are served through every kind of
service (one mailing to the address on the card, one to a typed one), THEN
neither appears in the database file (with its -wal and -shm), anywhere else
in the state directory, in the logs, on the printed receipt, in any event the
engine gives a screen (the photo preview aside: it is the citizen's face, for
the citizen) or in any published payload outside the sealed bundles -- searched as UTF-8,
UTF-16-LE (the card's own encoding), GB18030 and JSON-escaped. The same
canaries do come out of ``unseal``: the search is looking in the right place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from kiosktest import Subscriber
from sesskit import BackOffice, find_pii, running_agent, session_config, wait_event

from agent.config import load_config
from agent.sessions.evidence import parse_content
from agent.sim.devbroker import DevBroker
from agent.wire.sealing import Bundle, open_bundle
from hal.sim.idcard import sample_card, synthetic_number

CANARY_NAME = "金丝雀测"
CANARY_NUMBER = synthetic_number("99000019870605123")          # valid check character, area 99 (none)
CANARY_ADDRESS = "模拟省金丝雀市测试路88号"
FAST_READER = "\n[devices.idcard]\npoll_interval_s = 0.2\n"


def test_canary_never_in_clear(tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    bo = BackOffice(tmp_path / "backoffice")
    cfg = load_config(session_config(tmp_path / "kiosk", broker.url, bo, extra=FAST_READER))
    log_file = tmp_path / "agent.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s %(args)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    canary = dataclasses.replace(sample_card("resident"), name=CANARY_NAME, id_number=CANARY_NUMBER,
                                 address=CANARY_ADDRESS)
    assert canary.check_ok
    printed = ""
    screen_saw: list[dict[str, Any]] = []

    async def scenario() -> None:
        nonlocal printed
        async with running_agent(cfg) as (agent, engine):
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            engine.add_listener(events.put_nowait)
            engine.add_listener(lambda event: screen_saw.append(event) if event["event"] != "photo_preview" else None)
            reader = agent.peripherals.simulators["idcard"]
            for service in ("pension_record_print", "residence_permit_application", "driving_licence_renewal"):
                reader.remove()
                await engine.begin(service)
                while True:
                    event = await asyncio.wait_for(events.get(), 30)
                    if event["event"] == "ended":
                        assert event["outcome"] == "completed", event
                        break
                    if event["event"] == "photo_preview":
                        await engine.accept_photo()
                        continue
                    if event["event"] != "step":
                        continue
                    if event["step"] == "read_id":
                        reader.place(canary)
                    elif event["step"] == "capture_photo":
                        await engine.set_consent(face=True)
                    elif event["step"] == "capture_address" and service == "residence_permit_application":
                        await engine.provide_address(use_card_address=True, phone="19900000088")
                    elif event["step"] == "capture_address":
                        await engine.provide_address(recipient=CANARY_NAME, phone="19900000088",
                                                     address=CANARY_ADDRESS, postcode="999988")
                    elif event["step"] == "confirm":
                        await engine.confirm()
                    elif event["step"] == "scan_payment":
                        agent.peripherals.simulators["scanner"].scan("281234567890123456")
            # An abandoned session with the canary card too (its data must be wiped, not sealed).
            reader.remove()
            await engine.begin("pension_record_print")
            reader.place(canary)
            await wait_event(events, "card_read")
            await engine.cancel()
            await wait_event(events, "ended")
            await agent.outbox.wait_drained(20)
            printed = agent.peripherals.simulators["printer"].transcript_text()

    try:
        asyncio.run(scenario())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()

    secrets = [CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS]
    state = cfg.storage.dir
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        found = find_pii(path.read_bytes(), secrets)
        if found:
            hits[str(path.relative_to(state))] = found
    log_text = log_file.read_bytes()
    assert b"card read" in log_text, "the log capture saw nothing of the sessions"
    if found := find_pii(log_text, secrets):
        hits["log"] = found
    if found := find_pii(printed.encode("utf-8"), secrets):
        hits["receipt"] = found
    assert {"card_read", "step", "ended", "receipt_printed"} <= {e["event"] for e in screen_saw}
    if found := find_pii(json.dumps(screen_saw, ensure_ascii=False, default=str).encode("utf-8"), secrets):
        hits["events"] = found
    published = list(subscriber.messages)
    for msg in published:
        if found := find_pii(msg.topic.encode() + msg.payload, secrets):
            hits[msg.topic] = found
    assert not hits, f"citizen data in clear: {hits}"
    assert (state / "agent.db").exists()

    # Positive control: the masked number is published, and unseal gives the canaries back.
    txs = [m.data for m in subscriber.matching("/tx") if m.data["data"].get("type") == "session"]
    assert len(txs) == 4
    assert {t["data"]["id_masked"] for t in txs if t["data"]["id_masked"]} == \
        {CANARY_NUMBER[:2] + "*" * 12 + CANARY_NUMBER[-4:]}
    bundles = subscriber.matching("/evidence")
    assert len(bundles) == 3
    mailed = []
    for msg in bundles:
        content = parse_content(open_bundle(bo.key, Bundle.from_dict(msg.data["bundle"]), msg.data["tx"]))
        assert content["card"]["name"] == CANARY_NAME and content["card"]["id_number"] == CANARY_NUMBER
        assert content["card"]["address"] == CANARY_ADDRESS
        if content["mailing"]:
            mailed.append((content["mailing"]["source"], content["mailing"]["recipient"],
                           content["mailing"]["address"]))
    assert sorted(mailed) == [("entered", CANARY_NAME, CANARY_ADDRESS), ("id_card", CANARY_NAME, CANARY_ADDRESS)]
