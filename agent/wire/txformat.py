# SPDX-License-Identifier: Apache-2.0
"""The transaction record format and its verification: chain, epochs, ``tx/ack``.

Part of the wire contract: the kiosk's journal (:mod:`agent.store.journal`)
builds records with :func:`build_record`, and ``kioskctl verify`` and the back
office check them with :func:`verify_chain` / :func:`verify_epochs`.

**Record** (published on ``tx``, byte for byte as stored)::

    {"canon": "jcs", "data": {...the transaction...}, "epoch": "<32 hex>",
     "id": "<uuid4 hex>", "kid": "<key id>", "kiosk": "k-0001",
     "prev": "<64 hex>", "seq": 42, "sig": "<base64>", "ts": 1763890000000, "v": 1}

**Canonical encoding**: RFC 8785 (JCS, :mod:`agent.wire.canonical`); the
payload is the canonical encoding of the whole record, and a verifier
re-encodes and refuses a payload that differs. A record without ``canon``
was written before JCS (legacy form: CPython's ``json.dumps``, keys sorted,
compact, UTF-8) and verifies in that form, so journals already on kiosks
keep verifying.

**Signature**: Ed25519 by the device key over ``b"kiosk-agent/v1/tx\\n"``
followed by the canonical encoding of the record *without* ``sig``;
``kid`` = :func:`agent.wire.keyid.key_id` of the device public key.

**Chain**: ``hash(record)`` = SHA-256 of the payload bytes, hex. ``seq``
starts at 1 and grows by exactly 1; ``prev`` of record n is the hash of
record n-1; ``prev`` of seq 1 is 64 zeros (``GENESIS``). Because ``prev``
covers the signed payload, changing, dropping or reordering any record
breaks every later link, and ``verify_chain`` names the first break.

**Epoch**: 128 random bits (hex); ``(epoch, seq)`` is never reused. A
journal started after a lost store begins a new epoch at seq 1 whose first
record is ``data = {"type": "epoch", "reason": "store_lost", "prev_epoch",
"prev_last_seq", "prev_last_seq_exact"}``; ``verify_epochs`` checks a
stream epoch by epoch.

    report = verify_chain(payloads, device_public_key)
    print(report)        # "ok: 42 records, last seq 42"
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.wire.canonical import CANON, CANON_FIELD, canonical, form_of, signed_form
from agent.wire.contract import CONTRACT_VERSION, loads_strict
from agent.wire.signing import KIND_ACK, verify

__all__ = [
    "GENESIS",
    "MAX_ACK_IDS",
    "SIGN_TAG",
    "ChainReport",
    "EpochReport",
    "ack_document",
    "build_record",
    "encode_record",
    "parse_ack",
    "record_hash",
    "verify_ack",
    "verify_chain",
    "verify_epochs",
    "verify_record",
]

GENESIS = "0" * 64
SIGN_TAG = b"kiosk-agent/v1/tx\n"
MAX_ACK_IDS = 10_000


def record_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@functools.lru_cache(maxsize=8)
def _json_string(text: str) -> bytes:
    """The kiosk id in canonical form (it never changes; encoded once, not per record)."""
    return canonical(text)


_HEAD = b'{"%s":"%s","data":' % (CANON_FIELD.encode(), CANON.encode())


def build_record(sign: Callable[[bytes], bytes], kid: str, kiosk: str, epoch: str, seq: int, prev: str,
                 data: bytes, record_id: str, ts: int) -> bytes:
    """The signed payload of one record, built directly (hot path): ``data`` is already canonical.

    Keys in canonical order: canon, data, epoch, id, kid, kiosk, prev, seq,
    sig, ts, v; the values are hex strings, integers below 2^53 and the
    kiosk id (canonically encoded), so splicing is exactly ``canonical()``
    of the record -- :func:`verify_record` re-encodes and a test checks it.
    """
    head = _HEAD + data + b',"epoch":"%s","id":"%s","kid":"%s","kiosk":%s,"prev":"%s","seq":%d' % (
        epoch.encode(), record_id.encode(), kid.encode(), _json_string(kiosk), prev.encode(), seq)
    tail = b',"ts":%d,"v":%d}' % (ts, CONTRACT_VERSION)
    sig = base64.b64encode(sign(SIGN_TAG + head + tail))
    return head + b',"sig":"' + sig + b'"' + tail


def encode_record(rec: Any) -> bytes:
    """A decoded record back to its payload bytes, in the form it says it has (JCS, or legacy without ``canon``).

    Raises CanonicalError (a ValueError) for what has no such form.
    """
    return form_of(rec)(rec) if isinstance(rec, dict) else canonical(rec)


def verify_record(payload: bytes, public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Decode and check one payload: canonical form and signature.

    Returns the record; raises ValueError naming what is wrong.
    """
    # The common case first, parsed without loads_strict's duplicate-key hook: a payload that
    # _signed_part proves canonical has no duplicate key (canonical JSON names each key once, and a
    # parse that dropped one could not re-encode to the same bytes). Anything else takes the checked
    # path below, which names what is wrong.
    try:
        rec = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        rec = None
    if type(rec) is dict and type(rec.get("sig")) is str:
        body = {k: v for k, v in rec.items() if k != "sig"}
        signed = _signed_part(rec, body, payload)
        if signed is not None:
            return _signature_checked(rec, body, signed, public_key)
    return _verify_record_checked(payload, public_key)


def _verify_record_checked(payload: bytes,
                           public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    try:
        rec = loads_strict(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("sig"), str):
        raise ValueError("not a signed record")
    body = {k: v for k, v in rec.items() if k != "sig"}
    signed = _signed_part(rec, body, payload)
    if signed is None:      # not provably canonical that way: the full check, with its own error
        if encode_record(rec) != payload:       # JCS, or the legacy form for a record from before it
            raise ValueError("payload is not in canonical form")
        signed = signed_form(rec)
    return _signature_checked(rec, body, signed, public_key)


def _signature_checked(rec: dict[str, Any], body: dict[str, Any], signed: bytes,
                       public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """``body`` if ``rec``'s signature over ``signed`` verifies with its key; ValueError otherwise."""
    key = public_key.get(rec.get("kid", "")) if isinstance(public_key, Mapping) else public_key
    if key is None:
        raise ValueError(f"unknown key id {rec.get('kid')!r}")
    try:
        key.verify(base64.b64decode(rec["sig"], validate=True), SIGN_TAG + signed)
    except (InvalidSignature, ValueError):
        raise ValueError("bad signature") from None
    return body


_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")        # a JSON string of these is itself in quotes, in every form
_PLAIN_KEY = re.compile(r"[a-z_]+")
_SAFE_INT = 2**53 - 1


def _plain_members(members: dict[str, Any]) -> bytes | None:
    """``"k":n,...`` for lower-case keys and integers (a record's ``ts`` and ``v``): the same in every form."""
    parts = []
    for key in sorted(members):
        value = members[key]
        if type(value) is not int or not -_SAFE_INT <= value <= _SAFE_INT or not _PLAIN_KEY.fullmatch(key):
            return None
        parts.append(b'"%s":%d' % (key.encode(), value))
    return b",".join(parts)


def _signed_part(rec: dict[str, Any], body: dict[str, Any], payload: bytes) -> bytes | None:
    """``payload`` without its ``sig`` member, if that proves ``payload`` is ``rec`` in its form; else None.

    One encoding per record instead of two (the ledger verifies thousands a
    second). A canonical object is its members' encodings in key order, so
    the canonical ``payload`` is ``{P,"sig":S,T}`` where ``T`` encodes the
    members sorting after ``sig`` (``ts``, ``v``: tiny) and ``{P,T}`` is the
    canonical encoding of ``body``. Cutting ``"sig":S`` out of ``payload``
    and finding exactly ``body``'s encoding proves the whole payload
    canonical; anything else (None) goes to the full check, which names it.
    ``k > "sig"`` orders ``sig`` the same by code point (legacy) and by
    UTF-16 unit (JCS): it is ASCII.
    """
    try:
        encode = form_of(rec)
        after = {k: v for k, v in rec.items() if k > "sig"}
        tail = _plain_members(after)
        if tail is None:
            tail = encode(after)[1:-1]
        sig = rec["sig"]
        member = b'"sig":' + (b'"%s"' % sig.encode() if _BASE64.fullmatch(sig) else encode(sig))
        end = (b"," + tail if tail else b"") + b"}"
        if not payload.endswith(member + end):
            return None
        head = payload[:len(payload) - len(member) - len(end)]
        if head == b"{":
            signed = b"{" + tail + b"}"
        elif len(head) > 1 and head.endswith(b","):
            signed = head[:-1] + end
        else:
            return None
        return signed if encode(body) == signed else None
    except ValueError:      # CanonicalError: the full check raises it with its own message
        return None


@dataclasses.dataclass
class ChainReport:
    """Outcome of :func:`verify_chain`; ``break_at`` is the index of the first bad record."""

    ok: bool
    count: int
    last_seq: int | None = None
    last_hash: str | None = None
    break_at: int | None = None
    break_seq: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.count} records, last seq {self.last_seq}"
        return f"BROKEN at record #{self.break_at} (seq {self.break_seq}): {self.reason}"


def verify_chain(records: Iterable[bytes], public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey],
                 *, prev: str | None = None, first_seq: int | None = None) -> ChainReport:
    """Check payloads in seq order: form, signature, gapless seq, prev links.

    The first record must have seq 1 and prev GENESIS unless ``prev`` (the
    hash the chain continues from) or ``first_seq`` say otherwise, so a
    verifier holding only a tail still checks it.

        report = verify_chain(payloads, device_public_key)
        print(report)        # "BROKEN at record #17 (seq 18): prev does not match"
    """
    count = 0
    last_seq: int | None = None
    last_hash = prev
    for index, payload in enumerate(records):
        seq: int | None = None
        try:
            rec = verify_record(payload, public_key)
            seq = rec.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise ValueError("seq is not an integer")
            if last_seq is None:
                expected_seq = first_seq if first_seq is not None else (None if prev is not None else 1)
                if expected_seq is not None and seq != expected_seq:
                    raise ValueError(f"seq {seq}, expected {expected_seq}")
                expected_prev = prev if prev is not None else (GENESIS if seq == 1 else None)
            else:
                if seq != last_seq + 1:
                    raise ValueError(f"seq {seq} after {last_seq} (gap or reorder)")
                expected_prev = last_hash
            if expected_prev is not None and rec.get("prev") != expected_prev:
                raise ValueError("prev does not match the hash of the previous record")
        except ValueError as exc:
            return ChainReport(False, count, last_seq, last_hash, index, seq, str(exc))
        count += 1
        last_seq = seq
        last_hash = record_hash(payload)
    return ChainReport(True, count, last_seq, last_hash)


@dataclasses.dataclass
class EpochReport:
    """One epoch of a stream (:func:`verify_epochs`): its chain and, if it says so, what it followed."""

    epoch: str | None                  # None: records from before epochs existed
    indexes: list[int]                 # positions of its records in the stream
    chain: ChainReport
    start: dict[str, Any] | None = None     # data of its opening "epoch" record (after a lost store)

    @property
    def break_index(self) -> int | None:
        """Position in the stream of the first bad record."""
        at = self.chain.break_at
        return None if at is None else self.indexes[min(at, len(self.indexes) - 1)]


def verify_epochs(records: Iterable[bytes], public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey],
                  *, prev: str | None = None, first_seq: int | None = None) -> list[EpochReport]:
    """:func:`verify_chain` per epoch, in the order epochs first appear.

    Each epoch's records must be in seq order. The first epoch may be a
    tail (``prev`` / ``first_seq``); a later one must start at seq 1, where
    a journal started after a lost store says so in its first record. The
    one exception: the epoch right after records without one (a kiosk
    upgraded from a release before epochs) goes on with their chain.
    """
    groups: dict[str | None, list[tuple[int, bytes]]] = {}
    for index, payload in enumerate(records):
        try:
            epoch = json.loads(payload).get("epoch")
        except (ValueError, AttributeError):
            epoch = next(reversed(groups), None)      # unreadable: its neighbours' chain names it
        groups.setdefault(epoch if isinstance(epoch, str) else None, []).append((index, payload))
    out: list[EpochReport] = []
    for number, (epoch, items) in enumerate(groups.items()):
        payloads = [p for _i, p in items]
        first = number == 0
        start, opening_seq = None, None
        try:
            opening = json.loads(payloads[0])
            data, opening_seq = opening.get("data"), opening.get("seq")
            if isinstance(data, dict) and data.get("type") == "epoch":
                start = data
        except (ValueError, AttributeError):
            pass
        # Upgraded from a release before epochs: the first epoch goes on at the next seq (not after a loss, at 1).
        before = out[-1].chain if number == 1 and out[-1].epoch is None else None
        if before is not None and before.ok and before.last_seq is not None and start is None \
                and opening_seq != 1:
            chain = verify_chain(payloads, public_key, prev=before.last_hash, first_seq=before.last_seq + 1)
        else:
            chain = verify_chain(payloads, public_key, prev=prev if first else None,
                                 first_seq=first_seq if first else None)
        out.append(EpochReport(epoch, [i for i, _p in items], chain, start))
    return out


def ack_document(kiosk: str, ids: list[str], *, ts_ms: int | None = None) -> dict[str, Any]:
    """An unsigned ``tx/ack`` body; ``signing.sign(doc, key_id, key, KIND_ACK)`` signs it."""
    return {"v": 1, "ts": int(time.time() * 1000) if ts_ms is None else ts_ms, "kiosk": kiosk, "ids": ids}


def verify_ack(payload: bytes, kiosk: str, keys: Iterable[bytes]) -> list[str]:
    """The ids of a ``tx/ack`` signed by one of ``keys`` for ``kiosk``; ValueError naming what is wrong."""
    doc = loads_strict(payload)     # signed: a duplicate key could read differently elsewhere
    ids = _ack_ids(doc)
    if "sig" not in doc:
        raise ValueError("unsigned; this kiosk trusts only acks signed with evidence.ack_public_keys")
    if doc.get("kiosk") != kiosk:
        raise ValueError(f"signed for kiosk {doc.get('kiosk')!r}, not {kiosk!r}")
    if not any(verify(doc, key, KIND_ACK) for key in keys):
        raise ValueError(f"signature (key_id {doc.get('key_id')!r}) does not verify with evidence.ack_public_keys")
    return ids


def parse_ack(payload: bytes) -> list[str]:
    """The ids of a ``tx/ack`` payload (``{"v":1,"ts":...,"ids":[...]}``); ValueError if malformed."""
    return _ack_ids(loads_strict(payload))


def _ack_ids(doc: Any) -> list[str]:
    ids = doc.get("ids") if isinstance(doc, dict) else None
    if not isinstance(ids, list) or len(ids) > MAX_ACK_IDS or \
            not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids):
        raise ValueError("tx/ack needs 'ids': a list of up to 10,000 id strings")
    return ids
