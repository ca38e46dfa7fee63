# SPDX-License-Identifier: Apache-2.0
"""Pure parts: canonical encoding, signatures, redaction, kioskctl arguments and keys."""

from __future__ import annotations

import base64
import json
import logging
import stat
import subprocess
from pathlib import Path

import pytest
from cmdkit import KIOSKCTL
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.config import load_config
from agent.control.commands import LogRing, redact
from agent.wire.contract import validate
from agent.wire.signing import (
    DOMAINS,
    KIND_CMD,
    KIND_CONFIG,
    command_envelope,
    public_raw,
    sign,
    signed_form,
    signing_input,
    verify,
)
from fleet.commands_cli import parse_arg
from fleet.keys import KeyError_, init_key, load_key


def test_canonical_encoding_is_exactly_specified() -> None:
    doc = {"z": 1, "a": {"y": [1, "é"], "b": True}, "sig": "ignored", "n": None}
    assert signed_form(doc) == '{"a":{"b":true,"y":[1,"é"]},"n":null,"z":1}'.encode()
    assert signing_input(doc, KIND_CMD) == b"kiosk-agent/v1/cmd\n" + signed_form(doc)
    assert DOMAINS[KIND_CONFIG] == b"kiosk-agent/v1/config\n"


def test_signature_verifies_independently_of_this_module() -> None:
    key = Ed25519PrivateKey.generate()
    doc = sign(command_envelope("ping", {}, fleet="dev", kiosk="k-1"), "ops", key, KIND_CMD)
    validate("cmd", doc)
    raw = base64.b64decode(doc["sig"])
    message = b"kiosk-agent/v1/cmd\n" + json.dumps({k: v for k, v in doc.items() if k != "sig"},
                                                    sort_keys=True, separators=(",", ":")).encode()
    Ed25519PublicKey.from_public_bytes(public_raw(key)).verify(raw, message)
    assert verify(doc, public_raw(key), KIND_CMD)
    assert not verify(doc, public_raw(key), KIND_CONFIG)          # domain separation
    assert not verify({**doc, "key_id": "other"}, public_raw(key), KIND_CMD)   # key_id is covered


@pytest.mark.parametrize("line, expected", [
    ("card 11010519491231002X read", "card [redacted] read"),
    ("old id 110105491231002 ok", "old id [redacted] ok"),
    ("pay 134567890123456789", "pay [redacted]"),
    ("bank 6222 0212 3456 7890 123", "bank [redacted]"),
    ("ts 1763890000000 stays", "ts 1763890000000 stays"),
    ("2026-11-23 09:00:01,123 INFO x", "2026-11-23 09:00:01,123 INFO x"),
])
def test_redaction(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_log_ring_keeps_redacted_lines_only() -> None:
    ring = LogRing(capacity=3)
    logger = logging.getLogger("test.ring")
    logger.addHandler(ring)
    logger.setLevel(logging.INFO)
    try:
        for i in range(5):
            logger.info("line %d id %s", i, "11010519491231002X")
    finally:
        logger.removeHandler(ring)
    lines = ring.tail(10)
    assert len(lines) == 3 and "line 4" in lines[-1]
    assert not any("11010519491231002X" in line for line in lines)


def test_parse_arg(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("x = 1\n")
    assert parse_arg("mode=maintenance") == ("mode", "maintenance")
    assert parse_arg("force=true") == ("force", True)
    assert parse_arg("lines=50") == ("lines", 50)
    assert parse_arg(f"config=@{tmp_path / 'c.toml'}") == ("config", "x = 1\n")
    assert parse_arg('x:={"a": [1]}') == ("x", {"a": [1]})
    with pytest.raises(ValueError):
        parse_arg("novalue")


def test_keys_init_writes_a_private_key_0600_and_a_pasteable_snippet(tmp_path: Path) -> None:
    done = subprocess.run([KIOSKCTL, "keys", "init", "--dir", str(tmp_path), "--id", "ops-anna", "--role", "admin"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    private = tmp_path / "ops-anna.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key_id, key = load_key(private)
    assert key_id == "ops-anna"
    # The printed lines are valid agent configuration.
    config = tmp_path / "agent.toml"
    config.write_text('[kiosk]\nid = "k"\nfleet = "f"\nsite = "s"\n[mqtt]\nurl = "mqtt://h:1"\n'
                      '[storage]\ndir = "st"\n[hal]\nbackend = "sim"\n' + done.stdout)
    op = load_config(config).commands.operators[0]
    assert (op.id, op.role, op.public_key) == ("ops-anna", "admin", public_raw(key))
    again = subprocess.run([KIOSKCTL, "keys", "init", "--dir", str(tmp_path), "--id", "ops-anna"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    with pytest.raises(KeyError_):
        init_key(tmp_path, "Bad/Id")


def test_tx_tail_follows_transactions(broker: object) -> None:
    from cmdkit import Sender
    url = broker.url  # type: ignore[attr-defined]
    tail = subprocess.Popen([KIOSKCTL, "tx", "tail", "--broker", url, "--fleet", "dev", "--json", "--duration", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender = Sender(url)
    try:
        record = {"v": 1, "kiosk": "k-1", "ts": 1, "seq": 7, "id": "t-7", "service": "s", "outcome": "completed"}
        assert tail.stdout is not None
        # Publish until the tail (which subscribes after start-up) has seen one.
        import select
        import time
        deadline = time.monotonic() + 20
        line = ""
        while not line and time.monotonic() < deadline:
            sender.publish("kiosk/v1/dev/k-1/tx", json.dumps(record).encode())
            if select.select([tail.stdout], [], [], 0.5)[0]:
                line = tail.stdout.readline()
        assert json.loads(line) == {"topic": "kiosk/v1/dev/k-1/tx", "payload": record}
    finally:
        sender.close()
        tail.kill()
        tail.wait(10)
