# SPDX-License-Identifier: Apache-2.0
"""Commands against the real session engine, with the agent in-process (its
UI API is Python, not MQTT): maintenance turns the next citizen away, and a
reboot waits for the citizen being served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cmdkit import Keys, Sender, by_corr
from kiosktest import Subscriber, wait_until_async

from agent.config import load_config
from agent.runtime.daemon import Agent
from agent.sim.devbroker import DevBroker
from agent.sim.devrun import write_sim_config


def test_maintenance_refuses_citizens_and_reboot_waits_for_the_session(
        broker: DevBroker, subscriber: Subscriber, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sessions.engine import NotInService

    keys = Keys()
    marker = tmp_path / "rebooted"
    # The stop below lands while the reboot command still runs, as systemd's
    # SIGTERM does on a kiosk: its result must reach the fleet all the same.
    monkeypatch.setenv("KIOSK_REBOOT_COMMAND", f"sh -c 'echo reboot >> {marker}; sleep 1'")
    config = write_sim_config(tmp_path / "agent.toml", broker.url, tmp_path / "state",
                              overrides={"interval_s": "300"})
    config.write_text(config.read_text() + keys.config())
    cfg = load_config(config)
    sender = Sender(broker.url)

    def command(name: str, args: dict[str, object] | None = None) -> bytes:
        return sender.send(name, keys.envelope(name, args))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        agent = Agent(cfg)
        run = asyncio.create_task(agent.run())
        try:
            await wait_until_async(lambda: agent.session_engine is not None and agent.uplink is not None
                         and agent.uplink.connected, 60, message="the agent up and connected")
            engine = agent.session_engine
            assert engine is not None
            service = engine.services()[0]["id"]

            await loop.run_in_executor(None, command, "set-mode", {"mode": "maintenance"})
            await wait_until_async(lambda: agent.mode == "maintenance", 30, message="maintenance")
            with pytest.raises(NotInService):
                await engine.begin(service)

            await loop.run_in_executor(None, command, "set-mode", {"mode": "in_service"})
            await wait_until_async(lambda: agent.mode == "in_service", 30, message="in service")
            await engine.begin(service)                 # a citizen starts
            corr = await loop.run_in_executor(None, command, "reboot")
            await wait_until_async(
                lambda: subscriber.matching("/cmd/reboot/result", by_corr(corr, status="in_progress")),
                30, message="reboot deferred")
            await asyncio.sleep(1.0)
            assert not marker.exists() and engine.session is not None
            await engine.cancel()                       # the citizen walks away
            await wait_until_async(marker.exists, 30, message="the reboot after the session")
            assert engine.session is None
        finally:
            agent.request_stop()
            await asyncio.wait_for(run, 30)

    try:
        asyncio.run(scenario())
    finally:
        sender.close()
    assert subscriber.wait_for("/cmd/reboot/result", lambda d: d["status"] == "succeeded", timeout=30)
    subscriber.assert_valid()
