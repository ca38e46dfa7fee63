# SPDX-License-Identifier: Apache-2.0
"""Light simulated kiosks for the ledger's tests and bench: real keys, real signed chains, no agent.

    kiosk = LightKiosk("k-1", "north")
    topic, payload = kiosk.record({"type": "synthetic", "service": "bill-water"})
    register_kiosk(conn, kiosk.kiosk, kiosk.fleet, kiosk.public_key)

Each record is what ``agent.store.journal`` would publish: built with the
same ``agent.wire.txformat.build_record`` and signed with the same libsodium
signer, hash-chained, gapless within the kiosk's epoch.
"""

from __future__ import annotations

import os
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.wire.canonical import canonical
from agent.wire.contract import Topics
from agent.wire.keyid import key_id
from agent.wire.signing import fast_signer, public_raw
from agent.wire.txformat import GENESIS, build_record, record_hash

__all__ = ["LightKiosk", "synthetic"]


def synthetic(n: int) -> dict[str, Any]:
    """A PII-free transaction: a masked id only, as a kiosk's synthetic load."""
    return {"type": "synthetic", "n": n, "service": "bill-water", "outcome": "completed",
            "id_masked": f"11************{n % 10_000:04d}", "duration_ms": 31_000 + n, "receipt": None,
            "evidence": False}


class LightKiosk:
    """A kiosk's journal without the kiosk: key, epoch, seq and chain head."""

    def __init__(self, kiosk: str, fleet: str, *, key: Ed25519PrivateKey | None = None) -> None:
        self.kiosk, self.fleet = kiosk, fleet
        self.key = key or Ed25519PrivateKey.generate()
        self.sign = fast_signer(self.key)
        self.kid = key_id(self.key.public_key())
        self.epoch = os.urandom(16).hex()
        self.seq, self.prev = 0, GENESIS
        self.topic = Topics(fleet, kiosk).tx

    @property
    def public_key(self) -> bytes:
        return public_raw(self.key)

    def record(self, data: dict[str, Any] | None = None, *, ts_ms: int | None = None) -> tuple[str, bytes]:
        """The next record of the chain: (topic, payload)."""
        self.seq += 1
        payload = build_record(self.sign, self.kid, self.kiosk, self.epoch, self.seq, self.prev,
                               canonical(data if data is not None else synthetic(self.seq)), os.urandom(16).hex(),
                               int(time.time() * 1000) if ts_ms is None else ts_ms)
        self.prev = record_hash(payload)
        return self.topic, payload
