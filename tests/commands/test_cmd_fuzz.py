# SPDX-License-Identifier: Apache-2.0
"""Fuzz: random and mutated envelopes against a running agent.

Every mutated envelope starts from a *validly signed* ``set-mode
maintenance`` whose nonce was already spent by a ping: whatever a mutation
keeps or breaks, nothing may execute, so the light tower must stay green.
Each message must get exactly one ``refused`` result, and the agent must
survive all of them. In-process, ``verify_command`` sees many more inputs
and may raise only ``CommandRefused``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cmdkit import FLEET, KIOSK, Keys, by_corr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kiosktest import wait_until

from agent.config import CommandsConfig, OperatorKey
from agent.wire.signing import CommandRefused, public_raw, verify_command

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
FIELDS = ["v", "name", "args", "fleet", "kiosk", "issued_at", "expires_at", "nonce", "key_id", "sig"]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["set", "drop", "add", "flip_byte", "truncate", "retype_json", "raw", "whitespace"]))
    if kind == "set":
        return kind, (draw(st.sampled_from(FIELDS)), draw(json_values))
    if kind == "drop":
        return kind, draw(st.sampled_from(FIELDS))
    if kind == "add":
        return kind, (draw(st.text(min_size=1, max_size=10)), draw(json_values))
    if kind in ("flip_byte", "truncate"):
        return kind, draw(st.integers(min_value=0, max_value=10_000))
    if kind == "raw":
        return kind, draw(st.binary(max_size=300))
    return kind, None


def apply(doc: dict[str, Any], mutation: tuple[str, Any]) -> bytes:
    kind, arg = mutation
    doc = dict(doc)
    if kind == "set":
        doc[arg[0]] = arg[1]
    elif kind == "drop":
        doc.pop(arg, None)
    elif kind == "add":
        doc[arg[0]] = arg[1]
    elif kind == "raw":
        return bytes(arg)
    data = json.dumps(doc, indent=2 if kind == "whitespace" else None).encode()
    if kind == "flip_byte":
        i = arg % len(data)
        data = data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:]
    elif kind == "truncate":
        data = data[: arg % len(data)]
    return data


def test_fuzzed_envelopes_never_execute_never_crash(shared: Any) -> None:
    keys: Keys = shared.keys
    spent = keys.envelope("ping")
    corr = shared.sender.send("ping", spent)
    assert shared.results.wait_for("/cmd/ping/result", by_corr(corr, terminal=True)).data["status"] == "succeeded"
    base = keys.envelope("set-mode", {"mode": "maintenance"}, nonce=spent["nonce"])
    sent: list[bytes] = []

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(mutation=mutations(), name=st.sampled_from(["set-mode", "reboot", "ping", "x", "set-mode-"])
           | st.from_regex(r"[^/+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]{0,40}", fullmatch=True))
    def send_one(mutation: tuple[str, Any], name: str) -> None:
        sent.append(shared.sender.send(name, apply(base, mutation), corr=os.urandom(8)))

    send_one()
    wait_until(lambda: all(shared.results.matching("/result", by_corr(c, terminal=True)) for c in sent), 90,
               message=f"a result for each of {len(sent)} fuzzed messages")
    statuses = {shared.results.matching("/result", by_corr(c, terminal=True))[-1].data["status"] for c in sent}
    assert statuses == {"refused"}
    assert shared.agent.proc.poll() is None
    assert shared.agent.sim("light_tower", "status")["mode"] == "in_service"
    assert "Traceback" not in shared.agent.log


def _cfg(keys: Keys) -> CommandsConfig:
    return CommandsConfig(operators=(OperatorKey("admin-1", public_raw(keys.admin), "admin"),), max_size_bytes=4096)


KEYS = Keys()
BASE = KEYS.envelope("set-mode", {"mode": "maintenance"})


@settings(max_examples=2000, deadline=None)
@given(mutation=mutations())
def test_verifier_raises_only_its_own_error(mutation: tuple[str, Any]) -> None:
    data = apply(BASE, mutation)
    try:
        cmd = verify_command(data, "set-mode", _cfg(KEYS), fleet=FLEET, kiosk=KIOSK, now=BASE["issued_at"])
    except CommandRefused as exc:
        assert exc.code.startswith("cmd.")
        return
    # Only a re-serialisation of the untouched envelope may verify.
    assert cmd.doc == BASE


def _with_duplicate(doc: dict[str, Any], field: str) -> bytes:
    """``doc`` as JSON with ``field`` named twice: a decoy first, the signed value last (Python keeps the last)."""
    return b'{"%s":"decoy",' % field.encode() + json.dumps(doc).encode()[1:]


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(sorted(BASE)), depth=st.sampled_from(["top", "args"]))
def test_duplicate_keys_are_refused_in_every_signed_document(field: str, depth: str) -> None:
    """Issue 12 #7: last-one-wins let a document say one thing to us and another to a first-wins parser."""
    import pytest

    from agent.store.journal import ack_document, verify_ack
    from agent.wire.signing import KIND_ACK, KIND_CONFIG, sign, verify_signed

    raw = _with_duplicate(BASE, field) if depth == "top" else json.dumps(BASE).encode().replace(
        b'"args": {', b'"args": {"mode": "in_service", ')
    with pytest.raises(CommandRefused) as refused:
        verify_command(raw, "set-mode", _cfg(KEYS), fleet=FLEET, kiosk=KIOSK, now=BASE["issued_at"])
    assert refused.value.code == "cmd.malformed" and "duplicate key" in str(refused.value)

    desired = KEYS.desired("[kiosk]\n", 7)
    with pytest.raises(CommandRefused, match="duplicate key 'version'"):
        verify_signed(_with_duplicate(desired, "version"), KIND_CONFIG, _cfg(KEYS), fleet=FLEET, kiosk=KIOSK,
                      now=desired["issued_at"], required={"version": lambda v: isinstance(v, int)})

    ack = sign(ack_document(KIOSK, ["a" * 32]), "bo-1", KEYS.admin, KIND_ACK)
    with pytest.raises(ValueError, match="duplicate key 'ids'"):
        verify_ack(_with_duplicate(ack, "ids"), KIOSK, [public_raw(KEYS.admin)])


def test_a_deeply_nested_ack_is_refused_like_any_malformed_one() -> None:
    """The tx/ack handler catches ValueError only; json's RecursionError used to escape it as a traceback."""
    import pytest

    from agent.store.journal import parse_ack, verify_ack

    deep = b'{"ids":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    for check in (parse_ack, lambda raw: verify_ack(raw, KIOSK, [public_raw(KEYS.admin)])):
        with pytest.raises(ValueError, match="nested too deeply"):
            check(deep)
