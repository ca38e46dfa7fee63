# SPDX-License-Identifier: Apache-2.0
"""The local API as a component: off when configured so, patient with a taken port, renewed on restart."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from apikit import ApiClient, RunningApi, api_config, read_token, ws_url
from kiosktest import AgentProcess, Subscriber, wait_until

from agent.sim.devbroker import DevBroker


def _online(sub: Subscriber) -> None:
    sub.wait_for("/state", lambda d: d.get("online") is True, timeout=20)


def test_a_taken_port_leaves_the_agent_serving_until_it_frees(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    with DevBroker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.url, "kiosk/#")
        config, _ = api_config(tmp_path / "agent", broker.url, port=port)
        agent = AgentProcess(tmp_path / "agent", broker_url=broker.url, config_text=config.read_text()).start()
        try:
            _online(sub)
            token_file = agent.state_dir / "local-api.token"
            wait_until(lambda: "cannot listen on 127.0.0.1" in agent.log, 15, message="the bind warning")
            assert not token_file.exists()          # no token for a server that is not there
            blocker.close()
            token = read_token(agent.state_dir, timeout=30)       # retried every 10 s
            with ApiClient(ws_url(port, "kiosk", token)) as client:
                assert client.command("Kiosk.Status").payload["online"] is True
            assert agent.proc is not None and agent.proc.poll() is None
        finally:
            blocker.close()
            assert agent.terminate() == 0
            sub.close()
        assert not (agent.state_dir / "local-api.token").exists()     # removed at a clean stop


def test_disabled_means_no_listener_and_no_token(tmp_path: Path) -> None:
    with DevBroker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.url, "kiosk/#")
        config, port = api_config(tmp_path / "agent", broker.url, extra="enabled = false\n")
        agent = AgentProcess(tmp_path / "agent", broker_url=broker.url, config_text=config.read_text()).start()
        try:
            _online(sub)
            assert not (agent.state_dir / "local-api.token").exists()
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
        finally:
            agent.terminate()
            sub.close()


def test_a_component_restart_brings_a_new_token_and_the_old_one_stops_working(tmp_path: Path) -> None:
    with DevBroker(tmp_path / "broker") as broker:
        config, port = api_config(tmp_path / "agent", broker.url)
        agent = AgentProcess(tmp_path / "agent", broker_url=broker.url, config_text=config.read_text()).start()
        try:
            api = RunningApi(agent, port, broker.url)
            old = api.token
            with api.client("kiosk") as client:
                assert client.command("Kiosk.Status").code == "success"
            # A change outside the hot-reloadable tables restarts the components in-process
            # ([local_api] is the file's last table).
            assert agent.config.read_text().rstrip().endswith(f"port = {port}")
            agent.config.write_text(agent.config.read_text() + "max_in_flight = 8\n")
            agent.signal(signal.SIGHUP)
            new = wait_until(lambda: (t := _token_or_none(agent.state_dir)) not in (None, old) and t, 30,
                             message="a new token after the restart")
            with ApiClient(ws_url(port, "kiosk", new)) as client:
                caps = client.command("Common.Capabilities").payload
                assert {i["maximumRequests"] for i in caps["interfaces"]} == {8}
            from websockets.exceptions import InvalidStatus
            with pytest.raises(InvalidStatus):
                ApiClient(ws_url(port, "kiosk", old))
        finally:
            agent.terminate()


def _token_or_none(state_dir: Path) -> str | None:
    try:
        return (state_dir / "local-api.token").read_text().strip() or None
    except FileNotFoundError:
        return None
