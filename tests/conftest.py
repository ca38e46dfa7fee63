# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a real Mosquitto per test, agent processes, subscribers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from agent.sim.devbroker import DevBroker, find_mosquitto
from kiosktest import AgentProcess, Subscriber

LONG = os.environ.get("KIOSK_LONG") == "1"


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
