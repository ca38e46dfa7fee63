# SPDX-License-Identifier: Apache-2.0
"""S4: every refusal case against a real broker and a real agent process.

Each case sends something that would put the kiosk into maintenance (or
reboot it) if it were executed; each must come back ``refused`` with its
code and the correlation data echoed, leave an audit row and a health
counter, and change nothing: the light tower stays green.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cmdkit import KIOSK, Keys, audit_rows, by_corr
from kiosktest import wait_until

from agent.wire.signing import KIND_CMD, sign

SECRET = "hunter2-do-not-log"
MAINT = {"mode": "maintenance"}


def _resigned(keys: Keys, doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = {**doc, **changes}
    return sign(doc, "admin-1", keys.admin, KIND_CMD)


Case = Callable[[Keys], tuple[str, Any]]
CASES: dict[str, tuple[Case, str]] = {
    "unsigned": (lambda k: ("set-mode", {key: v for key, v in k.envelope("set-mode", MAINT).items()
                                         if key not in ("sig", "key_id")}), "cmd.unsigned"),
    "sig_missing_only": (lambda k: ("set-mode", {key: v for key, v in k.envelope("set-mode", MAINT).items()
                                                 if key != "sig"}), "cmd.unsigned"),
    "tampered_args": (lambda k: ("set-mode", {**k.envelope("set-mode", {"mode": "in_service"}), "args": MAINT}),
                      "cmd.bad_signature"),
    "wrong_key_for_id": (lambda k: ("set-mode", sign(k.envelope("set-mode", MAINT), "admin-1", k.stranger,
                                                     KIND_CMD)), "cmd.bad_signature"),
    "garbage_sig": (lambda k: ("set-mode", {**k.envelope("set-mode", MAINT), "sig": "!!notbase64"}),
                    "cmd.bad_signature"),
    "config_domain_sig": (lambda k: ("set-mode", sign(k.envelope("set-mode", MAINT), "admin-1", k.admin,
                                                      "config")), "cmd.bad_signature"),
    "unknown_key": (lambda k: ("set-mode", k.envelope("set-mode", MAINT, key="stranger")), "cmd.unknown_key"),
    "operator_reboots": (lambda k: ("reboot", k.envelope("reboot", {"force": True}, key="operator")),
                         "cmd.forbidden"),
    "operator_updates_config": (lambda k: ("update-config", k.envelope(
        "update-config", {"config": "x", "version": 9}, key="operator")), "cmd.forbidden"),
    "expired": (lambda k: ("set-mode", k.envelope("set-mode", MAINT, ttl_s=60,
                                                  now_ms=_now() - 10 * 60_000)), "cmd.expired"),
    "not_yet_valid": (lambda k: ("set-mode", k.envelope("set-mode", MAINT, now_ms=_now() + 10 * 60_000)),
                      "cmd.not_yet_valid"),
    "other_kiosk": (lambda k: ("set-mode", k.envelope("set-mode", MAINT, kiosk="sim-0002")), "cmd.wrong_target"),
    "other_fleet": (lambda k: ("set-mode", k.envelope("set-mode", MAINT, fleet="south")), "cmd.wrong_target"),
    "not_json": (lambda k: ("set-mode", b"\xff{not json"), "cmd.malformed"),
    "json_array": (lambda k: ("set-mode", b"[1,2,3]"), "cmd.malformed"),
    "empty": (lambda k: ("set-mode", b""), "cmd.malformed"),
    "deep_nesting": (lambda k: ("set-mode", b"[" * 2000 + b"]" * 2000), "cmd.malformed"),
    "nonce_missing": (lambda k: ("set-mode", _resigned(k, {x: v for x, v in k.envelope("set-mode", MAINT).items()
                                                             if x != "nonce"})), "cmd.malformed"),
    "args_not_object": (lambda k: ("set-mode", _resigned(k, k.envelope("set-mode", MAINT), args=["maintenance"])),
                        "cmd.malformed"),
    "topic_mismatch": (lambda k: ("ping", k.envelope("set-mode", MAINT)), "cmd.malformed"),
    "lifetime_over_a_day": (lambda k: ("set-mode", k.envelope("set-mode", MAINT, ttl_s=3 * 86400)),
                            "cmd.malformed"),
    "oversized": (lambda k: ("set-mode", k.envelope("set-mode", {"mode": "maintenance", "pad": "x" * 5000})),
                  "cmd.oversized"),
    "unknown_command": (lambda k: ("self-destruct", k.envelope("self-destruct")), "cmd.unknown_command"),
    "bad_mode": (lambda k: ("set-mode", k.envelope("set-mode", {"mode": "party"})), "cmd.bad_arguments"),
    "missing_arg": (lambda k: ("set-mode", k.envelope("set-mode", {})), "cmd.bad_arguments"),
    "extra_secret_arg": (lambda k: ("set-mode", k.envelope("set-mode", {**MAINT, "password": SECRET})),
                         "cmd.bad_arguments"),
    # Signed "maintenance" last, a decoy first: a first-wins parser (an auditor's) would read in_service.
    "duplicate_key": (lambda k: ("set-mode", b'{"args":{"mode":"in_service"},'
                                 + json.dumps(k.envelope("set-mode", MAINT)).encode()[1:]), "cmd.malformed"),
    "duplicate_nested_key": (lambda k: ("set-mode", json.dumps(k.envelope("set-mode", MAINT)).encode().replace(
        b'{"mode": "maintenance"}', b'{"mode": "in_service", "mode": "maintenance"}')), "cmd.malformed"),
}


def _now() -> int:
    import time
    return int(time.time() * 1000)


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_with_code_audit_and_nothing_executed(shared: Any, case: str) -> None:
    build, code = CASES[case]
    name, payload = build(shared.keys)
    corr = shared.sender.send(name, payload)
    result = shared.results.wait_for(f"/cmd/{name}/result", by_corr(corr, terminal=True), timeout=30)
    assert result.data["status"] == "refused", result.data
    assert result.data["code"] == code, result.data
    # Echoed as the MQTT 5 property (an outbox that stores no properties
    # delivers terminal results with the hex copy in the payload only).
    assert getattr(result.properties, "CorrelationData", corr) == corr
    rows = wait_until(lambda: [r for r in audit_rows(shared.agent) if r["correlation"] == corr.hex()], 10,
                      message="audit row")
    assert [(r["outcome"], r["code"]) for r in rows] == [("refused", code)]
    assert SECRET not in json.dumps(rows) and SECRET not in shared.agent.log
    assert shared.agent.sim("light_tower", "status")["lit"] == {"red": False, "amber": False, "green": True}


def test_replayed_refused_and_counters_in_health(shared: Any) -> None:
    doc = shared.keys.envelope("ping")
    first = shared.sender.send("ping", doc)
    assert shared.results.wait_for("/cmd/ping/result", by_corr(first, terminal=True)).data["status"] == "succeeded"
    accepted = shared.results.wait_for("/cmd/ping/result", by_corr(first, status="accepted"))
    assert accepted.properties.CorrelationData == first      # progress goes straight through the uplink
    again = shared.sender.send("ping", doc)
    result = shared.results.wait_for("/cmd/ping/result", by_corr(again, terminal=True), timeout=30)
    assert (result.data["status"], result.data["code"]) == ("refused", "cmd.replayed")
    # Same nonce, re-signed with other content: still a replay (nonce is per kiosk).
    forged = shared.sender.send("ping", shared.keys.envelope("ping", nonce=doc["nonce"]))
    assert shared.results.wait_for("/cmd/ping/result", by_corr(forged, terminal=True)).data["code"] == "cmd.replayed"

    corr = shared.sender.send("get-health", shared.keys.envelope("get-health", key="operator"))
    health = shared.results.wait_for("/cmd/get-health/result", by_corr(corr, terminal=True)).data
    assert health["status"] == "succeeded", health
    counters = health["result"]["commands"]
    assert counters["refused_by"]["cmd.replayed"] >= 2
    assert counters["refused"] >= 2 and counters["accepted"] >= 2
    assert health["result"]["mode"] == "in_service"
    assert shared.agent.proc is not None and shared.agent.proc.poll() is None
    assert "Traceback" not in shared.agent.log
    assert KIOSK in health["kiosk"]


def test_a_bad_mode_is_answered_with_the_valid_ones(shared: Any) -> None:
    corr = shared.sender.send("set-mode", shared.keys.envelope("set-mode", {"mode": "party"}))
    result = shared.results.wait_for("/cmd/set-mode/result", by_corr(corr, terminal=True), timeout=30).data
    assert (result["status"], result["code"]) == ("refused", "cmd.bad_arguments")
    assert result["message"] == "argument 'mode' invalid: expected one of in_service, maintenance, out_of_service"


def test_an_oversized_desired_configuration_is_refused_unread(shared: Any) -> None:
    """config/desired has the commands' size limit too (4096 here), checked before parsing."""
    from agent.wire.contract import Topics

    topic = Topics("dev", KIOSK).config_desired
    doc = shared.keys.desired("# padding\n" * 500, 99)
    shared.sender.publish(topic, json.dumps(doc).encode(), retain=True)
    try:
        report = shared.results.wait_for("/config/reported", lambda d: d.get("code") == "cmd.oversized", timeout=30)
    finally:
        shared.sender.publish(topic, b"", retain=True)      # an empty retained message clears it
    assert report.data["status"] == "refused" and "limit 4096" in report.data.get("message", "")
    assert "dropped unread" in shared.agent.log
