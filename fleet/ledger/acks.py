# SPDX-License-Identifier: Apache-2.0
"""Signed ``tx/ack`` for what is committed and linked, batched per kiosk.

    sender = AckSender(conn, publish, AckSigner.from_file(path), fleet="north")
    sender.run_round()        # one round: select, sign, publish, mark (one transaction)

A round selects, with ``FOR UPDATE SKIP LOCKED`` (so two workers never
send the same ids at once), committed records of the fleet that are linked
in their chain and not yet acknowledged, and whose sealed evidence, if the
record announces one, is stored: the ack makes the kiosk erase its bundle,
so acknowledging before the ledger holds it could erase the only copy
(a bundle lost in transit is not published again by itself). With
``evidence_grace_s`` > 0 such a record is acknowledged that long after it
arrived anyway (a kiosk that crashed between its record and its bundle
never sends the bundle). It
signs one ``tx/ack`` per kiosk (up to ``max_ids`` ids each) with the
back-office key, publishes it QoS 1 and marks ``acked_at`` only for
acknowledgements the broker took. Only committed rows are ever read, so
nothing uncommitted can be acknowledged; a worker that dies after
publishing and before marking leaves them due, and they are acknowledged
again (harmless: the kiosk marks an id once).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.wire.contract import Topics, encode
from agent.wire.signing import KIND_ACK, sign
from agent.wire.txformat import ack_document
from fleet.keys import load_key
from fleet.ledger.observe import LedgerObserver

__all__ = ["AckSigner", "AckSender", "Publish"]

log = logging.getLogger("fleet.ledger.acks")

# ``publish(topic, payload) -> True`` once the broker acknowledged the QoS 1 publish.
Publish = Callable[[str, bytes], bool]

_DUE = """
SELECT t.kiosk, t.id, t.ctid FROM tx t
 WHERE t.fleet = %(fleet)s AND t.linked_at IS NOT NULL AND t.acked_at IS NULL
   AND (NOT t.has_evidence
        OR (%(grace)s > 0 AND t.received_at < now() - make_interval(secs => %(grace)s))
        OR EXISTS (SELECT 1 FROM evidence e WHERE e.kiosk = t.kiosk AND e.tx_id = t.id))
 ORDER BY t.kiosk, t.epoch, t.seq
 LIMIT %(limit)s
   FOR UPDATE OF t SKIP LOCKED
"""


@dataclasses.dataclass(frozen=True)
class AckSigner:
    """The back-office key that signs ``tx/ack`` (``kioskctl keys init --role backoffice``)."""

    key_id: str
    key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path, key_id: str | None = None) -> AckSigner:
        kid, key = load_key(path, key_id or None)
        return cls(kid, key)

    def document(self, kiosk: str, ids: list[str]) -> bytes:
        return encode(sign(ack_document(kiosk, ids), self.key_id, self.key, KIND_ACK))


class AckSender:
    """Acknowledges committed, linked records of one fleet; ``run_round`` from a timer thread."""

    def __init__(self, conn: psycopg.Connection[Any], publish: Publish, signer: AckSigner, *, fleet: str,
                 observer: LedgerObserver, max_ids: int = 1000, evidence_grace_s: float = 0.0,
                 round_limit: int = 20_000) -> None:
        self.conn = conn
        self.publish = publish
        self.signer = signer
        self.fleet = fleet
        self.observer = observer
        self.max_ids = max_ids
        self.grace = evidence_grace_s
        self.round_limit = round_limit

    def run_round(self) -> int:
        """Acknowledge what is due; returns how many ids the broker took."""
        done: list[tuple[str, str]] = []
        with self.conn.transaction():
            rows = self.conn.execute(_DUE, {"fleet": self.fleet, "grace": self.grace,
                                            "limit": self.round_limit}).fetchall()
            by_kiosk: dict[str, list[str]] = {}
            # The rows are locked (FOR UPDATE) until the commit, so each keeps its ctid: marking them by it
            # skips an index lookup per row (about a sixth of PostgreSQL's work for an acknowledgement).
            where: dict[tuple[str, str], str] = {}
            for kiosk, rid, ctid in rows:
                by_kiosk.setdefault(kiosk, []).append(rid)
                where[(kiosk, rid)] = ctid
            for kiosk, ids in by_kiosk.items():
                topic = Topics(self.fleet, kiosk).tx_ack
                for start in range(0, len(ids), self.max_ids):
                    chunk = ids[start:start + self.max_ids]
                    if not self.publish(topic, self.signer.document(kiosk, chunk)):
                        log.warning("tx/ack for %d record(s) of %s not confirmed by the broker; due again",
                                    len(chunk), kiosk)
                        break       # the broker is away: the rest stays due for the next round
                    done += [(kiosk, i) for i in chunk]
                    self.observer.acked(kiosk=kiosk, ids=len(chunk))
            if done:
                self.conn.execute("UPDATE tx SET acked_at = now() WHERE ctid = ANY(%s::tid[])",
                                  ([where[key] for key in done],))
        return len(done)
