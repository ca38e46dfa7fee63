# SPDX-License-Identifier: Apache-2.0
"""systemd/kiosk-ledger@.service: verifies cleanly and is sandboxed like the agent's unit.

``systemd-analyze verify`` on an instance (``kiosk-ledger@w1``) with the
shipped program path replaced by this checkout's interpreter (the only
difference), and ``systemd-analyze security --offline=true`` exposure at
most 1.5, the kiosk agent's own limit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "kiosk-ledger@.service"
SHIPPED = "/opt/kiosk-agent/bin/kiosk-ledger"


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed (Debian package: systemd)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def _instance(tmp_path: Path, text: str) -> Path:
    copy = tmp_path / "kiosk-ledger@w1.service"
    copy.write_text(text.replace(SHIPPED, f"{sys.executable} -m fleet.ledger.cli"))
    return copy


def test_the_ledger_unit_verifies_cleanly_and_a_broken_one_does_not(tmp_path: Path) -> None:
    shipped = UNIT.read_text()
    assert f"ExecStart={SHIPPED} serve --config /etc/kiosk-ledger/%i.toml" in shipped
    assert f"ExecStartPre={SHIPPED} migrate --config /etc/kiosk-ledger/%i.toml" in shipped
    result = _analyze("verify", str(_instance(tmp_path, shipped)))
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and out == "", out
    broken = _analyze("verify", str(_instance(tmp_path, shipped.replace("NoNewPrivileges=", "NoNewPrivilege="))))
    assert "NoNewPrivilege" in broken.stdout + broken.stderr


def test_the_ledger_unit_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    result = _analyze("security", "--offline=true", str(_instance(tmp_path, UNIT.read_text())))
    match = re.search(r"Overall exposure level for kiosk-ledger@w1\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 1.5, result.stdout
    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["RestartPreventExitStatus"] == "78" and settings["User"] == "kiosk-ledger"
