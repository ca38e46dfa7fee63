# SPDX-License-Identifier: Apache-2.0
"""Random runs print their seed on failure, and the seed replays them (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROBE = '''
import os
from hypothesis import given, settings, strategies as st

def test_draws(rng):
    print("DRAWN", rng.randrange(10**9))
    assert False

@settings(max_examples=20, database=None)
@given(st.integers(0, 10**9))
def test_hypothesis(n):
    with open(os.environ["PROBE_DRAWS"], "a") as out:
        out.write(f"{n}\\n")
    assert n < 0
'''


def _run(tmp_path: Path, seed: str | None) -> tuple[str, str]:
    """(pytest's output, what the Hypothesis test drew) for one run of the failing probe."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    draws = tmp_path / f"draws-{seed}.txt"
    env = {k: v for k, v in os.environ.items() if k != "KIOSK_TEST_SEED"}
    env.update(PROBE_DRAWS=str(draws), PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                                                    env.get("PYTHONPATH", "")]))
    if seed is not None:
        env["KIOSK_TEST_SEED"] = seed
    # -p conftest: this suite's conftest.py as a plugin, for a probe outside the suite.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                           "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
                          capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stdout, draws.read_text()


def test_a_failure_names_the_seed_and_the_seed_replays_it(tmp_path: Path) -> None:
    first, first_draws = _run(tmp_path, None)
    header = re.search(r"KIOSK_TEST_SEED=(\d+) \(random runs replay", first)
    assert header, first
    seed = header.group(1)
    for test in ("test_draws", "test_hypothesis"):
        assert re.search(rf"replay: KIOSK_TEST_SEED={seed} \S+ -m pytest '\S*test_probe.py::{test}'", first), first
    again, again_draws = _run(tmp_path, seed)
    assert f"KIOSK_TEST_SEED={seed} (random runs replay" in again
    drawn = re.findall(r"DRAWN (\d+)", first)
    assert drawn and drawn == re.findall(r"DRAWN (\d+)", again)
    assert first_draws and first_draws == again_draws            # Hypothesis drew the same examples
