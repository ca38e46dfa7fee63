# SPDX-License-Identifier: Apache-2.0
"""Checks one ``tx`` or ``evidence`` message on its own: no database, no I/O.

    item = check_tx(topic, payload, kiosks)       # TxRecord, or Rejection with a stable reason
    item = check_evidence(topic, payload, kiosks) # EvidenceItem, or Rejection

What needs the other records (the chain to the predecessor, duplicates,
conflicts) is decided in PostgreSQL by :mod:`fleet.ledger.store`, under a
per-kiosk lock. The signature, the form and the registration are checked
here with the wire contract (``agent.wire.txformat.verify_record``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.wire.contract import loads_strict, parse_topic
from agent.wire.txformat import GENESIS, verify_record
from fleet.ledger.kioskkeys import KioskKeys

__all__ = ["TxRecord", "EvidenceItem", "Rejection", "check_tx", "check_evidence", "REASONS"]

# Stable quarantine reason codes (the ``reason`` column, the metric label, the log line).
REASONS = {
    "unknown_kiosk": "the kiosk is not registered",
    "fleet_mismatch": "the kiosk is registered in another fleet",
    "kiosk_mismatch": "the record names another kiosk than its topic",
    "malformed": "not a record of the contract",
    "unknown_key": "signed with a key the kiosk was not registered with",
    "bad_signature": "the signature does not verify",
    "chain_break": "prev does not name the record before it",
    "id_conflict": "an id already stored with other bytes",
    "seq_conflict": "an (epoch, seq) already stored with another record",
    "evidence_conflict": "evidence for a transaction already stored with other bytes",
}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class TxRecord:
    """A record whose form, signature and registration are good; ``hash`` is SHA-256 of its payload."""

    topic: str
    fleet: str
    kiosk: str
    epoch: str               # "" for a record from before epochs existed
    seq: int
    id: str
    hash: str
    prev: str
    kid: str
    ts_ms: int
    kind: str
    has_evidence: bool
    payload: bytes
    epoch_start: dict[str, Any] | None = None     # data of an epoch's opening record after a lost store


@dataclasses.dataclass(frozen=True)
class EvidenceItem:
    topic: str
    fleet: str
    kiosk: str
    tx_id: str
    seq: int | None
    sha256: str
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Rejection:
    """What goes to the quarantine table: never stored as a record, never acknowledged."""

    topic: str
    kind: str                # "tx" | "evidence"
    reason: str              # a key of REASONS
    detail: str
    payload: bytes
    fleet: str | None = None
    kiosk: str | None = None
    record_id: str | None = None
    epoch: str | None = None
    seq: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


def _context(payload: bytes) -> dict[str, Any]:
    """id, epoch and seq of a payload for the quarantine row, if it has them (never trusted)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(doc.get("id"), str):
        out["record_id"] = doc["id"][:128].replace("\x00", "")     # PostgreSQL text holds no NUL
    if isinstance(doc.get("epoch"), str):
        out["epoch"] = doc["epoch"][:64].replace("\x00", "")
    if isinstance(doc.get("seq"), int) and not isinstance(doc.get("seq"), bool) and 0 <= doc["seq"] < 2**63:
        out["seq"] = doc["seq"]
    return out


def _registered(topic: str, kind: str, payload: bytes, kiosks: Mapping[str, KioskKeys]
                ) -> tuple[str, str, KioskKeys] | Rejection:
    parsed = parse_topic(topic)
    if parsed is None:
        return Rejection(topic, kind, "malformed", "not a kiosk/v1 topic", payload)
    fleet, kiosk, _rest = parsed
    entry = kiosks.get(kiosk)
    if entry is None:
        return Rejection(topic, kind, "unknown_kiosk", f"kiosk {kiosk!r} is not registered", payload, fleet, kiosk,
                         **_context(payload))
    if entry.fleet != fleet:
        return Rejection(topic, kind, "fleet_mismatch", f"kiosk {kiosk!r} is registered in fleet {entry.fleet!r}",
                         payload, fleet, kiosk, **_context(payload))
    return fleet, kiosk, entry


def check_tx(topic: str, payload: bytes, kiosks: Mapping[str, KioskKeys]) -> TxRecord | Rejection:
    """Form, signature (with the topic kiosk's registered keys), kiosk and field checks of one record."""
    found = _registered(topic, "tx", payload, kiosks)
    if isinstance(found, Rejection):
        return found
    fleet, kiosk, entry = found

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(topic, "tx", reason, detail, payload, fleet, kiosk, **_context(payload))

    try:
        # SodiumKey has Ed25519PublicKey's verify(); the contract's checks stay agent.wire's.
        rec = verify_record(payload, cast(Mapping[str, Ed25519PublicKey], entry.keys))
    except ValueError as exc:
        text = str(exc)
        if text.startswith("unknown key id"):
            return reject("unknown_key", text)
        return reject("bad_signature" if text == "bad signature" else "malformed", text)
    if rec.get("kiosk") != kiosk:
        return reject("kiosk_mismatch", f"record of kiosk {rec.get('kiosk')!r} on the topic of {kiosk!r}")
    seq, record_id, prev, epoch = rec.get("seq"), rec.get("id"), rec.get("prev"), rec.get("epoch", "")
    ts, data = rec.get("ts"), rec.get("data")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**53:
        return reject("malformed", f"seq {seq!r} is not a positive integer")
    if not isinstance(record_id, str) or not 0 < len(record_id) <= 128:
        return reject("malformed", "id is not a string of 1 to 128 characters")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        return reject("malformed", "prev is not 64 hex digits")
    if not isinstance(epoch, str) or len(epoch) > 64:
        return reject("malformed", "epoch is not a string of up to 64 characters")
    if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(data, dict):
        return reject("malformed", "ts is not an integer or data not an object")
    if (seq == 1) != (prev == GENESIS):
        return reject("chain_break", f"seq {seq} with prev {'genesis' if prev == GENESIS else prev[:12]}: "
                                     "only an epoch's first record (seq 1) follows genesis")
    kind = data.get("type")
    start = data if kind == "epoch" and seq == 1 else None
    return TxRecord(topic, fleet, kiosk, epoch, seq, record_id, hashlib.sha256(payload).hexdigest(), prev,
                    str(rec.get("kid", "")), ts, kind if isinstance(kind, str) else "?",
                    data.get("evidence") is True, payload, start)


def check_evidence(topic: str, payload: bytes, kiosks: Mapping[str, KioskKeys]) -> EvidenceItem | Rejection:
    """An ``evidence`` message of a registered kiosk naming its transaction; its bundle stays sealed."""
    found = _registered(topic, "evidence", payload, kiosks)
    if isinstance(found, Rejection):
        return found
    fleet, kiosk, _entry = found
    try:
        doc = loads_strict(payload)
    except ValueError as exc:
        return Rejection(topic, "evidence", "malformed", f"not JSON: {exc}", payload, fleet, kiosk)
    if not isinstance(doc, dict) or not isinstance(doc.get("tx"), str) or not 0 < len(doc["tx"]) <= 128 \
            or not isinstance(doc.get("bundle"), dict):
        return Rejection(topic, "evidence", "malformed", "expected tx (string) and bundle (object)", payload,
                         fleet, kiosk)
    if doc.get("kiosk") != kiosk:
        return Rejection(topic, "evidence", "kiosk_mismatch", f"evidence of kiosk {doc.get('kiosk')!r}", payload,
                         fleet, kiosk, record_id=doc["tx"])
    seq = doc.get("seq")
    return EvidenceItem(topic, fleet, kiosk, doc["tx"],
                        seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63 else None,
                        hashlib.sha256(payload).hexdigest(), payload)
