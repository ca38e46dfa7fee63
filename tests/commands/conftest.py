# SPDX-License-Identifier: Apache-2.0
"""One broker and one configured agent shared by a module's tests (they are many and cheap)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cmdkit import RESULTS, Keys, Sender, start_agent, wait_online
from kiosktest import AgentProcess, Subscriber

from agent.sim.devbroker import DevBroker


class Shared:
    def __init__(self, broker: DevBroker, agent: AgentProcess, keys: Keys, results: Subscriber,
                 sender: Sender) -> None:
        self.broker, self.agent, self.keys, self.results, self.sender = broker, agent, keys, results, sender


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    root: Path = tmp_path_factory.mktemp("cmd")
    keys = Keys()
    started: list[AgentProcess] = []
    with DevBroker(root / "broker") as broker:
        class Factory(AgentProcess):
            def __init__(self, name: str = "agent", **kwargs: Any) -> None:
                kwargs.setdefault("broker_url", broker.url)
                super().__init__(root / name, **kwargs)
                started.append(self)

        results = Subscriber(broker.url, RESULTS, "kiosk/v1/+/+/state", "kiosk/v1/+/+/config/reported")
        agent = start_agent(Factory, keys)
        sender = Sender(broker.url)
        try:
            wait_online(results)
            yield Shared(broker, agent, keys, results, sender)
        finally:
            sender.close()
            for proc in started:
                proc.kill()
            results.close()
