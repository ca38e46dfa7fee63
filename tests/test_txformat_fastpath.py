# SPDX-License-Identifier: Apache-2.0
"""``verify_record`` checks the canonical form with one encoding (cutting ``sig`` out of the payload):
it must accept and refuse exactly what the full check (encode the record, compare; encode it without
``sig``, verify) does, with the same error."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.wire.canonical import canonical, legacy_canonical, signed_form
from agent.wire.contract import loads_strict
from agent.wire.txformat import GENESIS, SIGN_TAG, _signed_part, encode_record, verify_record

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def reference(payload: bytes) -> dict[str, Any]:
    """The check as it was before the fast path: two full encodings."""
    try:
        rec = loads_strict(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("sig"), str):
        raise ValueError("not a signed record")
    if encode_record(rec) != payload:
        raise ValueError("payload is not in canonical form")
    try:
        PUBLIC.verify(base64.b64decode(rec["sig"], validate=True), SIGN_TAG + signed_form(rec))
    except (InvalidSignature, ValueError):
        raise ValueError("bad signature") from None
    return {k: v for k, v in rec.items() if k != "sig"}


def verdict(check: Any, payload: bytes) -> Any:
    try:
        return ("ok", check(payload))
    except ValueError as exc:
        return ("refused", str(exc))


def signed(doc: dict[str, Any], encode: Callable[[Any], bytes] = canonical) -> bytes:
    body = {k: v for k, v in doc.items() if k != "sig"}
    return encode({**body, "sig": base64.b64encode(KEY.sign(SIGN_TAG + encode(body))).decode()})


def record(**extra: Any) -> dict[str, Any]:
    return {"canon": "jcs", "data": {"type": "test", "n": 1}, "epoch": "e" * 32, "id": "a" * 32, "kid": "kid",
            "kiosk": "k-1", "prev": GENESIS, "seq": 1, "ts": 1, "v": 1, **extra}


def legacy(**extra: Any) -> dict[str, Any]:
    return {k: v for k, v in record(**extra).items() if k != "canon"}


GOOD = signed(record())
CASES = {
    "good": GOOD,
    "good, members after sig": signed(record(zz={"sig": "x"}, u=[1, 2])),
    "good, integer members after sig": signed(record(u=5, tt=-7, w_x=2**53 - 1)),
    "big integer after sig in jcs": GOOD.replace(b'"ts":1', b'"ts":9007199254740993', 1),
    "good, nothing after sig": signed({k: v for k, v in record().items() if k not in ("ts", "v")}),
    "good, only sig": signed({}),
    "good legacy with a float": signed(legacy(data={"x": 1.0}), legacy_canonical),
    "good, sig inside data too": signed(record(data={"sig": "AAAA", "type": "t"})),
    "spaces": GOOD.replace(b",", b", ", 1),
    "sig first": canonical(json.loads(GOOD)).replace(b'{"canon"', b'{"sig":"x","canon"', 1),
    "sig moved last": json.dumps({**{k: v for k, v in json.loads(GOOD).items() if k != "sig"},
                                  "sig": json.loads(GOOD)["sig"]}, separators=(",", ":")).encode(),
    "sig escaped": GOOD.replace(b'"sig":"', b'"sig":"\\u0041', 1),
    "float in jcs": GOOD.replace(b'"n":1', b'"n":1.0', 1),
    "empty member before sig": GOOD.replace(b',"sig"', b',,"sig"', 1),
    "jcs marker dropped": signed(legacy()).replace(b'"data"', b'"canon":"jcs","data"', 1),
    "unknown marker": signed(record(canon="c14n"), legacy_canonical),
    "forged": GOOD.replace(b'"n":1', b'"n":2', 1),
    "big integer": signed(record(ts=2**60), legacy_canonical),
    "no sig": canonical(record()),
    "not json": b"{",
    "a list": b"[]",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_gives_the_full_checks_verdict(name: str) -> None:
    payload = CASES[name]
    assert verdict(lambda p: verify_record(p, PUBLIC), payload) == verdict(reference, payload)
    if name.startswith("good"):
        assert verdict(reference, payload)[0] == "ok"      # the cases test what they say
        rec = loads_strict(payload)     # and a good record takes the one-encoding path (the point of it)
        assert _signed_part(rec, {k: v for k, v in rec.items() if k != "sig"}, payload) == signed_form(rec)
    else:
        assert verdict(reference, payload)[0] == "refused"


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**60, 2**60) | st.floats(allow_nan=False)
                    | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=5), JSON, max_size=4), jcs=st.booleans(), cut=st.integers(0, 400),
       insert=st.sampled_from([b"", b" ", b",", b'"sig":"x",', b"}"]))
def test_fast_path_agrees_on_generated_and_damaged_records(extra: dict[str, Any], jcs: bool, cut: int,
                                                            insert: bytes) -> None:
    doc = {**(record() if jcs else legacy()), **{k: v for k, v in extra.items() if k != "sig"}}
    encode = canonical if jcs else legacy_canonical
    try:
        payload = signed(doc, encode)
    except ValueError:
        return          # no form at all (a big integer in JCS): nothing to sign
    damaged = payload[:cut] + insert + payload[cut:]
    for p in (payload, damaged):
        assert verdict(lambda q: verify_record(q, PUBLIC), p) == verdict(reference, p)
