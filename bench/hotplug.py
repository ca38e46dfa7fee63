# SPDX-License-Identifier: Apache-2.0
"""Hot-plug timing of the serial drivers: unplug to ``*_offline`` alarm, replug to OK.

The behaviour (the alarm is raised, the device comes back, the others keep
serving) is tested in tests/hal/test_hal_hotplug.py; how fast is measured
here, so a loaded test machine cannot fail the suite on a figure. Each device
runs on its simulator's pty, as in the tests, and is unplugged ``--rounds``
times, staying away ``--away`` seconds each time (the backoff grows).

    python bench/hotplug.py [--rounds 3] [--away 1.0]

Budgets: alarm within 2 s of the unplug; OK again within 5 s of the replug.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hal.device import DeviceStatus
from hal.idcard import IdCardDevice
from hal.printer import PrinterDevice
from hal.scanner import ScannerDevice
from hal.sim import IdCardSim, PrinterSim, ScannerSim

ALARM_BUDGET_S = 2.0
BACK_BUDGET_S = 5.0
OK = "ok"


def _seconds_until(predicate: Callable[[], bool], limit: float) -> float:
    """Seconds until ``predicate`` holds (``inf`` if not within ``limit``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            return float("inf")
        time.sleep(0.005)
    return time.monotonic() - start


def _alarmed(status: Callable[[], DeviceStatus], alarm: str) -> bool:
    return alarm in status().alarms


def _serving(status: Callable[[], DeviceStatus]) -> bool:
    now = status()
    return now.state == OK and not now.alarms


def measure(rounds: int, away_s: float) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        dev_dir = Path(tmp) / "dev"
        sims: dict[str, Any] = {"idcard": IdCardSim(dev_dir=dev_dir), "printer": PrinterSim(dev_dir=dev_dir),
                                "scanner": ScannerSim(dev_dir=dev_dir, suffix="CRLF")}
        for sim in sims.values():
            sim.start()
        devices: dict[str, tuple[Any, str]] = {
            "idcard": (IdCardDevice("idcard", sims["idcard"].url, poll_interval_s=0.2), "idcard_offline"),
            "printer": (PrinterDevice("printer", sims["printer"].url, poll_interval_s=2.0, reply_timeout_s=1.5),
                        "printer_offline"),
            "scanner": (ScannerDevice("scanner", sims["scanner"].url), "scanner_offline"),
        }
        figures: dict[str, dict[str, float]] = {}
        try:
            for dev, _alarm in devices.values():
                dev.start(lambda _event: None)
            for name, (dev, alarm) in devices.items():
                _seconds_until(functools.partial(_serving, dev.status), 10)
                alarm_s, back_s = [], []
                for _ in range(rounds):
                    sims[name].unplug()
                    alarm_s.append(_seconds_until(functools.partial(_alarmed, dev.status, alarm), 10))
                    time.sleep(away_s)
                    sims[name].replug()
                    back_s.append(_seconds_until(functools.partial(_serving, dev.status), 15))
                figures[name] = {"alarm_max_s": max(alarm_s), "back_max_s": max(back_s)}
        finally:
            for dev, _alarm in devices.values():
                dev.stop()
            for sim in sims.values():
                sim.stop()
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--away", type=float, default=1.0, help="seconds unplugged each time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)      # the drivers log each unplug: not figures
    figures = measure(args.rounds, args.away)
    ok = all(f["alarm_max_s"] <= ALARM_BUDGET_S and f["back_max_s"] <= BACK_BUDGET_S for f in figures.values())
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{'device':10}{'unplug to alarm (s)':>22}{'replug to OK (s)':>20}")
        for name, f in figures.items():
            print(f"{name:10}{f['alarm_max_s']:22.2f}{f['back_max_s']:20.2f}")
        print(f"budget: alarm <= {ALARM_BUDGET_S:g} s, back <= {BACK_BUDGET_S:g} s (max of {args.rounds} rounds): "
              + ("within budget" if ok else "OVER BUDGET"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
