# SPDX-License-Identifier: Apache-2.0
"""The fleet simulator speaks the agent's contract: every payload fits agent/wire/schemas, every record verifies.

The dashboard's bench and tests believe what fleetsim publishes; if it drifted
from the contract, their figures would describe a fleet that cannot exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fleetsim import ALARM_DEVICE, FleetSim, every_message_kind, make_fleet
from kiosktest import Subscriber, schema_for_topic, wait_until

from agent.sim.devbroker import DevBroker
from agent.wire.contract import encode, parse_topic, validate
from fleet.ledger.db import KioskKeys, SodiumKey
from fleet.ledger.verify import Rejection, check_tx

REPO = Path(__file__).resolve().parents[2]


def test_every_kind_of_message_fits_the_agents_schemas() -> None:
    kiosk = make_fleet(1, "north", with_keys=True)[0]
    seen = set()
    for topic, payload, _qos, _retain in every_message_kind(kiosk):
        parsed = parse_topic(topic)
        assert parsed is not None and parsed[:2] == ("north", kiosk.kiosk)
        # Through the bytes the broker carries, as a subscriber reads them.
        validate(schema_for_topic(parsed[2]), json.loads(encode(payload)))
        seen.add(parsed[2].split("/")[0] if not parsed[2].startswith("cmd/") else "cmd-result")
        if parsed[2].startswith("alarm/") and "alias_of" not in payload:
            # The alarm names the peripheral that asserts it, and health marks that peripheral.
            assert payload["device"] == ALARM_DEVICE.get(payload["code"], ("system",))[0]
    assert seen == {"state", "health", "alarm", "cmd-result"}


def test_a_raised_alarm_shows_in_the_next_health() -> None:
    kiosk = make_fleet(1, "north")[0]
    messages = kiosk.set_alarm("paper_out", True)
    assert [m[0].rsplit("/", 2)[-2:] for m in messages] == [["alarm", "paper_out"], ["k0001", "health"]]
    health = messages[-1][1]
    assert health["alarms"] == ["paper_out"] and health["reason"] == "change"
    assert health["peripherals"]["printer"] == {"state": "fault", "alarms": ["paper_out"]}
    assert kiosk.set_alarm("paper_out", True) == []           # already raised: the agent sends nothing
    cleared = kiosk.set_alarm("paper_out", False)
    assert cleared[0][1]["active"] is False and cleared[-1][1]["alarms"] == []
    # A renamed code goes out under its old name too, marked as the alias, for one release.
    assert [m[1].get("alias_of") for m in kiosk.set_alarm("printer_fault", True)[:2]] == [None, "printer_fault"]


def test_transactions_verify_as_the_ledger_verifies_them() -> None:
    kiosk = make_fleet(1, "north", with_keys=True)[0]
    assert kiosk.ledger is not None
    keys = {kiosk.kiosk: KioskKeys(kiosk.kiosk, "north", {kiosk.ledger.kid: SodiumKey(kiosk.ledger.public_key)})}
    prev = None
    for n in range(1, 4):
        topic, payload = kiosk.transaction()
        record = check_tx(topic, payload, keys)
        assert not isinstance(record, Rejection), record
        assert record.seq == n and (prev is None or record.prev == prev)
        prev = record.hash
        validate("tx", json.loads(payload))
        assert json.loads(payload)["data"]["id_masked"].count("*") == 12   # a masked number, never a full one


def test_the_fleet_on_the_wire_births_alarms_commands_records_and_wills(broker: DevBroker) -> None:
    kiosks = make_fleet(6, "north", with_keys=True)
    keys = {k.kiosk: KioskKeys(k.kiosk, "north", {k.ledger.kid: SodiumKey(k.ledger.public_key)})
            for k in kiosks if k.ledger is not None}
    live = Subscriber(broker.url, "kiosk/#")          # validates every payload against its topic's schema
    sim = FleetSim(broker.port, kiosks, per_process=3, health_interval_s=0.5).start()
    try:
        wait_until(lambda: len(live.matching("/state", lambda d: d["online"])) == 6, 10, message="6 births")
        births = {m.data["kiosk"]: m.data for m in live.matching("/state") if m.data["online"]}
        assert sorted(births) == [k.kiosk for k in kiosks]
        assert {b["site"] for b in births.values()} == {kiosks[0].site}
        # What a ledger starting now reads: every kiosk's retained birth and health.
        late = Subscriber(broker.url, "kiosk/v1/north/+/state", "kiosk/v1/north/+/health")
        wait_until(lambda: len({m.topic for m in late.matching("")}) == 12, 10, message="12 retained topics")
        first: dict[str, bool] = {}
        for m in late.matching(""):
            first.setdefault(m.topic, m.retain)
        assert all(first.values()), first          # each topic's first message is the broker's retained copy
        late.close()
        # Periodic health keeps coming from every kiosk.
        wait_until(lambda: {m.data["kiosk"] for m in live.matching("/health", lambda d: d["reason"] == "periodic")}
                   == set(births), 10, message="periodic health from every kiosk")

        at = sim.alarm("k0002", "door_open")
        assert at is not None
        raised = live.wait_for("/k0002/alarm/door_open")
        assert raised.data["active"] is True and raised.data["severity"] == "critical"
        live.wait_for("/k0002/health", lambda d: d["alarms"] == ["door_open"])
        assert sim.alarm("k0002", "door_open") is None
        sim.alarm("k0002", "door_open", active=False)
        live.wait_for("/k0002/alarm/door_open", lambda d: d["active"] is False)

        correlation = sim.command("k0005", "ping", result={"pong": True})
        result = live.wait_for("/k0005/cmd/ping/result", lambda d: d["status"] == "succeeded").data
        assert result["correlation"] == correlation and result["result"] == {"pong": True}

        payloads = sim.transactions("k0004", 3)
        wait_until(lambda: len(live.matching("/k0004/tx")) == 3, 10, message="3 records")
        assert [m.payload for m in live.matching("/k0004/tx")] == payloads
        for m in live.matching("/k0004/tx"):
            assert not isinstance(check_tx(m.topic, m.payload, keys), Rejection)

        # kill -9 of the second process: the broker sends its kiosks' Wills, naming each birth's bdSeq.
        gone = sim.kill(1)
        assert gone == ["k0004", "k0005", "k0006"]
        wills = {m.data["kiosk"]: m.data for m in (live.wait_for(f"/{k}/state", lambda d: d["online"] is False)
                                                   for k in gone)}
        assert all(w["reason"] == "will" and w["bdSeq"] == births[k]["bdSeq"] for k, w in wills.items())
        assert not live.matching("/state", lambda d: d["online"] is False and d["kiosk"] in {"k0001", "k0002"})

        with pytest.raises(RuntimeError, match="not running"):
            sim.alarm("k0005", "paper_low")         # an order to a killed kiosk process is refused

        # The same kiosks come back: a new agent run, the next bdSeq, born again, their chains going on.
        sim.restart(1)
        reborn = {k: live.wait_for(f"/{k}/state", lambda d: d["online"] is True and
                                   d["bdSeq"] == births[d["kiosk"]]["bdSeq"] + 1).data for k in gone}
        assert all(b["boot_id"] != births[k]["boot_id"] for k, b in reborn.items())
        last = check_tx("kiosk/v1/north/k0004/tx", payloads[-1], keys)
        following = check_tx("kiosk/v1/north/k0004/tx", sim.transactions("k0004", 1)[0], keys)
        assert not isinstance(last, Rejection) and not isinstance(following, Rejection)
        assert (following.seq, following.prev) == (4, last.hash)
    finally:
        sim.stop()
    # A clean stop says goodbye, the restarted kiosks too.
    for k in births:
        live.wait_for(f"/{k}/state", lambda d: d["online"] is False and d["reason"] == "shutdown")
    live.close()


@pytest.mark.long
def test_the_dashboard_bench_still_measures_the_page(tmp_path: Path) -> None:
    """bench/dashboard.py --quick runs through the real stack and prints every figure (budgets are its business).

    It leans on what the pages and the server promise (rows with data-kiosk and data-alarms, the login form,
    /api/fleet showing the simulated fleet): a change there that breaks the bench shows here, not at the next
    bench run.
    """
    figures = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "dashboard.py"), "--quick", "--json", str(figures)],
                            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode in (0, 1) and figures.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    done = json.loads(figures.read_text(encoding="utf-8"))
    assert done["A"]["rows"] == 100 and done["B"]["rows"] == 100, done
    assert done["C"]["live"]["n"] == 16 and done["C"]["stored"]["n"] == 16, done["C"]
