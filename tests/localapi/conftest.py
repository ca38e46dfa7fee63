# SPDX-License-Identifier: Apache-2.0
"""One broker and one agent process with its local API, shared by a module's tests.

Tests that upset a device (paper out, door open) put it back before they end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apikit import RunningApi, api_config
from kiosktest import AgentProcess

from agent.sim.devbroker import DevBroker


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    workdir: Path = tmp_path_factory.mktemp("localapi")
    with DevBroker(workdir / "broker") as broker:
        config, port = api_config(workdir / "agent", broker.url)
        agent = AgentProcess(workdir / "agent", broker_url=broker.url, config_text=config.read_text()).start()
        try:
            yield RunningApi(agent, port, broker.url)
            assert agent.proc is not None and agent.proc.poll() is None, "the agent died:\n" + agent.log[-3000:]
            assert "Traceback" not in agent.log, agent.log[-5000:]
        finally:
            agent.terminate()
