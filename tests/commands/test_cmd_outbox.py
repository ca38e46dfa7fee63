# SPDX-License-Identifier: Apache-2.0
"""Terminal results through the real durable outbox (agent/store/outbox.py).

Until the daemon wires ``Agent.outbox``, the agent processes send results
straight through the uplink; this checks, in-process with the real Store,
Uplink, Outbox and broker, that once it is wired a terminal result queued
while offline survives a restart of the whole stack and arrives with its
correlation id in the payload.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from kiosktest import Subscriber

from agent.config import load_config
from agent.control.commands import ResultSender
from agent.runtime.daemon import Agent
from agent.sim.devbroker import DevBroker
from agent.sim.devrun import write_sim_config
from agent.store.database import Store
from agent.uplink.connection import Uplink
from agent.wire.contract import encode, envelope

outbox_module = pytest.importorskip("agent.store.outbox")


async def _stack(agent: Agent, *, connect: bool) -> None:
    agent.store = Store.open(agent.cfg.storage.dir)
    agent.uplink = Uplink(agent.cfg.mqtt)
    agent.outbox = outbox_module.Outbox(agent.store, agent.uplink)  # type: ignore[attr-defined]
    await agent.outbox.start()  # type: ignore[attr-defined]
    if connect:
        await agent.uplink.start()


async def _teardown(agent: Agent, *, connected: bool) -> None:
    await agent.outbox.stop()  # type: ignore[attr-defined]
    assert agent.uplink is not None and agent.store is not None
    if connected:
        await agent.uplink.stop()
    agent.store.close()


def test_terminal_result_survives_restart_through_the_outbox(broker: DevBroker, subscriber: Subscriber,
                                                             tmp_path: Path) -> None:
    config = write_sim_config(tmp_path / "agent.toml", broker.url, tmp_path / "state")
    cfg = load_config(config)
    corr = os.urandom(8)
    payload = encode(envelope(cfg.kiosk.id, name="ping", status="succeeded", correlation=corr.hex()))
    topic = f"kiosk/v1/{cfg.kiosk.fleet}/{cfg.kiosk.id}/cmd/ping/result"

    async def offline_then_restart() -> None:
        agent = Agent(cfg)
        await _stack(agent, connect=False)           # offline: the uplink never connects
        assert agent.uplink is not None
        await ResultSender(agent.uplink, agent.outbox).send(topic, payload, terminal=True,
                                                            correlation=corr)   # durable on return
        await _teardown(agent, connected=False)
        agent = Agent(cfg)                           # a new process's worth of objects
        await _stack(agent, connect=True)
        assert agent.uplink is not None and await agent.uplink.wait_connected(30)
        assert await agent.outbox.wait_drained(30)   # type: ignore[attr-defined]
        await _teardown(agent, connected=True)

    asyncio.run(offline_then_restart())
    got = subscriber.wait_for("/cmd/ping/result", lambda d: d.get("correlation") == corr.hex(), timeout=30)
    assert got.data["status"] == "succeeded"
