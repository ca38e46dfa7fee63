# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a real Mosquitto per test, agent processes, subscribers, the run's seed.

Random runs draw from one seed per run: ``KIOSK_TEST_SEED`` when set, else a
fresh one. It is printed in the report header and beside every failure of a
test that used it (the ``rng`` and ``seed`` fixtures, and Hypothesis, which
is forced to the same seed), so a failure is replayed with

    KIOSK_TEST_SEED=<seed> .venv/bin/python -m pytest <node id>
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kiosktest import AgentProcess, Subscriber

from agent.sim.devbroker import DevBroker, find_mosquitto

LONG = os.environ.get("KIOSK_LONG") == "1"
SEED_VAR = "KIOSK_TEST_SEED"
SEED = int(os.environ.get(SEED_VAR) or random.SystemRandom().randrange(2**32))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_seed", None) is None:
        from hypothesis import core
        core.global_force_seed = SEED       # what --hypothesis-seed does, from the run's seed


def pytest_report_header(config: pytest.Config) -> str:
    return f"{SEED_VAR}={SEED} (random runs replay with this seed)"


def seed_for(nodeid: str) -> int:
    """The seed a test draws from: the run's seed and the test's id, so replaying one test alone gives its stream."""
    return zlib.crc32(nodeid.encode()) ^ SEED




@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """This test's seed (printed on failure); for a subprocess that takes ``--seed``."""
    return seed_for(request.node.nodeid)


@pytest.fixture
def rng(seed: int) -> random.Random:
    """A ``random.Random`` seeded from the run's seed (printed on failure)."""
    return random.Random(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    random_run = "seed" in getattr(item, "fixturenames", ()) or \
        getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
    if report.failed and random_run:
        own = f" (this test's seed {seed_for(item.nodeid)})" if "seed" in getattr(item, "fixturenames", ()) else ""
        report.sections.append(("seed", f"replay: {SEED_VAR}={SEED} .venv/bin/python -m pytest '{item.nodeid}'{own}"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG:
        return
    skip = pytest.mark.skip(reason="long mode: run with KIOSK_LONG=1 (make test-long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[DevBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; `make test` installs it (apt-get install mosquitto)")
    with DevBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def subscriber(broker: DevBroker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.url, "kiosk/#")
    try:
        yield sub
    finally:
        sub.close()


@pytest.fixture
def agent_factory(tmp_path: Path, broker: DevBroker) -> Iterator[type[AgentProcess]]:
    started: list[AgentProcess] = []

    class Factory(AgentProcess):
        def __init__(self, name: str = "agent", **kwargs: object) -> None:
            kwargs.setdefault("broker_url", broker.url)
            super().__init__(tmp_path / name, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Factory
    for proc in started:
        proc.kill()
