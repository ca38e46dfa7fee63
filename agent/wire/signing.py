# SPDX-License-Identifier: Apache-2.0
"""Signed envelopes for fleet commands and desired configuration (Ed25519).

Part of the wire contract: the kiosk verifies with it and ``kioskctl`` signs
with it, so the canonical encoding exists exactly once.

    key = Ed25519PrivateKey.generate()
    doc = command_envelope("set-mode", {"mode": "maintenance"}, fleet="north", kiosk="k-0001")
    sign(doc, "ops-1", key, KIND_CMD)          # adds key_id and sig
    verify(doc, public_raw(key), KIND_CMD)      # True

Canonical encoding (what the signature covers), precisely:

1. the envelope as a JSON object, **without** its ``sig`` member (every other
   member, ``key_id`` and ``canon`` included, is covered);
2. serialised per RFC 8785 (JCS, :mod:`agent.wire.canonical`), which
   :func:`sign` announces with ``"canon": "jcs"``; an envelope without that
   marker was signed before JCS and verifies in the legacy form (CPython's
   ``json.dumps``, keys sorted, compact, UTF-8);
3. prefixed with a domain tag and a newline: ``kiosk-agent/v1/cmd\\n`` for a
   command, ``kiosk-agent/v1/config\\n`` for a desired configuration,
   ``kiosk-agent/v1/tx-ack\\n`` for a back-office acknowledgement, so one can
   never be replayed as another.

The second half is the kiosk's acceptance policy, pure (no I/O, no nonce
store): :func:`verify_command` checks size, JSON, signature, key, target,
time window, command name, role and arguments in a fixed order and raises
:class:`CommandRefused` with a stable code; ``kioskctl`` can run the same
argument checks before sending.

``sig`` is the 64-byte Ed25519 signature in standard base64 with padding.
Integers must lie within ±(2^53-1) (JCS numbers are IEEE doubles).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.config import MODES, CommandsConfig, OperatorKey
from agent.errors import AgentError
from agent.wire.canonical import CANON, CANON_FIELD, CanonicalError, signed_form
from agent.wire.contract import loads_strict

__all__ = ["KIND_CMD", "KIND_CONFIG", "KIND_ACK", "DOMAINS", "SigningError", "fast_signer", "signed_form",
           "signing_input", "sign",
           "verify", "decode_sig", "public_raw", "public_b64", "new_nonce", "command_envelope",
           "config_envelope", "ENVELOPE_VERSION", "MAX_LIFETIME_MS", "CommandRefused", "Verified", "Spec",
           "SPECS", "ROLE_COMMANDS", "BACKOFFICE_COMMANDS", "verify_signed", "verify_command", "expected"]

KIND_CMD = "cmd"
KIND_CONFIG = "config"
KIND_ACK = "ack"
DOMAINS = {KIND_CMD: b"kiosk-agent/v1/cmd\n", KIND_CONFIG: b"kiosk-agent/v1/config\n",
           KIND_ACK: b"kiosk-agent/v1/tx-ack\n"}
ENVELOPE_VERSION = 1
# A command lives at most a day: its nonce is kept on disk until it expires,
# so this bounds the nonce table.
MAX_LIFETIME_MS = 24 * 3600 * 1000
DEFAULT_TTL_S = 300


class SigningError(AgentError):
    """The envelope cannot be encoded or the key material is unusable."""

    code = "cmd.malformed"


def signing_input(doc: dict[str, Any], kind: str) -> bytes:
    """Domain tag + ``doc`` without ``sig`` in the form its ``canon`` marker names.

    >>> signing_input({"b": 1.0, "a": "é", "canon": "jcs", "sig": "x"}, KIND_CMD)
    b'kiosk-agent/v1/cmd\\n{"a":"\\xc3\\xa9","b":1,"canon":"jcs"}'
    """
    try:
        return DOMAINS[kind] + signed_form(doc)
    except CanonicalError as exc:
        raise SigningError(str(exc)) from exc


def sign(doc: dict[str, Any], key_id: str, key: Ed25519PrivateKey, kind: str) -> dict[str, Any]:
    """Set ``key_id``, ``canon`` (JCS) and ``sig`` on ``doc`` (in place) and return it."""
    doc["key_id"] = key_id
    doc[CANON_FIELD] = CANON
    doc.pop("sig", None)
    doc["sig"] = base64.b64encode(key.sign(signing_input(doc, kind))).decode("ascii")
    return doc


def fast_signer(key: Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    """``sign(message) -> signature`` through libsodium, for the journal's hot path.

    Ed25519 (RFC 8032) is deterministic, so the bytes equal ``key.sign(message)``
    (a test checks it); libsodium signs in about half of the time OpenSSL
    takes here, and the journal writer is bound by signing (bench/outbox).
    Like cryptography, the call runs without the GIL.

        sign = fast_signer(key)
        assert sign(b"m") == key.sign(b"m")
    """
    import nacl.bindings  # only the kiosk's journal signs this way; kioskctl never loads libsodium
    _public, secret = nacl.bindings.crypto_sign_seed_keypair(key.private_bytes_raw())
    crypto_sign = nacl.bindings.crypto_sign

    def sign(message: bytes) -> bytes:
        return crypto_sign(message, secret)[:64]    # libsodium returns signature + message
    return sign


def decode_sig(value: Any) -> bytes | None:
    """The raw 64-byte signature, or None if ``value`` is not one."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 else None


def verify(doc: dict[str, Any], public_key: bytes, kind: str) -> bool:
    """True if ``doc["sig"]`` is a valid signature by ``public_key`` (raw 32 bytes)."""
    sig = decode_sig(doc.get("sig"))
    if sig is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, signing_input(doc, kind))
    except (InvalidSignature, ValueError, SigningError):
        return False
    return True


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_b64(key: Ed25519PrivateKey) -> str:
    """The form ``[[commands.operators]] public_key`` takes."""
    return base64.b64encode(public_raw(key)).decode("ascii")


def new_nonce() -> str:
    """128 random bits, hex."""
    return secrets.token_hex(16)


def _now_ms() -> int:
    return int(time.time() * 1000)


def command_envelope(name: str, args: dict[str, Any] | None, *, fleet: str, kiosk: str,
                     ttl_s: float = DEFAULT_TTL_S, now_ms: int | None = None,
                     nonce: str | None = None) -> dict[str, Any]:
    """An unsigned command; pass it to :func:`sign` with ``KIND_CMD``."""
    issued = _now_ms() if now_ms is None else now_ms
    return {"v": ENVELOPE_VERSION, "name": name, "args": dict(args or {}), "fleet": fleet, "kiosk": kiosk,
            "issued_at": issued, "expires_at": issued + int(ttl_s * 1000), "nonce": nonce or new_nonce()}


def config_envelope(config_text: str, version: int, *, fleet: str, kiosk: str, confirm_within_s: int = 60,
                    now_ms: int | None = None) -> dict[str, Any]:
    """An unsigned desired configuration; pass it to :func:`sign` with ``KIND_CONFIG``.

    No expiry: it is retained and re-delivered on every reconnect; replay is
    prevented by ``version``, which must increase (anti-rollback).
    """
    return {"v": ENVELOPE_VERSION, "fleet": fleet, "kiosk": kiosk, "version": version,
            "config": config_text, "confirm_within_s": confirm_within_s,
            "issued_at": _now_ms() if now_ms is None else now_ms, "nonce": new_nonce()}


# -- verification policy: what a kiosk accepts (pure: no I/O, no nonce) ------------------

OPERATOR_COMMANDS = frozenset({"ping", "get-health", "selftest", "set-mode", "print-test-page", "collect-logs",
                               "ack-alarm", "tx-resend"})
ADMIN_COMMANDS = OPERATOR_COMMANDS | {"reboot", "restart-agent", "update-config", "firmware-update"}
# The ledger's key: it asks for a gap to be sent again and nothing else, so
# a key held by an unattended back-office service can never reboot a fleet.
BACKOFFICE_COMMANDS = frozenset({"tx-resend"})
ROLE_COMMANDS = {"operator": OPERATOR_COMMANDS, "admin": ADMIN_COMMANDS, "backoffice": BACKOFFICE_COMMANDS}
_NONCE_CHARS = frozenset("0123456789abcdefABCDEF-_")


class CommandRefused(AgentError):
    """Verification failed; ``code`` says why (cmd.unsigned, cmd.replayed, ...)."""

    code = "cmd.refused"

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


# -- argument specs ---------------------------------------------------------------

def _expects(what: str, check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Attach the text a refusal quotes, so an operator sees what would have been valid."""
    check.expected = what  # type: ignore[attr-defined]
    return check


def expected(check: Callable[[Any], bool]) -> str | None:
    """What an argument check accepts, in words (None if it does not say)."""
    return getattr(check, "expected", None)


def _enum(*values: str) -> Callable[[Any], bool]:
    return _expects("one of " + ", ".join(values), lambda v: v in values)


def _int(low: int, high: int) -> Callable[[Any], bool]:
    return _expects(f"an integer from {low} to {high}",
                    lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high)


_bool = _expects("true or false", lambda v: isinstance(v, bool))


def _text(limit: int) -> Callable[[Any], bool]:
    return _expects(f"a string of 1 to {limit} characters", lambda v: isinstance(v, str) and 0 < len(v) <= limit)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Arguments of one command: name → (check, required); ``loggable`` may be audited in full."""

    args: dict[str, tuple[Callable[[Any], bool], bool]] = dataclasses.field(default_factory=dict)
    loggable: frozenset[str] = frozenset()
    exclusive: bool = True      # runs alone: no two self-tests or a reboot during a firmware update


SPECS: dict[str, Spec] = {
    "ping": Spec(exclusive=False),
    "get-health": Spec(exclusive=False),
    "selftest": Spec(),
    "set-mode": Spec({"mode": (_enum(*MODES), True)}, frozenset({"mode"})),
    "print-test-page": Spec(),
    "collect-logs": Spec({"lines": (_int(1, 2000), False)}, frozenset({"lines"}), exclusive=False),
    # The latching alarms of agent.alarms.LATCHING (a test keeps the two equal).
    "ack-alarm": Spec({"code": (_enum("tamper"), True)}, frozenset({"code"}), exclusive=False),
    "reboot": Spec({"force": (_bool, False)}, frozenset({"force"})),
    "restart-agent": Spec({"force": (_bool, False)}, frozenset({"force"})),
    "update-config": Spec({"config": (_text(1_000_000), True), "version": (_int(1, 2**53), True),
                           "confirm_within_s": (_int(1, 3600), False)}, frozenset({"version"})),
    # Re-publish journal records (agent.store.journal.Journal.resend); the range is checked there too.
    "tx-resend": Spec({"epoch": (_expects("the journal epoch, 32 hex digits", lambda v: isinstance(v, str)
                                          and len(v) == 32 and all(c in "0123456789abcdef" for c in v)), True),
                       "from_seq": (_int(1, 2**53 - 1), True), "to_seq": (_int(1, 2**53 - 1), True)},
                      frozenset({"epoch", "from_seq", "to_seq"}), exclusive=False),
    "firmware-update": Spec({"image": (_text(16_000_000), True), "signature": (_text(200), True),
                             "sha256": (lambda v: isinstance(v, str) and len(v) == 64
                                        and all(c in "0123456789abcdef" for c in v), True),
                             "confirm_s": (_int(5, 3600), False)}, frozenset({"sha256", "confirm_s"})),
}


@dataclasses.dataclass(frozen=True)
class Verified:
    doc: dict[str, Any]
    operator: OperatorKey

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.doc["args"])


def _is_ms(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def verify_signed(raw: bytes, kind: str, cfg: CommandsConfig, *, fleet: str, kiosk: str,
                  now: int, required: dict[str, Callable[[Any], bool]]) -> tuple[dict[str, Any], OperatorKey]:
    """Size, JSON, signature, key, target and time window of a signed envelope.

    Raises CommandRefused; the checks run in a fixed order so the code a
    fuzzer sees is deterministic.
    """
    if len(raw) > cfg.max_size_bytes:
        raise CommandRefused("cmd.oversized", f"{len(raw)} bytes, limit {cfg.max_size_bytes}")
    try:
        doc = loads_strict(raw)       # a duplicate key could read differently elsewhere
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandRefused("cmd.malformed", f"not UTF-8 JSON: {str(exc)[:100]}") from None
    if not isinstance(doc, dict):
        raise CommandRefused("cmd.malformed", "not a JSON object")
    if "sig" not in doc or "key_id" not in doc:
        raise CommandRefused("cmd.unsigned", "no sig or key_id")
    checks: dict[str, Callable[[Any], bool]] = {
        "v": lambda v: v == 1, "fleet": _text(64), "kiosk": _text(64), "issued_at": _is_ms,
        "nonce": lambda v: isinstance(v, str) and 16 <= len(v) <= 64 and set(v) <= _NONCE_CHARS,
        "key_id": _text(64), "sig": lambda v: isinstance(v, str), **required}
    for name, check in checks.items():
        if name not in doc or not check(doc[name]):
            raise CommandRefused("cmd.malformed", f"field {name!r} missing or invalid")
    if "expires_at" in doc and not _is_ms(doc["expires_at"]):
        raise CommandRefused("cmd.malformed", "field 'expires_at' invalid")
    # No marker: signed before JCS, verified in the legacy form (agent.wire.canonical).
    if CANON_FIELD in doc and doc[CANON_FIELD] != CANON:
        raise CommandRefused("cmd.malformed", f"field {CANON_FIELD!r} invalid")
    extra = set(doc) - set(checks) - {"expires_at", CANON_FIELD}
    if extra:
        raise CommandRefused("cmd.malformed", f"unknown fields: {', '.join(sorted(map(str, extra)))[:100]}")
    operator = next((op for op in cfg.operators if op.id == doc["key_id"]), None)
    if operator is None:
        raise CommandRefused("cmd.unknown_key", f"key {doc['key_id']!r} is not trusted here")
    if decode_sig(doc["sig"]) is None or not verify(doc, operator.public_key, kind):
        raise CommandRefused("cmd.bad_signature", f"signature does not verify with key {operator.id!r}")
    # Only signed content from here: the signer really addressed it like this.
    if doc["fleet"] != fleet or doc["kiosk"] != kiosk:
        raise CommandRefused("cmd.wrong_target", f"addressed to {doc['fleet']}/{doc['kiosk']}")
    skew = int(cfg.max_clock_skew_s * 1000)
    if doc["issued_at"] > now + skew:
        raise CommandRefused("cmd.not_yet_valid", f"issued {(doc['issued_at'] - now) / 1000:.0f}s in the future")
    expires = doc.get("expires_at")
    if expires is not None:
        if expires - doc["issued_at"] > MAX_LIFETIME_MS or expires < doc["issued_at"]:
            raise CommandRefused("cmd.malformed", "lifetime must be 0 to 24 h")
        if now > expires + skew:
            raise CommandRefused("cmd.expired", f"expired {(now - expires) / 1000:.0f}s ago")
    return doc, operator


def verify_command(raw: bytes, topic_name: str, cfg: CommandsConfig, *, fleet: str, kiosk: str,
                   now: int) -> Verified:
    """Everything but the nonce; raises CommandRefused."""
    doc, operator = verify_signed(raw, KIND_CMD, cfg, fleet=fleet, kiosk=kiosk, now=now, required={
        "name": _text(64), "args": lambda v: isinstance(v, dict), "expires_at": _is_ms})
    name = doc["name"]
    if name != topic_name:
        raise CommandRefused("cmd.malformed", f"envelope names {name!r} but came on cmd/{topic_name[:64]}")
    spec = SPECS.get(name)
    if spec is None:
        raise CommandRefused("cmd.unknown_command", f"no command {name!r}")
    if name not in ROLE_COMMANDS.get(operator.role, frozenset()):
        raise CommandRefused("cmd.forbidden", f"role {operator.role!r} of key {operator.id!r} may not {name}")
    args = doc["args"]
    for arg in args:
        if arg not in spec.args:
            raise CommandRefused("cmd.bad_arguments", f"unknown argument {str(arg)[:40]!r}")
    for arg, (check, required) in spec.args.items():
        if arg in args and not check(args[arg]):
            what = expected(check)
            raise CommandRefused("cmd.bad_arguments",
                                 f"argument {arg!r} invalid" + (f": expected {what}" if what else ""))
        if required and arg not in args:
            raise CommandRefused("cmd.bad_arguments", f"argument {arg!r} missing")
    return Verified(doc, operator)
