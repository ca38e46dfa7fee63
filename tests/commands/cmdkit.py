# SPDX-License-Identifier: Apache-2.0
"""Helpers for the fleet-command tests: keys, a configured agent, raw sends.

    keys = Keys.make()
    agent = start_agent(agent_factory, keys, name="k1")
    sender = Sender(broker.url)
    corr = sender.send("dev", "sim-0001", "ping", keys.envelope("ping"))
    result = sender.results.wait_for("/cmd/ping/result", by_corr(corr, terminal=True))
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber, wait_until
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.wire.contract import Topics, validate
from agent.wire.signing import (
    KIND_CMD,
    KIND_CONFIG,
    command_envelope,
    config_envelope,
    public_b64,
    sign,
)

FLEET, KIOSK = "dev", "sim-0001"
KIOSKCTL = str(Path(sys.executable).parent / "kioskctl")
TERMINAL = ("succeeded", "failed", "refused")
RESULTS = "kiosk/v1/+/+/cmd/+/result"


class Keys:
    """An admin key, an operator key and a stranger's key (not trusted)."""

    def __init__(self) -> None:
        self.admin = Ed25519PrivateKey.generate()
        self.operator = Ed25519PrivateKey.generate()
        self.stranger = Ed25519PrivateKey.generate()

    def config(self, *, skew: int = 60, max_size: int | None = 4096) -> str:
        size = "" if max_size is None else f"max_size_bytes = {max_size}\n"   # None: the shipped default
        return (f"\n[commands]\nmax_clock_skew_s = {skew}\n{size}\n"
                f'[[commands.operators]]\nid = "admin-1"\npublic_key = "{public_b64(self.admin)}"\nrole = "admin"\n\n'
                f'[[commands.operators]]\nid = "op-1"\npublic_key = "{public_b64(self.operator)}"\n'
                f'role = "operator"\n')

    def envelope(self, name: str, args: dict[str, Any] | None = None, *, key: str = "admin",
                 kiosk: str = KIOSK, fleet: str = FLEET, **kw: Any) -> dict[str, Any]:
        doc = command_envelope(name, args, fleet=fleet, kiosk=kiosk, **kw)
        key_id = {"admin": "admin-1", "operator": "op-1", "stranger": "stranger"}[key]
        signed = sign(doc, key_id, getattr(self, key), KIND_CMD)
        validate("cmd", signed) if name in _KNOWN else None
        return signed

    def desired(self, text: str, version: int, *, confirm_within_s: int = 30, key: str = "admin") -> dict[str, Any]:
        doc = config_envelope(text, version, fleet=FLEET, kiosk=KIOSK, confirm_within_s=confirm_within_s)
        signed = sign(doc, {"admin": "admin-1", "operator": "op-1"}[key], getattr(self, key), KIND_CONFIG)
        validate("config-desired", signed)
        return signed

    def write(self, directory: Path) -> dict[str, Path]:
        from cryptography.hazmat.primitives import serialization
        directory.mkdir(parents=True, exist_ok=True)
        out = {}
        for role, key_id in (("admin", "admin-1"), ("operator", "op-1")):
            path = directory / f"{key_id}.key"
            path.write_bytes(getattr(self, role).private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
            path.chmod(0o600)
            out[role] = path
        return out


_KNOWN = {"ping", "get-health", "selftest", "set-mode", "print-test-page", "collect-logs", "reboot",
          "restart-agent", "update-config", "firmware-update", "ack-alarm"}


def start_agent(factory: Any, keys: Keys, name: str = "agent", *, kiosk: str = KIOSK, env: dict[str, str] | None = None,
                skew: int = 60, max_size: int | None = 4096, extra: str = "",
                overrides: dict[str, str] | None = None) -> AgentProcess:
    overrides = {"id": f'"{kiosk}"', "interval_s": "300", **(overrides or {})}
    agent = factory(name, overrides=overrides, env=env or {})
    agent.config.write_text(agent.config.read_text() + keys.config(skew=skew, max_size=max_size) + extra)
    return agent.start()


def wait_online(sub: Subscriber, kiosk: str = KIOSK, after: float = 0.0, timeout: float = 30.0) -> None:
    """Wait for a birth of ``kiosk`` received at or after ``after`` (time.monotonic())."""
    wait_until(lambda: [m for m in sub.matching(f"/{kiosk}/state")
                        if m.at >= after and isinstance(m.data, dict) and m.data.get("online")],
               timeout, message=f"{kiosk} online")


def by_corr(corr: bytes, *, terminal: bool = False, status: str | None = None) -> Callable[[Any], bool]:
    def match(data: Any) -> bool:
        return (isinstance(data, dict) and data.get("correlation") == corr.hex()
                and (not terminal or data.get("status") in TERMINAL)
                and (status is None or data.get("status") == status))
    return match


class Sender:
    """A raw MQTT 5 publisher for hand-made (and broken) envelopes."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sender-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        connected = threading.Event()
        self.client.on_connect = lambda *_a: connected.set()
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        assert connected.wait(10)

    def send(self, name: str, payload: bytes | dict[str, Any], *, kiosk: str = KIOSK, fleet: str = FLEET,
             corr: bytes | None = None, retain: bool = False, topic: str | None = None) -> bytes:
        corr = corr or os.urandom(8)
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = corr
        props.ResponseTopic = Topics(fleet, kiosk).cmd_result(name)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        info = self.client.publish(topic or Topics(fleet, kiosk).cmd(name), data, qos=1, retain=retain,
                                   properties=props)
        info.wait_for_publish(10)
        return corr

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def audit_rows(agent: AgentProcess) -> list[dict[str, Any]]:
    conn = sqlite3.connect(agent.state_dir / "agent.db", timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM command_audit ORDER BY id")]
    finally:
        conn.close()
