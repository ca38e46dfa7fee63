# SPDX-License-Identifier: Apache-2.0
"""Power cuts: every transaction ``record()`` returned for survives; NORMAL would not.

``kill -9`` cannot tell a durable store from one that only looks durable
(the kernel still writes what the process wrote), so these tests run the
store on LazyFS (``lazyfs.py``), which loses every write not fsynced when
it is killed. 25 cuts in ``make test``, 200 with ``KIOSK_LONG=1``.

The harness proves its own teeth: the same store switched to
``synchronous=NORMAL`` loses acknowledged records within a few cuts.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from harness import PowerCutError, PowerCutRig

pytestmark = pytest.mark.skipif(shutil.which("fusermount3") is None or not Path("/dev/fuse").exists(),
                                reason="needs FUSE (/dev/fuse, fusermount3 from the fuse3 package)")


def _cuts(tmp_path: Path, rng: random.Random, cuts: int, sync: str) -> dict[str, int]:
    rig = PowerCutRig(tmp_path, sync=sync)
    summary: dict[str, int] = {}
    try:
        for _ in range(cuts):
            rig.cycle(rng)
            summary = rig.check()
        summary = rig.check(full=True)
    finally:
        rig.power_off()
    summary["cuts"] = rig.cycles
    return summary


def test_power_cuts_lose_no_acknowledged_transaction(tmp_path: Path, rng: random.Random) -> None:
    summary = _cuts(tmp_path, rng, 25, "FULL")
    assert summary["acknowledged"] > 0
    print(summary)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_200_power_cuts(tmp_path: Path, rng: random.Random) -> None:
    print(_cuts(tmp_path, rng, 200, "FULL"))


def test_harness_catches_synchronous_normal(tmp_path: Path, rng: random.Random) -> None:
    """With NORMAL a commit returns before the WAL is fsynced: a cut loses it."""
    with pytest.raises(PowerCutError) as caught:
        _cuts(tmp_path, rng, 20, "NORMAL")
    print(caught.value)
