# SPDX-License-Identifier: Apache-2.0
"""Test helpers: a schema-checking subscriber and an agent in a real process.

Every payload a ``Subscriber`` receives under ``kiosk/v1/`` is validated
against the contract's JSON Schema for its topic, so every test that sees a
message also checks the contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config import DEFAULT_SIM_CONFIG
from agent.sim.devrun import write_sim_config
from agent.wire.contract import parse_topic, validate

__all__ = ["Subscriber", "AgentProcess", "schema_for_topic", "wait_until", "wait_until_async", "Received"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
                           message: str = "condition") -> Any:
    """``wait_until`` for a test running on the event loop: the loop keeps turning while it polls."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def schema_for_topic(rest: str) -> str:
    """The schema name for a topic below ``kiosk/v1/{fleet}/{kiosk}/``."""
    if rest.startswith("alarm/"):
        return "alarm"
    if rest.startswith("cmd/"):
        return "cmd-result" if rest.endswith("/result") else "cmd"
    return {"tx/ack": "tx-ack", "config/desired": "config-desired",
            "config/reported": "config-reported"}.get(rest, rest)


class Received:
    __slots__ = ("topic", "payload", "data", "retain", "at", "properties")

    def __init__(self, topic: str, payload: bytes, retain: bool, properties: Any) -> None:
        self.topic = topic
        self.payload = payload
        self.retain = retain
        self.at = time.monotonic()
        self.properties = properties
        self.data: Any = json.loads(payload) if payload else None

    def __repr__(self) -> str:
        return f"Received({self.topic}, {self.payload[:120]!r})"


class Subscriber:
    """A paho MQTT 5 subscriber collecting messages; validates contract payloads."""

    def __init__(self, url: str, *topics: str, validate_payloads: bool = True) -> None:
        parts = urlsplit(url)
        self.messages: list[Received] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._validate = validate_payloads
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        for topic in topics or ("kiosk/#",):
            subscribed.clear()
            self.client.subscribe(topic, qos=1)
            if not subscribed.wait(10):
                raise AssertionError(f"subscription to {topic} not acknowledged")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            received = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.properties)
        except ValueError as exc:
            with self._lock:
                self.errors.append(f"{msg.topic}: not JSON: {exc}")
            return
        parsed = parse_topic(msg.topic)
        if self._validate and parsed is not None and msg.payload:
            try:
                validate(schema_for_topic(parsed[2]), received.data)
            except Exception as exc:  # noqa: BLE001 - collected and asserted by tests
                with self._lock:
                    self.errors.append(f"{msg.topic}: {exc.__class__.__name__}: {str(exc)[:400]}")
        with self._lock:
            self.messages.append(received)

    def matching(self, suffix: str, predicate: Callable[[Any], bool] | None = None) -> list[Received]:
        with self._lock:
            found = [m for m in self.messages if m.topic.endswith(suffix)]
        return [m for m in found if predicate is None or predicate(m.data)]

    def wait_for(self, suffix: str, predicate: Callable[[Any], bool] | None = None,
                 timeout: float = 10.0) -> Received:
        found = wait_until(lambda: self.matching(suffix, predicate), timeout, message=f"a message on *{suffix}")
        return found[-1]  # type: ignore[no-any-return]

    def assert_valid(self) -> None:
        assert not self.errors, "payloads that break the contract:\n" + "\n".join(self.errors)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.assert_valid()


class AgentProcess:
    """``kiosk-agent run`` in a real process, with its own config and state."""

    def __init__(self, workdir: Path, *, broker_url: str, overrides: dict[str, str] | None = None,
                 config_text: str | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = workdir / "state"
        self.config = workdir / "agent.toml"
        if config_text is not None:
            self.config.write_text(config_text)
        else:
            write_sim_config(self.config, broker_url, self.state_dir, DEFAULT_SIM_CONFIG, overrides)
        self.log_path = workdir / "agent.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        return self

    def sim(self, device: str, action: str, *args: str) -> dict[str, Any]:
        from agent.sim.simcontrol import send_sim_command, socket_path
        path = socket_path(self.state_dir)
        wait_until(path.exists, 15, message=f"{path}")
        try:
            return send_sim_command(path, device, action, list(args))
        except ConnectionRefusedError:
            # The file a kill -9 left behind, until the restarted agent replaces it.
            wait_until(lambda: _accepts_connections(path), 15, message=f"{path} accepting connections")
            return send_sim_command(path, device, action, list(args))

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and the exit status; a hang is a failure, and leaves no process behind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)      # its firmware runner too
            self.proc.wait(10)
            raise AssertionError(f"the agent did not stop within {timeout} s of SIGTERM; "
                                 f"log tail:\n{self.log[-2000:]}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _accepts_connections(path: Path) -> bool:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
