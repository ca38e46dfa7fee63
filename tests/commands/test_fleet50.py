# SPDX-License-Identifier: Apache-2.0
"""`kioskctl fleet` over 50 real agent processes shows their true state (long mode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.long
def test_fifty_kiosks() -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "fleet50.py"
    spec = importlib.util.spec_from_file_location("fleet50", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["-n", "50", "--idle", "5"]) == 0
