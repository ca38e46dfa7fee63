# SPDX-License-Identifier: Apache-2.0
"""Helpers for the ledger core's tests: kiosks with every kind of record, workers in real processes.

``CoreKiosk`` builds real records with the wire contract (its own Ed25519
key, chain, epoch), as the journal does, including the ones a test needs
to be wrong (another key, another prev, a reused id), a new epoch after a
lost store and evidence messages. ``LedgerProcess`` is ``kiosk-ledger
serve`` in its own process, so a test can kill -9 it. ``AckWatcher``
checks every ``tx/ack`` against PostgreSQL the moment it arrives.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.wire.canonical import canonical
from agent.wire.contract import Topics, encode, envelope
from agent.wire.keyid import key_id
from agent.wire.signing import public_b64, public_raw
from agent.wire.txformat import GENESIS, build_record, record_hash

__all__ = ["CoreKiosk", "LedgerProcess", "LedgerFactory", "Publisher", "AckWatcher", "write_ledger_config", "rows",
           "scalar"]

REPO = Path(__file__).resolve().parents[2]


class CoreKiosk:
    """Records of one kiosk, built and signed as its journal would."""

    def __init__(self, kiosk: str, fleet: str = "north", *, key: Ed25519PrivateKey | None = None,
                 epoch: str | None = None) -> None:
        self.kiosk = kiosk
        self.fleet = fleet
        self.key = key or Ed25519PrivateKey.generate()
        self.kid = key_id(self.key.public_key())
        self.epoch = epoch or uuid.uuid4().hex
        self.seq = 0
        self.prev = GENESIS
        self.topics = Topics(fleet, kiosk)

    @property
    def public_b64(self) -> str:
        return public_b64(self.key)

    @property
    def public_raw(self) -> bytes:
        return public_raw(self.key)

    def record(self, data: dict[str, Any] | None = None, *, prev: str | None = None, record_id: str | None = None,
               key: Ed25519PrivateKey | None = None) -> tuple[str, bytes]:
        """The next record: (id, payload); ``prev``/``key`` make a broken or forged one (the chain still advances)."""
        self.seq += 1
        rid = record_id or uuid.uuid4().hex
        body = canonical(data or {"type": "synthetic", "service": "test", "outcome": "completed"})
        payload = build_record((key or self.key).sign, self.kid, self.kiosk, self.epoch, self.seq,
                               prev if prev is not None else self.prev, body, rid, 1_763_890_000_000 + self.seq)
        self.prev = record_hash(payload)
        return rid, payload

    def rewind(self, seq: int, head: bytes) -> None:
        """Continue after record ``seq`` whose payload is ``head`` (to rebuild a record differently)."""
        self.seq, self.prev = seq, record_hash(head)

    def new_epoch(self) -> tuple[str, bytes]:
        """The store was lost: a new epoch whose first record names what came before."""
        prev_epoch, prev_last = self.epoch, self.seq
        self.epoch, self.seq, self.prev = uuid.uuid4().hex, 0, GENESIS
        return self.record({"type": "epoch", "reason": "store_lost", "prev_epoch": prev_epoch,
                            "prev_last_seq": prev_last, "prev_last_seq_exact": True})

    def evidence(self, tx_id: str, seq: int) -> bytes:
        """An evidence message for ``tx_id`` (the bundle is opaque to the ledger: random bytes here)."""
        def b64(n: int) -> str:
            return base64.b64encode(os.urandom(n)).decode()
        bundle = {"format": "kiosk-evidence/1", "alg": "X25519-HKDF-SHA256-AES-256-GCM", "kid": "0" * 16,
                  "epk": b64(32), "salt": b64(32), "nonce": b64(12), "ct": b64(64)}
        return encode(envelope(self.kiosk, tx=tx_id, seq=seq, service="test", contents=["card"], bundle=bundle))


class Publisher:
    """A paho MQTT 5 client publishing QoS 1 and waiting for the PUBACKs."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        parts = urlsplit(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.publish_many([(topic, payload)])

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), "a publish was not acknowledged by the broker"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AckWatcher:
    """Subscribes to every ``tx/ack`` of a fleet; checks each acked id was committed when the ack arrived."""

    def __init__(self, url: str, fleet: str, dsn: str) -> None:
        self.acks: dict[str, set[str]] = {}
        self.uncommitted: list[str] = []
        self.docs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.conn = psycopg.connect(dsn, autocommit=True)
        parts = urlsplit(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acks-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(f"kiosk/v1/{fleet}/+/tx/ack", qos=1)
        self.client.reconnect_delay_set(1, 2)
        # A persistent session, as a kiosk has: acks sent while it reconnects after a broker restart wait for it.
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        kiosk = msg.topic.split("/")[3]
        ids = list(doc["ids"])
        with self._lock:
            # The moment the ack is seen, every id it names must be a committed row.
            found = {r[0] for r in self.conn.execute("SELECT id FROM tx WHERE kiosk = %s AND id = ANY(%s)",
                                                      (kiosk, ids)).fetchall()}
            self.uncommitted += [i for i in ids if i not in found]
            self.acks.setdefault(kiosk, set()).update(ids)
            self.docs.append(doc)

    def acked(self, kiosk: str) -> set[str]:
        with self._lock:
            return set(self.acks.get(kiosk, set()))

    def all_acked(self) -> set[tuple[str, str]]:
        with self._lock:
            return {(k, i) for k, ids in self.acks.items() for i in ids}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.conn.close()


def write_ledger_config(path: Path, *, dsn: str, broker_url: str, client_id: str, key_file: Path,
                        fleet: str = "north", extra: str = "") -> Path:
    path.write_text(f'''[database]
dsn = "{dsn}"

[mqtt]
url = "{broker_url}"
client_id = "{client_id}"
session_expiry_s = 3600
keepalive = 10

[ledger]
fleet = "{fleet}"
batch_ms = 10

[acks]
key_file = "{key_file}"
interval_ms = 100
{extra}''', encoding="utf-8")
    return path


class LedgerProcess:
    """``kiosk-ledger serve`` in its own process (its log in a file)."""

    def __init__(self, workdir: Path, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config = config
        self.env = env or {}
        self.log_path = workdir / f"{config.stem}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> LedgerProcess:
        extra = self.env if env is None else env
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "fleet.ledger.cli", "serve", "--config",
                                          str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **extra},
                                         start_new_session=True)
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"kiosk-ledger did not stop on SIGTERM; log:\n{self.log[-2000:]}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# The ``ledger`` fixture's type. Here, not in conftest: a test module importing from ``conftest`` gets
# whichever conftest.py pytest imported first (tests/commands/ has one too) when directories run together.
LedgerFactory = Callable[..., LedgerProcess]


def rows(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(dsn: str, sql: str, params: Any = None) -> Any:
    result = rows(dsn, sql, params)
    return result[0][0] if result else None
