# SPDX-License-Identifier: Apache-2.0
"""Simulators that speak the peripherals' real wire protocols on ptys.

    from hal.sim import SIMULATORS
    sim = SIMULATORS["printer"](dev_dir=run_dir / "dev")
    url = sim.start()              # give this URL to PrinterDevice

``hal.sim.coproc`` (the co-processor firmware on the MicroPython unix port)
lives here too but is not imported by this package: it needs the firmware.
"""

from __future__ import annotations

from hal.sim.base import PtySimulator
from hal.sim.idcard import IdCardSim, sample_card
from hal.sim.printer import PrinterSim
from hal.sim.scanner import ScannerSim

__all__ = ["SIMULATORS", "IdCardSim", "PrinterSim", "PtySimulator", "ScannerSim", "sample_card"]

SIMULATORS: dict[str, type[PtySimulator]] = {"idcard": IdCardSim, "printer": PrinterSim, "scanner": ScannerSim}
