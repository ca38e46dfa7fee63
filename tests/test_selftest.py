# SPDX-License-Identifier: Apache-2.0
"""``kiosk-agent selftest`` from outside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.sim.devrun import write_sim_config


def selftest(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "selftest", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=120)


def test_selftest_passes_on_the_simulation_config(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path / "agent.toml", "mqtt://127.0.0.1:1", tmp_path / "state")
    proc = selftest(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-test passed" in proc.stdout
    for device in ("door", "tamper", "presence", "light_tower"):
        assert device in proc.stdout
    report = json.loads(selftest(config, "--json").stdout)
    assert report and all(r["passed"] for r in report)


def test_selftest_fails_and_names_a_missing_printer(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path / "agent.toml", "mqtt://127.0.0.1:1", tmp_path / "state")
    config.write_text(config.read_text() + f'\n[devices.printer]\nurl = "{tmp_path}/dev/no-printer"\n')
    proc = selftest(config)
    assert proc.returncode == 1, proc.stdout
    assert "self-test FAILED: printer" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("printer "))
    assert "FAIL" in row and "no-printer" in row


def test_every_peripheral_is_in_the_simulation(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path / "agent.toml", "mqtt://127.0.0.1:1", tmp_path / "state")
    report = {r["device"]: r for r in json.loads(selftest(config, "--json").stdout)}
    assert set(report) == {"door", "tamper", "presence", "light_tower", "idcard", "printer", "scanner",
                           "camera", "coproc"}
