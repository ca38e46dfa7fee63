# SPDX-License-Identifier: Apache-2.0
"""A screen that sends and never reads is held back, and leaves nothing behind when it goes.

The agent runs in-process (as ``kiosk-agent run`` builds it, simulated
peripherals, real Mosquitto) so the test can look at the server's own
connection table after the client vanished.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from apikit import API_SERVICES
from kiosktest import wait_until_async
from sessions.sesskit import BackOffice, running_agent, session_config
from websockets.asyncio.client import connect

from agent.config import load_config
from agent.sim.devbroker import DevBroker, free_port

COMMANDS = 200_000


def test_a_client_that_never_reads_is_held_back_and_forgotten(tmp_path: Path, broker: DevBroker) -> None:
    port = free_port()
    cfg = load_config(session_config(tmp_path, broker.url, BackOffice(tmp_path / "bo"),
                                     extra=API_SERVICES + f"\n[local_api]\nport = {port}\n"))

    async def scenario() -> None:
        async with running_agent(cfg) as (agent, _engine):
            server = agent.local_api
            assert server is not None
            url = f"ws://127.0.0.1:{port}/xfs4iot/v1.0/kiosk?token={server.token}"
            # max_queue=1: this client's library stops reading the socket after one frame.
            stubborn = await connect(url, max_queue=1)
            frame = json.dumps({"header": {"name": "Kiosk.Status", "requestId": 1, "type": "command"}})

            async def flood() -> int:
                sent = 0
                for rid in range(1, COMMANDS + 1):
                    await stubborn.send(frame.replace('"requestId": 1', f'"requestId": {rid}'))
                    sent += 1
                return sent

            sender = asyncio.create_task(flood())
            # The server stops reading a client 2,000 answers behind: once it is that far behind, the
            # sends stall (the socket buffers take what they can) and the queue stops growing.
            def behind() -> bool:
                return sender.done() or any(conn.out.qsize() >= 2000 for conn in server.connections)

            await wait_until_async(behind, 60, message="2,000 answers queued")
            done, _ = await asyncio.wait({sender}, timeout=5)
            assert not done, f"{COMMANDS} commands went through to a client that reads nothing"
            assert len(server.connections) == 1
            queued = next(iter(server.connections)).out.qsize()
            assert 2000 <= queued < 2100, queued       # held back, not piling up
            sender.cancel()
            assert stubborn.transport is not None
            stubborn.transport.abort()          # gone without a close handshake
            await wait_until_async(lambda: not server.connections, 30, message="the connection forgotten")
            assert server.driver is None
            # The next screen is served, and drives.
            async with connect(url) as fresh:
                await fresh.send(json.dumps({"header": {"name": "Kiosk.BeginSession", "requestId": 1,
                                                        "type": "command"}, "payload": {"serviceId": "pay"}}))
                ack = json.loads(await asyncio.wait_for(fresh.recv(), 10))
                assert ack["header"]["status"] is None
                step = json.loads(await asyncio.wait_for(fresh.recv(), 10))
                assert step["payload"]["step"] == "confirm"

    asyncio.run(scenario())
