# SPDX-License-Identifier: Apache-2.0
"""Sealing: the bundle format round-trips, binds the transaction id, refuses tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sessions.evidence import EvidenceContent, EvidenceStore, evidence_payload, parse_content, seal_content
from agent.wire.contract import validate
from agent.wire.sealing import (
    FORMAT,
    Bundle,
    SealingError,
    X25519PrivateKey,
    key_id,
    load_private_key,
    open_bundle,
    save_private_key,
    seal,
)


@pytest.fixture(scope="module")
def backoffice() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def test_round_trip_and_format(backoffice: X25519PrivateKey) -> None:
    bundle = seal(pub(backoffice), "tx-1", b"secret card")
    d = bundle.to_dict()
    assert d["format"] == FORMAT and d["kid"] == key_id(pub(backoffice))
    assert len(base64.b64decode(d["epk"])) == 32 and len(base64.b64decode(d["nonce"])) == 12
    assert b"secret card" not in json.dumps(d).encode()
    assert open_bundle(backoffice, Bundle.from_dict(json.loads(json.dumps(d))), "tx-1") == b"secret card"
    # Fresh ephemeral key, salt and nonce each time.
    other = seal(pub(backoffice), "tx-1", b"secret card").to_dict()
    assert all(other[k] != d[k] for k in ("epk", "salt", "nonce", "ct"))


def test_tx_id_is_bound_and_wrong_key_refused(backoffice: X25519PrivateKey) -> None:
    bundle = seal(pub(backoffice), "tx-1", b"x")
    with pytest.raises(SealingError):
        open_bundle(backoffice, bundle, "tx-2")
    with pytest.raises(SealingError, match="sealed to key"):
        open_bundle(X25519PrivateKey.generate(), bundle, "tx-1")


@pytest.mark.parametrize("field", ["epk", "salt", "nonce", "ct"])
def test_any_flipped_bit_is_refused(backoffice: X25519PrivateKey, field: str) -> None:
    d = seal(pub(backoffice), "tx-9", b"payload" * 20).to_dict()
    raw = bytearray(base64.b64decode(d[field]))
    raw[len(raw) // 2] ^= 0x01
    d[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SealingError):
        open_bundle(backoffice, Bundle.from_dict(d), "tx-9")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=20), st.dictionaries(st.sampled_from(
    ["format", "alg", "kid", "epk", "salt", "nonce", "ct", "x"]), st.one_of(st.text(max_size=60), st.integers()))))
def test_malformed_bundles_raise_only_sealing_error(data: object) -> None:
    try:
        Bundle.from_dict(data)
    except SealingError:
        pass


def test_key_files(tmp_path: Path, backoffice: X25519PrivateKey) -> None:
    path = tmp_path / "bo.pem"
    save_private_key(backoffice, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert pub(load_private_key(path)) == pub(backoffice)
    raw = tmp_path / "bo.b64"
    raw.write_text(base64.b64encode(backoffice.private_bytes_raw()).decode())
    assert pub(load_private_key(raw)) == pub(backoffice)
    (tmp_path / "junk").write_text("nope")
    with pytest.raises(SealingError):
        load_private_key(tmp_path / "junk")


def test_evidence_payload_fits_the_schema_and_unseals(backoffice: X25519PrivateKey) -> None:
    content = EvidenceContent(service="pension_record_print", card={"name": "测试", "id_number": "X"},
                              photo_wlt=bytearray(b"W" * 1024), face_jpeg=bytearray(b"\xff\xd8jpeg"),
                              face_basis="consent")
    bundle = seal_content(pub(backoffice), "tx-7", content)
    payload = evidence_payload("k-1", "tx-7", 7, "pension_record_print", bundle, content.contents())
    content.wipe()
    assert content.photo_wlt == bytearray(1024) and content.card == {}
    data = json.loads(payload)
    validate("evidence", data)
    plain = parse_content(open_bundle(backoffice, Bundle.from_dict(data["bundle"]), "tx-7"))
    assert plain["card"]["name"] == "测试" and plain["photo_wlt"] == b"W" * 1024
    assert plain["face_jpeg"] == b"\xff\xd8jpeg" and plain["face_basis"] == "consent"


def test_evidence_store_ack_and_retention(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "agent.db", retention_days=1)
    store.put("a", b"A", now=1_000_000.0)
    store.put("b", b"B", now=1_000_000.0 + 80_000)
    store.put("c", b"C", now=1_000_000.0 + 80_000)
    assert store.ack(["c", "zz"]) == 1 and store.ids() == ["a", "b"]
    assert store.sweep(now=1_000_000.0 + 86_401) == 1 and store.ids() == ["b"]
    assert store.get("b") == b"B"
    store.close()
