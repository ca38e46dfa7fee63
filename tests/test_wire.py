# SPDX-License-Identifier: Apache-2.0
"""The wire contract's signed forms: RFC 8785 (JCS) records and envelopes, the legacy form, one key id."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import CommandsConfig, OperatorKey
from agent.runtime import keys as runtime_keys
from agent.store.database import DB_NAME, Store
from agent.store.journal import Journal
from agent.wire import sealing
from agent.wire.canonical import CanonicalError, canonical, legacy_canonical, signed_form
from agent.wire.keyid import key_id
from agent.wire.signing import (
    KIND_CMD,
    CommandRefused,
    command_envelope,
    public_raw,
    sign,
    verify_command,
)
from agent.wire.txformat import GENESIS, SIGN_TAG, record_hash, verify_chain, verify_record

RELEASE_DB = Path(__file__).parent / "store" / "data" / "release-817af0e.db"
RELEASE_SEED = bytes(range(32))         # tests/store/data/make_release_db.py's device key
# Where JCS and CPython's json.dumps differ: float forms, and key order past the BMP
# (JCS sorts UTF-16 code units, so U+1F600 comes before U+FB01).
AWKWARD: dict[str, Any] = {"ratio": 1.0, "tiny": 1e-7, "big": 1e21, "\ufb01": "ligature", "\U0001f600": "emoji",
                           "名": "数据"}


def _journal_records(tmp_path: Path, key: Ed25519PrivateKey, txs: list[dict[str, Any]]) -> list[bytes]:
    async def go() -> list[bytes]:
        store = Store.open(tmp_path)
        try:
            journal = Journal(store, key, "k-1", fleet="f")
            return [(await journal.record(tx)).payload for tx in txs]
        finally:
            store.close()
    return asyncio.run(go())


def test_jcs_differs_from_the_legacy_form_where_expected() -> None:
    assert canonical(AWKWARD) == rfc8785.dumps(AWKWARD)
    assert canonical(AWKWARD) != legacy_canonical(AWKWARD)
    assert canonical({"a": 1.0}) == b'{"a":1}' and legacy_canonical({"a": 1.0}) == b'{"a":1.0}'
    for bad in (float("nan"), 2**53, {"a": object()}):
        with pytest.raises(CanonicalError) as caught:
            canonical(bad)
        assert caught.value.code == "wire.not_canonical" and isinstance(caught.value, ValueError)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) - 5, 2**53 + 5) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_canonical_is_rfc8785_byte_for_byte(obj: Any) -> None:
    """canonical() takes json.dumps where it agrees with JCS: it must agree everywhere."""
    try:
        expected = rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        with pytest.raises(CanonicalError):
            canonical(obj)
        return
    assert canonical(obj) == expected


def test_a_journal_record_verifies_with_openssl_over_jcs_bytes(tmp_path: Path) -> None:
    """An independent verifier: the openssl command line, over bytes rfc8785 computes."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command line")
    key = Ed25519PrivateKey.generate()
    payload = _journal_records(tmp_path / "state", key, [{"type": "test", **AWKWARD}])[0]
    record = json.loads(payload)
    assert record["canon"] == "jcs"
    assert rfc8785.dumps(record) == payload                      # the payload itself is JCS
    body = {k: v for k, v in record.items() if k != "sig"}
    (tmp_path / "canonical.bin").write_bytes(SIGN_TAG + rfc8785.dumps(body))
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(record["sig"]))
    (tmp_path / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def openssl_verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
                               "-in", "canonical.bin", "-sigfile", "sig.bin"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
    done = openssl_verify()
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, done.stdout + done.stderr
    # The verifier can fail: the legacy bytes of the same record do not verify.
    (tmp_path / "canonical.bin").write_bytes(SIGN_TAG + legacy_canonical(body))
    assert openssl_verify().returncode != 0


def _legacy_record(key: Ed25519PrivateKey, seq: int, prev: str, data: dict[str, Any]) -> bytes:
    """A record exactly as the journal wrote it before JCS (json.dumps, no ``canon``)."""
    body = {"data": data, "epoch": "e" * 32, "id": f"{seq:032x}", "kid": key_id(key.public_key()), "kiosk": "k-1",
            "prev": prev, "seq": seq, "ts": 1_763_890_000_000 + seq, "v": 1}
    old = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    body["sig"] = base64.b64encode(key.sign(SIGN_TAG + old)).decode()
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_old_format_records_keep_verifying() -> None:
    key = Ed25519PrivateKey.generate()
    first = _legacy_record(key, 1, GENESIS, {"type": "test", **AWKWARD})
    second = _legacy_record(key, 2, record_hash(first), {"type": "test", "x": 2.5})
    assert b'"ratio":1.0' in first                     # written in the form JCS would not produce
    assert verify_chain([first, second], key.public_key()).ok
    # The form is bound by the signature: adding the marker (or re-encoding in JCS) breaks it.
    marked = json.loads(first)
    marked["canon"] = "jcs"
    with pytest.raises(ValueError, match="bad signature"):
        verify_record(canonical(marked), key.public_key())
    with pytest.raises(ValueError, match="canonical form"):
        verify_record(canonical(json.loads(first)), key.public_key())


def test_a_journal_written_by_the_release_still_verifies_and_goes_on_in_jcs(tmp_path: Path) -> None:
    """Records a kiosk wrote before JCS (the release fixture's journal) verify, and so does what follows."""
    conn = sqlite3.connect(f"file:{RELEASE_DB}?immutable=1", uri=True)   # mode=ro leaves -wal/-shm behind
    try:
        payloads = [bytes(row[0]) for row in conn.execute("SELECT payload FROM journal ORDER BY seq")]
    finally:
        conn.close()
    assert payloads and all(b'"canon"' not in p for p in payloads)
    key = Ed25519PrivateKey.from_private_bytes(RELEASE_SEED)
    report = verify_chain(payloads, key.public_key())
    assert report.ok and report.count == len(payloads), report
    # Upgraded in place (a copy), the journal links its first JCS record to the release's last one.
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(RELEASE_DB, state / DB_NAME)
    new = _journal_records(state, key, [{"type": "test", "ratio": 0.5}])[0]
    assert json.loads(new)["canon"] == "jcs" and json.loads(new)["prev"] == record_hash(payloads[-1])
    assert verify_chain([*payloads, new], key.public_key()).ok


def test_marker_cannot_be_stripped_or_forged(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    payload = _journal_records(tmp_path, key, [{"type": "test", "x": 1.0}])[0]
    assert verify_record(payload, key.public_key())["canon"] == "jcs"
    stripped = {k: v for k, v in json.loads(payload).items() if k != "canon"}
    with pytest.raises(ValueError, match="bad signature"):
        verify_record(legacy_canonical(stripped), key.public_key())
    forged = {**json.loads(payload), "canon": "c14n"}
    with pytest.raises(ValueError, match="unknown canonical form"):
        verify_record(legacy_canonical(forged), key.public_key())


def _commands_config(key: Ed25519PrivateKey) -> CommandsConfig:
    return CommandsConfig(operators=(OperatorKey("ops-1", public_raw(key), "admin"),))


def test_a_command_signed_by_kioskctl_in_jcs_verifies_on_the_kiosk() -> None:
    key = Ed25519PrivateKey.generate()
    cfg = _commands_config(key)
    # What kioskctl sends (fleet/commands_cli.py: command_envelope + sign, published as json.dumps).
    doc = sign(command_envelope("collect-logs", {"lines": 50}, fleet="f", kiosk="k-1"), "ops-1", key, KIND_CMD)
    assert doc["canon"] == "jcs"
    raw = json.dumps(doc).encode()                 # any JSON text: the kiosk re-encodes canonically
    now = doc["issued_at"]
    assert verify_command(raw, "collect-logs", cfg, fleet="f", kiosk="k-1", now=now).args == {"lines": 50}
    # Signed before JCS (no marker, legacy form): still accepted.
    old = command_envelope("ping", {}, fleet="f", kiosk="k-1")
    old["key_id"] = "ops-1"
    old["sig"] = base64.b64encode(key.sign(b"kiosk-agent/v1/cmd\n" + legacy_canonical(old))).decode()
    assert verify_command(json.dumps(old).encode(), "ping", cfg, fleet="f", kiosk="k-1", now=now).name == "ping"
    # Stripping the marker from a JCS envelope breaks its signature; an unknown marker is malformed.
    refusals = {}
    for label, changed in (("stripped", {k: v for k, v in doc.items() if k != "canon"}),
                           ("unknown", {**doc, "canon": "c14n"})):
        with pytest.raises(CommandRefused) as caught:
            verify_command(json.dumps(changed).encode(), "collect-logs", cfg, fleet="f", kiosk="k-1", now=now)
        refusals[label] = caught.value.code
    assert refusals == {"stripped": "cmd.bad_signature", "unknown": "cmd.malformed"}


def test_signed_form_follows_the_marker() -> None:
    assert signed_form({"canon": "jcs", "x": 1.0, "sig": "s"}) == b'{"canon":"jcs","x":1}'
    assert signed_form({"x": 1.0, "sig": "s"}) == b'{"x":1.0}'


def test_one_key_id_for_device_and_recipient_keys() -> None:
    device = Ed25519PrivateKey.from_private_bytes(RELEASE_SEED)
    recipient = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    assert runtime_keys.key_id is key_id and sealing.key_id is key_id
    assert key_id(device.public_key()) == key_id(device.public_key().public_bytes_raw()) == "56475aa75463474c"
    bundle = sealing.seal(recipient.public_key().public_bytes_raw(), "tx-1", b"{}")
    assert bundle.kid == key_id(recipient.public_key())


def test_fleet_and_provisioning_import_only_the_wire_config_and_errors() -> None:
    root = Path(__file__).resolve().parents[1]
    allowed = ("agent.wire", "agent.config", "agent.errors")
    offenders = []
    for path in sorted([*root.glob("fleet/*.py"), *root.glob("provisioning/*.py")]):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("from agent.", "import agent.")):
                module = stripped.split()[1]
                if not module.startswith(allowed):
                    offenders.append(f"{path.relative_to(root)}:{number}: {stripped}")
    assert not offenders, offenders
