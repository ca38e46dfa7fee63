# SPDX-License-Identifier: Apache-2.0
"""The six device services and the development service, over the simulated peripherals."""

from __future__ import annotations

import pytest
from apikit import ApiClient, RunningApi, card_secrets
from kiosktest import wait_until
from sessions.sesskit import find_pii

SERVICES = {"cardreader": "cardReader", "printer": "printer", "camera": "camera", "barcodereader": "barcodeReader",
            "lights": "lights", "auxiliaries": "auxiliaries"}


@pytest.mark.parametrize(("service", "block"), sorted(SERVICES.items()))
def test_each_device_service_reports_its_status_and_capabilities(api: RunningApi, service: str, block: str) -> None:
    with api.client(service) as client:
        status = wait_until(lambda: (p := client.command("Common.Status").payload)["common"]["device"] != "starting"
                            and p, 15, message=f"{service} probed")
        assert status["common"]["device"] == "online", status
        assert set(status) == {"completionCode", "common", block}
        caps = client.command("Common.Capabilities").payload
        commands = {name for interface in caps["interfaces"] for name in interface["commands"]}
        assert {"Common.Status", "Common.Capabilities", "Common.Cancel"} <= commands
        assert block in caps


def test_what_each_block_says_on_an_idle_kiosk(api: RunningApi) -> None:
    def status(service: str) -> dict:  # type: ignore[type-arg]
        with api.client(service) as client:
            return client.command("Common.Status").payload  # type: ignore[no-any-return]

    assert status("printer")["printer"] == {"paper": {"upper": "full"}}
    assert status("auxiliaries")["auxiliaries"] == {"cabinetDoor": "closed", "tamperSensor": "off",
                                                    "presence": "notPresent"}
    assert status("barcodereader")["barcodeReader"] == {"scanner": "on"}
    assert status("camera")["camera"] == {"cameras": {"person": "ok"}}
    lights = status("lights")["lights"]["stackLight"]
    assert lights["green"]["flashRate"] == "continuous" and lights["red"]["flashRate"] == "off"
    assert status("cardreader")["cardReader"]["media"] == "unknown"


def _changed(client: ApiClient, predicate) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return client.unsolicited("Common.StatusChangedEvent", predicate=lambda p: predicate(p["changed"]))["payload"]


def test_status_changes_are_sent_as_they_happen(api: RunningApi) -> None:
    with api.client("printer") as printer, api.client("auxiliaries") as aux, api.client("cardreader") as reader:
        api.agent.sim("printer", "paper_out")
        try:
            changed = _changed(printer, lambda c: c.get("printer", {}).get("paper", {}).get("upper") == "out")
            assert changed["changed"]["common"]["device"] == "hardwareError"
            assert printer.command("Common.Status").payload["printer"]["paper"]["upper"] == "out"
        finally:
            api.agent.sim("printer", "refill")
        back = _changed(printer, lambda c: c.get("common", {}).get("device") == "online")
        assert back["changed"]["printer"] == {"paper": {"upper": "full"}}
        api.agent.sim("door", "open")
        try:
            changed = _changed(aux, lambda c: c.get("auxiliaries", {}).get("cabinetDoor") == "open")
            assert set(changed["changed"]["auxiliaries"]) == {"cabinetDoor"}      # only what changed
        finally:
            api.agent.sim("door", "close")
        _changed(aux, lambda c: c.get("auxiliaries", {}).get("cabinetDoor") == "closed")
        api.agent.sim("idcard", "unplug")
        try:
            _changed(reader, lambda c: c.get("common", {}).get("device") == "offline")
        finally:
            api.agent.sim("idcard", "replug")
        _changed(reader, lambda c: c.get("common", {}).get("device") == "online")
        # A service's events go to its own clients only.
        assert not [m for m in aux.backlog if m["payload"].get("changed", {}).get("printer")]


def test_dev_service_drives_the_simulators_and_shows_the_receipt(api: RunningApi) -> None:
    with api.client("dev") as dev, api.client("kiosk") as kiosk:
        actions = dev.command("Dev.GetActions").payload["devices"]
        assert {"place", "remove"} <= set(actions["idcard"]) and "paper_out" in actions["printer"]
        assert "scan" in actions["scanner"] and "open" in actions["door"]
        assert dev.command("Dev.Simulate", {"device": "vault", "action": "open"}).code == "invalidData"
        assert dev.command("Dev.Simulate", {"device": "door", "action": "explode"}).code == "invalidData"
        assert dev.command("Dev.Simulate", {"device": "door", "action": "open", "args": [1]}).code == "invalidData"
        rid = kiosk.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        kiosk.step(rid, "read_id")
        placed = dev.command("Dev.Simulate", {"device": "idcard", "action": "place", "args": ["resident"]})
        assert placed.code == "success" and placed.payload["result"]["card"] == "resident"
        kiosk.step(rid, "confirm")
        kiosk.command("Kiosk.Confirm")
        done = kiosk.finish(rid)
        assert done.code == "success"
        number = done.payload["receiptNumber"]
        printed = dev.unsolicited("Dev.ReceiptPrintedEvent", predicate=lambda p: any(number in ln for ln in p["lines"]))
        assert len(printed["payload"]["lines"]) > 3
        assert any(number in line for line in dev.command("Dev.GetReceipt").payload["lines"])
        # Simulate answers state flags only: neither the transcript nor the receipt's lines through it.
        for action in ("transcript", "receipt"):
            raw = dev.command("Dev.Simulate", {"device": "printer", "action": action})
            assert raw.code == "success" and not {"transcript", "lines"} & set(raw.payload["result"]), action
        dev.command("Dev.Simulate", {"device": "idcard", "action": "remove"})
        blob = "\n".join(dev.raw + kiosk.raw).encode()
        assert not find_pii(blob, card_secrets("resident")), find_pii(blob, card_secrets("resident"))
