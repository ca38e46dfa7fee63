# SPDX-License-Identifier: Apache-2.0
"""``kiosk-agent selftest``: exercise every configured peripheral, print a table.

Runs the same ``Peripherals`` the daemon runs (simulators included with the
sim backend), without the broker: an installer runs it before the service
is enabled, and ``kiosk-provision`` runs it as its last check.

    $ kiosk-agent selftest --config /etc/kiosk-agent/agent.toml
    [1/7] door ... pass
    ...
    device        result  reason
    printer       FAIL    offline: /dev/kiosk/printer: [Errno 2] No such file or directory
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, TextIO

from agent.config import Config
from agent.runtime.peripherals import Peripherals
from agent.wire.selftest import format_table  # the one definition, shared with kioskctl
from hal.device import UNKNOWN, SelftestResult

__all__ = ["run_selftest", "format_table"]

SETTLE_S = 5.0


async def _selftest(cfg: Config, out: TextIO) -> list[SelftestResult]:
    rig = Peripherals(cfg, on_event=lambda _e: None)
    rig.build()
    rig.start()
    try:
        # Serial devices open and probe on their own threads; give them a
        # moment to leave "unknown" so a slow USB adapter is not a failure.
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            if all(device.status().state != UNKNOWN for device in rig.devices.values()):
                break
            await asyncio.sleep(0.1)
        results = []
        total = len(rig.devices)
        for i, (name, device) in enumerate(rig.devices.items(), 1):
            print(f"[{i}/{total}] {name} ...", end=" ", file=out, flush=True)
            try:
                result = await asyncio.get_running_loop().run_in_executor(None, device.selftest)
            except Exception as exc:  # noqa: BLE001 - a crash is a failure, with its reason
                result = SelftestResult(name, False, f"{exc.__class__.__name__}: {exc}")
            print("pass" if result.passed else f"FAIL ({result.reason})", file=out, flush=True)
            results.append(result)
        return results
    finally:
        rig.stop()


def run_selftest(cfg: Config, *, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """Exit status: 0 when every peripheral passed, 1 otherwise."""
    progress = sys.stderr if as_json else out
    results = asyncio.run(_selftest(cfg, progress))
    if as_json:
        payload: list[dict[str, Any]] = [{"device": r.device, "passed": r.passed, "reason": r.reason,
                                          **({"details": r.details} if r.details else {})} for r in results]
        print(json.dumps(payload, ensure_ascii=False), file=out)
    else:
        print("\n" + format_table(results), file=out)
        failed = [r.device for r in results if not r.passed]
        print(f"\nself-test {'FAILED: ' + ', '.join(failed) if failed else 'passed'}", file=out)
    return 0 if all(r.passed for r in results) else 1
