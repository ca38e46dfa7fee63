# SPDX-License-Identifier: Apache-2.0
"""PostgreSQL connections and the kiosk registry.

    conn = connect(cfg.database.dsn)
    register_kiosk(conn, "k-0001", "north", public_key_raw, source="kioskctl")
    keys = load_kiosks(conn, "north")      # {"k-0001": KioskKeys(...)}

A kiosk is registered from what provisioning produces: its commissioning
slip's QR line ``{"v":1,"kiosk":...,"fleet":...,"sig":"<Ed25519 public key,
base64>","tls":...}`` or the ``device-ed25519.pub`` file (one base64 line).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.wire.keyid import key_id
from fleet.ledger.errors import LedgerDatabaseError, RegistrationError, SchemaTooNew
from fleet.ledger.kioskkeys import KioskKeys, SodiumKey
from fleet.ledger.schema import SCHEMA_VERSION, current_version

__all__ = ["connect", "KioskKeys", "SodiumKey", "Registration", "register_kiosk", "register_all", "load_kiosks",
           "parse_public_key", "parse_registrations", "read_registrations", "check_schema"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection, or LedgerDatabaseError saying where and why not."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        raise LedgerDatabaseError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from None


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Refuse a database this code cannot write: not migrated, or migrated by a newer release."""
    version = current_version(conn)
    conn.rollback()
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"the database is at schema version {version}, newer than this kiosk-ledger knows "
                           f"({SCHEMA_VERSION}); upgrade kiosk-ledger")
    if version < SCHEMA_VERSION:
        raise LedgerDatabaseError(f"the database is at schema version {version}, this kiosk-ledger needs "
                                  f"{SCHEMA_VERSION}: run `kiosk-ledger migrate` first")


@dataclasses.dataclass(frozen=True)
class Registration:
    kiosk: str
    fleet: str
    public_key: bytes       # raw 32-byte Ed25519


def parse_public_key(text: str) -> bytes:
    """Raw Ed25519 public key from base64 (the .pub file, the slip's ``sig``); RegistrationError otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise RegistrationError("public key: not base64") from None
    if len(raw) != 32:
        raise RegistrationError(f"public key: {len(raw)} bytes, an Ed25519 public key has 32")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise RegistrationError(f"public key: {exc}") from None
    return raw


def _registration(doc: Any, where: str) -> Registration:
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("kiosk", "fleet", "sig")):
        raise RegistrationError(f"{where}: expected the commissioning QR line "
                                '{"v":1,"kiosk":...,"fleet":...,"sig":"<public key>",...}')
    for field in ("kiosk", "fleet"):
        if not _ID.match(doc[field]):
            raise RegistrationError(f"{where}: {field} {doc[field]!r} is not a valid id")
    try:
        return Registration(doc["kiosk"], doc["fleet"], parse_public_key(doc["sig"]))
    except RegistrationError as exc:
        raise RegistrationError(f"{where}: {exc}") from None


def parse_registrations(text: str, where: str) -> list[Registration]:
    """Every kiosk a commissioning slip (text), its QR line, or JSON Lines of QR lines names."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            continue            # the slip's human-readable lines
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise RegistrationError(f"{where}:{number}: not JSON ({exc})") from None
        found.append(_registration(doc, f"{where}:{number}"))
    if not found:
        raise RegistrationError(f"{where}: no commissioning QR line (a JSON object with kiosk, fleet, sig) in it")
    return found


def register_kiosk(conn: psycopg.Connection[Any], kiosk: str, fleet: str, public_key: bytes, *,
                   source: str = "") -> str:
    """Register ``kiosk`` in ``fleet`` with ``public_key`` (raw); returns "registered", "key added" or "unchanged".

    A kiosk keeps every key it was registered with (records signed before a
    key rotation still verify); a kiosk on file under another fleet is refused.
    """
    if not _ID.match(kiosk) or not _ID.match(fleet):
        raise RegistrationError(f"kiosk {kiosk!r} / fleet {fleet!r}: letters, digits, '_', '-', '.'")
    raw = parse_public_key(base64.b64encode(public_key).decode())
    kid = key_id(raw)
    with conn.transaction():
        row = conn.execute("SELECT fleet FROM kiosks WHERE kiosk = %s FOR UPDATE", (kiosk,)).fetchone()
        if row is not None and row[0] != fleet:
            raise RegistrationError(f"kiosk {kiosk} is registered in fleet {row[0]!r}, not {fleet!r}")
        if row is None:
            conn.execute("INSERT INTO kiosks (kiosk, fleet, source) VALUES (%s, %s, %s)", (kiosk, fleet, source))
        added = conn.execute("INSERT INTO kiosk_keys (kiosk, kid, public_key) VALUES (%s, %s, %s) "
                             "ON CONFLICT DO NOTHING RETURNING kid", (kiosk, kid, raw)).fetchone()
    if row is None:
        return "registered"
    return "key added" if added else "unchanged"


def register_all(conn: psycopg.Connection[Any], items: Iterable[Registration], *, source: str) -> list[str]:
    """``register_kiosk`` for each; one line per kiosk saying what happened."""
    return [f"{r.kiosk} ({r.fleet}, key {key_id(r.public_key)}): "
            f"{register_kiosk(conn, r.kiosk, r.fleet, r.public_key, source=source)}" for r in items]


def load_kiosks(conn: psycopg.Connection[Any], fleet: str, only: list[str] | None = None) -> dict[str, KioskKeys]:
    """The registered kiosks of ``fleet`` with their keys (``only``: just these kiosk ids)."""
    out: dict[str, KioskKeys] = {}
    sql = ("SELECT k.kiosk, k.fleet, kk.kid, kk.public_key FROM kiosks k "
           "JOIN kiosk_keys kk USING (kiosk) WHERE k.fleet = %s")
    rows = conn.execute(sql + " AND k.kiosk = ANY(%s)", (fleet, only)).fetchall() if only is not None \
        else conn.execute(sql, (fleet,)).fetchall()
    for kiosk, kfleet, kid, raw in rows:
        entry = out.setdefault(kiosk, KioskKeys(kiosk, kfleet, {}))
        entry.keys[kid] = SodiumKey(bytes(raw))
    return out


def read_registrations(path: Path) -> list[Registration]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistrationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_registrations(text, str(path))
