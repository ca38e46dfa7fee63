# SPDX-License-Identifier: Apache-2.0
"""A reload never cuts a citizen's session short: a desired configuration
that changes ``[commands]`` applies in place, and a SIGHUP change that needs
a component restart waits for the session to end (the agent in-process, as
in test_cmd_sessions, because the session engine's API is Python)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from cmdkit import Keys, Sender
from kiosktest import Subscriber, wait_until_async
from test_remote_config import DESIRED

from agent.config import load_config
from agent.runtime.daemon import Agent
from agent.sessions.engine import NotInService
from agent.sim.devbroker import DevBroker
from agent.sim.devrun import write_sim_config


def test_reload_waits_for_the_citizen_session(broker: DevBroker, subscriber: Subscriber, tmp_path: Path) -> None:
    keys = Keys()
    config = write_sim_config(tmp_path / "agent.toml", broker.url, tmp_path / "state",
                              overrides={"interval_s": "300"})
    config.write_text(config.read_text() + keys.config(skew=60))
    sender = Sender(broker.url)

    def applied(version: int) -> bool:
        return bool(subscriber.matching("/config/reported", lambda d: d.get("desired_version") == version
                                        and d.get("status") == "applied"))

    def born_at(site: str) -> bool:
        return bool(subscriber.matching("/state", lambda d: d.get("online") and d.get("site") == site))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        agent = Agent(load_config(config))
        run = asyncio.create_task(agent.run())
        try:
            await wait_until_async(lambda: agent.session_engine is not None and agent.uplink is not None
                         and agent.uplink.connected, 60, message="the agent up and connected")
            engine = agent.session_engine
            assert engine is not None
            events: list[dict[str, Any]] = []
            engine.add_listener(events.append)
            await engine.begin(engine.services()[0]["id"])       # a citizen starts
            session = engine.session

            # New operator policy from the fleet, mid-session: applied in place.
            wider = config.read_text().replace("max_clock_skew_s = 60", "max_clock_skew_s = 120")
            assert wider != config.read_text()
            await loop.run_in_executor(None, sender.publish, DESIRED,
                                       json.dumps(keys.desired(wider, 2)).encode(), True)
            await wait_until_async(lambda: applied(2), 30, message="version 2 applied")
            assert agent.cfg.commands.max_clock_skew_s == 120
            assert engine.session is session and not [e for e in events if e.get("event") == "ended"]

            # A change that needs a restart waits for the citizen.
            config.write_text(wider.replace('site = "Simulated outlet, bench 1"', 'site = "Moved to bench 2"'))
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until_async(lambda: agent.restart_pending, 10, message="the restart deferred")
            await asyncio.sleep(1.0)             # it must stay deferred, however long the session takes
            assert engine.session is session and not born_at("Moved to bench 2")
            assert not [e for e in events if e.get("event") == "ended"]

            await engine.cancel()                # the citizen walks away ...
            with pytest.raises(NotInService, match="restarting"):
                await engine.begin(engine.services()[0]["id"])   # ... and nobody new starts meanwhile

            await wait_until_async(lambda: born_at("Moved to bench 2"), 30, message="the restart after the session")
            ended = [e for e in events if e.get("event") == "ended"]
            assert ended and ended[0].get("outcome") == "abandoned", ended
        finally:
            agent.request_stop()
            await asyncio.wait_for(run, 30)

    try:
        asyncio.run(scenario())
    finally:
        sender.close()
    subscriber.assert_valid()
