# SPDX-License-Identifier: Apache-2.0
"""Sealed evidence bundles: their content, their store, their deletion.

A completed session that read an ID card leaves one bundle: the full card
record, its WLT photo, the mailing address where a document is mailed, and
the captured face JPEG only where the service records a legal basis or the
citizen consented (default deny). The content is sealed
(:mod:`agent.wire.sealing`) the moment it is built; only ciphertext is ever
written to disk, logged size-only, or published.

Bundles are kept in the ``evidence`` table of the agent database until the
back office acknowledges the transaction (``tx/ack``) or
``evidence.retention_days`` pass; deletion runs with SQLite's
``secure_delete`` so freed pages are zeroed.

    store = EvidenceStore(db_path, retention_days=30)
    payload = store.put(kiosk_id, tx_id, seal_content(pub, tx_id, content))
    store.ack(["tx-1", "tx-2"])           # -> number of bundles deleted
    store.erase_acknowledged()             # at start: acks the journal marked before this listened
    store.sweep()                          # retention

Plaintext (inside the seal), UTF-8 JSON::

    {"format": "kiosk-evidence-content/1", "tx": ID, "service": ID,
     "card": {...every field of the card record...},
     "photo_wlt": BASE64 (1024 bytes), "face_jpeg": BASE64 | null,
     "face_basis": "legal_basis" | "consent" | null, "legal_basis": TEXT | null,
     "mailing": {"recipient", "phone", "address", "postcode"} | null}
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.store.schema import migrate, refuse_newer
from agent.wire.contract import encode, envelope
from agent.wire.sealing import CONTENT_FORMAT, Bundle, parse_content, seal  # the content format is wire contract

__all__ = ["EvidenceContent", "EvidenceStore", "CONTENT_FORMAT", "seal_content", "evidence_payload",
           "parse_content"]

log = logging.getLogger(__name__)

@dataclasses.dataclass
class EvidenceContent:
    """What goes into one bundle. Holds PII: build it, seal it, ``wipe()`` it."""

    service: str
    card: dict[str, Any]
    photo_wlt: bytearray
    face_jpeg: bytearray | None = None
    face_basis: str | None = None        # "legal_basis" | "consent" | None (face not included)
    legal_basis: str | None = None
    mailing: dict[str, str] | None = None

    def plaintext(self, tx_id: str) -> bytearray:
        doc = {"format": CONTENT_FORMAT, "tx": tx_id, "service": self.service, "card": self.card,
               "photo_wlt": base64.b64encode(self.photo_wlt).decode("ascii"),
               "face_jpeg": base64.b64encode(self.face_jpeg).decode("ascii") if self.face_jpeg else None,
               "face_basis": self.face_basis if self.face_jpeg else None,
               "legal_basis": self.legal_basis, "mailing": self.mailing}
        return bytearray(json.dumps(doc, ensure_ascii=False, sort_keys=True).encode("utf-8"))

    def contents(self) -> list[str]:
        """PII-free list of what the bundle carries, for the public payload."""
        out = ["card", "photo_wlt"]
        if self.face_jpeg:
            out.append("face_jpeg")
        if self.mailing:
            out.append("mailing")
        return out

    def wipe(self) -> None:
        """Zero the byte buffers and drop every reference.

        Python strings (the card's text fields) cannot be overwritten in
        place; dropping the last reference is the best the language allows.
        """
        for buf in (self.photo_wlt, self.face_jpeg):
            if buf is not None:
                buf[:] = bytes(len(buf))
        self.card.clear()
        if self.mailing:
            self.mailing.clear()
        self.face_jpeg = None
        self.mailing = None


def seal_content(recipient_public_key: bytes, tx_id: str, content: EvidenceContent) -> Bundle:
    """Seal ``content`` for ``tx_id``; the plaintext buffer is zeroed before returning."""
    plain = content.plaintext(tx_id)
    try:
        return seal(recipient_public_key, tx_id, bytes(plain))
    finally:
        plain[:] = bytes(len(plain))


def evidence_payload(kiosk: str, tx_id: str, seq: int | None, service: str, bundle: Bundle,
                     contents: list[str]) -> bytes:
    """The ``evidence`` message (schema ``agent/wire/schemas/evidence.json``)."""
    fields: dict[str, Any] = {"tx": tx_id, "service": service, "contents": contents,
                              "bundle": bundle.to_dict()}
    if seq is not None:
        fields["seq"] = seq
    return encode(envelope(kiosk, **fields))


class EvidenceStore:
    """Sealed bundles on disk until acknowledged or expired.

    Uses its own SQLite connection to the agent database, so its short
    transactions never interleave with another component's open one.
    """

    def __init__(self, db_path: Path, *, retention_days: float) -> None:
        self.path = db_path
        self.retention_s = retention_days * 86_400.0
        try:
            self.conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open evidence store {db_path}: {exc}") from exc
        try:
            # The file's version first: a newer release's file is left as it is, journal mode included.
            refuse_newer(self.conn)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            migrate(self.conn)       # its table is declared with the rest (agent/store/schema.py)
        except (sqlite3.Error, StoreError) as exc:
            self.conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open evidence store {db_path}: {exc}") from exc

    def put(self, tx_id: str, payload: bytes, *, now: float | None = None) -> None:
        """Keep the sealed ``evidence`` payload for ``tx_id`` (durable on return)."""
        created = int((time.time() if now is None else now) * 1000)
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("INSERT OR REPLACE INTO evidence(tx_id, created_ms, payload) VALUES (?, ?, ?)",
                                  (tx_id, created, payload))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store evidence for {tx_id}: {exc}") from exc

    def get(self, tx_id: str) -> bytes | None:
        row = self.conn.execute("SELECT payload FROM evidence WHERE tx_id=?", (tx_id,)).fetchone()
        return bytes(row[0]) if row else None

    def ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT tx_id FROM evidence ORDER BY created_ms")]

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM evidence").fetchone()[0])

    def ack(self, tx_ids: Iterable[str]) -> int:
        """Delete the bundles of transactions the back office has committed."""
        ids = [str(i) for i in tx_ids]
        if not ids:
            return 0
        return self._delete("DELETE FROM evidence WHERE tx_id=?", [(i,) for i in ids])

    def erase_acknowledged(self) -> int:
        """Delete the bundles whose journal record is already acknowledged; returns how many.

        For a ``tx/ack`` marked before anyone listened for it (it arrived while
        the agent started): the journal has the mark, so the bundle goes now
        rather than at the end of its retention.
        """
        return self._delete("DELETE FROM evidence WHERE EXISTS (SELECT 1 FROM journal "
                            "WHERE journal.id = evidence.tx_id AND journal.acked_ms IS NOT NULL)", [()])

    def sweep(self, *, now: float | None = None) -> int:
        """Delete bundles older than the retention; returns how many."""
        cutoff = int(((time.time() if now is None else now) - self.retention_s) * 1000)
        return self._delete("DELETE FROM evidence WHERE created_ms < ?", [(cutoff,)])

    def _delete(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        try:
            # Zero freed cells too: the bundle is ciphertext, but deleted means gone.
            self.conn.execute("PRAGMA secure_delete=ON")
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                deleted = sum(self.conn.execute(sql, row).rowcount for row in rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete evidence: {exc}") from exc
        if deleted:
            log.info("deleted %d evidence bundle(s)", deleted)
        return deleted

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
