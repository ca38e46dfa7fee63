# SPDX-License-Identifier: Apache-2.0
"""The commands themselves, through a real agent: results, progress, redaction."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cmdkit import by_corr

ID_NUMBER = "11010519491231002X"


def run(shared: Any, name: str, args: dict[str, Any] | None = None, key: str = "operator") -> dict[str, Any]:
    corr = shared.sender.send(name, shared.keys.envelope(name, args, key=key))
    return shared.results.wait_for(f"/cmd/{name}/result", by_corr(corr, terminal=True), timeout=60).data  # type: ignore[no-any-return]


def test_ping_health_selftest(shared: Any) -> None:
    assert run(shared, "ping")["result"]["pong"] is True
    health = run(shared, "get-health")["result"]
    assert health["reason"] == "request" and "commands" in health
    selftest = run(shared, "selftest")
    assert selftest["status"] == "succeeded", selftest
    devices = {d["device"]: d["passed"] for d in selftest["result"]["devices"]}
    assert devices["light_tower"] is True and devices["door"] is True
    corr = selftest["correlation"]
    progress = [m.data for m in shared.results.matching("/cmd/selftest/result",
                                                        lambda d: d.get("correlation") == corr)]
    assert progress[0]["status"] == "accepted"
    assert any(p["status"] == "in_progress" and "progress" in p for p in progress)


def test_collect_logs_is_redacted(shared: Any) -> None:
    # A command topic level that looks like an ID number is never echoed: results go to cmd/_invalid.
    corr = shared.sender.send(ID_NUMBER, b"{}")
    assert shared.results.wait_for("/cmd/_invalid/result", by_corr(corr, terminal=True)).data["code"] == \
        "cmd.unsigned"
    # Unauthenticated fields that reach the log are masked too.
    corr = shared.sender.send("ping", {"key_id": ID_NUMBER, "nonce": ID_NUMBER, "sig": "x"})
    assert shared.results.wait_for("/cmd/ping/result", by_corr(corr, terminal=True)).data["status"] == "refused"
    logs = run(shared, "collect-logs", {"lines": 50})
    assert logs["status"] == "succeeded" and logs["result"]["count"] > 0
    text = "\n".join(logs["result"]["lines"])
    assert "[redacted]" in text and ID_NUMBER not in text and ID_NUMBER not in shared.agent.log
    assert not [m for m in shared.results.messages if ID_NUMBER in m.topic or ID_NUMBER.encode() in m.payload]


def test_print_test_page_and_firmware_codes(shared: Any) -> None:
    devices = run(shared, "get-health")["result"]["peripherals"]
    printed = run(shared, "print-test-page")
    if "printer" in devices:
        assert printed["status"] == "succeeded", printed
    else:
        assert printed["code"] == "cmd.no_printer", printed
    image = b"not really firmware"
    fw = run(shared, "firmware-update", {"image": base64.b64encode(image).decode(),
                                         "signature": base64.b64encode(b"\0" * 64).decode(),
                                         "sha256": hashlib.sha256(image).hexdigest()}, key="admin")
    assert fw["status"] == "failed"
    # No firmware key configured: the driver refuses every image; no co-processor: a clear code.
    assert fw["code"] == ("hal.coproc.signature" if "coproc" in devices else "cmd.no_coproc"), fw
    bad_sum = run(shared, "firmware-update", {"image": base64.b64encode(image).decode(),
                                              "signature": base64.b64encode(b"\0" * 64).decode(),
                                              "sha256": "0" * 64}, key="admin")
    assert bad_sum["code"] in ("firmware.checksum_mismatch", "cmd.no_coproc"), bad_sum
