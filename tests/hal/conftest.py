# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the HAL tests: simulators on real ptys, an event recorder.

Nothing is mocked: drivers open the simulators' ptys through pyserial.
Waits poll with generous deadlines (a loaded 2-core machine runs several
suites at once); no test asserts a tight timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from haltest import Recorder

from hal.sim import IdCardSim, PrinterSim, ScannerSim


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def dev_dir(tmp_path: Path) -> Path:
    return tmp_path / "dev"


@pytest.fixture
def idcard_sim(dev_dir: Path) -> Iterator[IdCardSim]:
    sim = IdCardSim(dev_dir=dev_dir)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def printer_sim(dev_dir: Path) -> Iterator[PrinterSim]:
    sim = PrinterSim(dev_dir=dev_dir)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def scanner_sim(dev_dir: Path) -> Iterator[ScannerSim]:
    sim = ScannerSim(dev_dir=dev_dir, suffix="CRLF")
    sim.start()
    yield sim
    sim.stop()
