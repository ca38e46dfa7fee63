# SPDX-License-Identifier: Apache-2.0
"""Evidence sealing: encrypt on the kiosk to the back office's X25519 key.

Part of the one wire contract: the agent seals with it, ``kioskctl unseal``
opens with it; neither copies a constant. A stolen kiosk holds only the
back office's *public* key and the ciphertext, so it cannot read back what
it collected.

    recipient = X25519PrivateKey.generate()                   # back office, once
    pub = recipient.public_key().public_bytes_raw()           # -> evidence.recipient_public_key
    bundle = seal(pub, "tx-000042", b'{"card": ...}')
    bundle.to_dict()          # what the `evidence` payload carries under "bundle"
    open_bundle(recipient, Bundle.from_dict(d), "tx-000042")  # -> plaintext bytes

Bundle format, version 1 (``FORMAT``), a JSON object with base64 fields:

====================  =========================================================
``format``            ``"kiosk-evidence/1"``
``alg``               ``"X25519-HKDF-SHA256-AES-256-GCM"``
``kid``               key id of the recipient: hex of SHA-256(recipient public
                      key)[:8], so the back office picks the right private key
``epk``               the kiosk's one-time ephemeral X25519 public key, 32 bytes
``salt``              32 random bytes, the HKDF salt
``nonce``             12 random bytes, the AES-GCM nonce
``ct``                AES-256-GCM ciphertext with its 16-byte tag appended
====================  =========================================================

Key derivation: ``shared = X25519(ephemeral_private, recipient_public)``;
``key = HKDF-SHA256(shared, length=32, salt=salt, info=INFO + epk + recipient
public key)``. Binding both public keys in ``info`` ties the key to this
exchange (no key-reuse across recipients). The associated data is exactly the
transaction id, UTF-8: a bundle moved to another transaction fails to open.
A fresh ephemeral key per bundle means the nonce never repeats under a key.

The plaintext is UTF-8 JSON in format ``CONTENT_FORMAT`` (``agent.sessions.evidence``
builds it; :func:`parse_content` reads it on the back-office side).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import AgentError
from agent.wire.keyid import key_id

__all__ = ["FORMAT", "ALG", "INFO", "CONTENT_FORMAT", "parse_content",
           "Bundle", "SealingError", "seal", "open_bundle", "key_id",
           "load_private_key", "save_private_key", "public_key_b64", "X25519PrivateKey"]

FORMAT = "kiosk-evidence/1"
CONTENT_FORMAT = "kiosk-evidence-content/1"      # the plaintext inside (agent.sessions.evidence)
ALG = "X25519-HKDF-SHA256-AES-256-GCM"
INFO = b"kiosk-agent evidence v1"
_SALT_LEN = 32
_NONCE_LEN = 12
_TAG_LEN = 16


class SealingError(AgentError):
    """A bundle could not be sealed or opened (wrong key, wrong tx id, tampered, malformed)."""

    code = "agent.evidence.sealing"


@dataclasses.dataclass(frozen=True)
class Bundle:
    """One sealed evidence bundle (see the module docstring for the format)."""

    kid: str
    epk: bytes
    salt: bytes
    nonce: bytes
    ct: bytes
    format: str = FORMAT
    alg: str = ALG

    def to_dict(self) -> dict[str, str]:
        b64 = _b64
        return {"format": self.format, "alg": self.alg, "kid": self.kid, "epk": b64(self.epk),
                "salt": b64(self.salt), "nonce": b64(self.nonce), "ct": b64(self.ct)}

    @classmethod
    def from_dict(cls, data: Any) -> Bundle:
        """Parse and check lengths; SealingError on anything malformed."""
        if not isinstance(data, dict):
            raise SealingError("bundle is not a JSON object")
        if data.get("format") != FORMAT or data.get("alg") != ALG:
            raise SealingError(f"unsupported bundle format {data.get('format')!r} / {data.get('alg')!r}")
        try:
            kid = str(data["kid"])
            epk, salt, nonce, ct = (_unb64(data[k]) for k in ("epk", "salt", "nonce", "ct"))
        except KeyError as exc:
            raise SealingError(f"bundle lacks {exc.args[0]!r}") from None
        if len(epk) != 32 or len(salt) != _SALT_LEN or len(nonce) != _NONCE_LEN or len(ct) < _TAG_LEN:
            raise SealingError("bundle field of the wrong length")
        return cls(kid=kid, epk=epk, salt=salt, nonce=nonce, ct=ct)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise SealingError("bundle field is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SealingError("bundle field is not valid base64") from None


def _derive(shared: bytes, salt: bytes, epk: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO + epk + recipient).derive(shared)


def seal(recipient_public_key: bytes, tx_id: str, plaintext: bytes) -> Bundle:
    """Encrypt ``plaintext`` to the recipient, binding ``tx_id`` as associated data."""
    if len(recipient_public_key) != 32:
        raise SealingError("recipient public key must be 32 raw bytes")
    if not tx_id:
        raise SealingError("a transaction id is required as associated data")
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public_key))
    salt = os.urandom(_SALT_LEN)
    nonce = os.urandom(_NONCE_LEN)
    key = _derive(shared, salt, epk, recipient_public_key)
    ct = AESGCM(key).encrypt(nonce, plaintext, tx_id.encode("utf-8"))
    return Bundle(kid=key_id(recipient_public_key), epk=epk, salt=salt, nonce=nonce, ct=ct)


def open_bundle(private_key: X25519PrivateKey, bundle: Bundle, tx_id: str) -> bytes:
    """Decrypt; SealingError if the key, the tx id or any byte is wrong."""
    recipient = private_key.public_key().public_bytes_raw()
    if bundle.kid != key_id(recipient):
        raise SealingError(f"bundle is sealed to key {bundle.kid}, not to {key_id(recipient)}")
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(bundle.epk))
        key = _derive(shared, bundle.salt, bundle.epk, recipient)
        return AESGCM(key).decrypt(bundle.nonce, bundle.ct, tx_id.encode("utf-8"))
    except (InvalidTag, ValueError):
        raise SealingError(f"bundle for {tx_id} does not open: wrong transaction id, key or tampered") from None


def parse_content(plaintext: bytes) -> dict[str, Any]:
    """Back-office side: the decrypted JSON, with photos decoded to bytes."""
    doc: dict[str, Any] = json.loads(plaintext.decode("utf-8"))
    if doc.get("format") != CONTENT_FORMAT:
        raise ValueError(f"unknown evidence content format {doc.get('format')!r}")
    doc["photo_wlt"] = base64.b64decode(doc["photo_wlt"])
    if doc.get("face_jpeg"):
        doc["face_jpeg"] = base64.b64decode(doc["face_jpeg"])
    return doc


# -- back-office key files -------------------------------------------------------

def public_key_b64(private_key: X25519PrivateKey) -> str:
    """The value for ``evidence.recipient_public_key`` in a kiosk's config."""
    return _b64(private_key.public_key().public_bytes_raw())


def save_private_key(private_key: X25519PrivateKey, path: Path) -> None:
    """Write PKCS#8 PEM, mode 0600 (the back office's key: never on a kiosk)."""
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_private_key(path: Path) -> X25519PrivateKey:
    """Read a PKCS#8 PEM or a base64 raw 32-byte X25519 private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SealingError(f"cannot read {path}: {exc}") from exc
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SealingError(f"{path}: not a readable PEM private key ({exc})") from None
        if not isinstance(key, X25519PrivateKey):
            raise SealingError(f"{path}: not an X25519 private key")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SealingError(f"{path}: expected PKCS#8 PEM or base64 of 32 raw bytes")
    return X25519PrivateKey.from_private_bytes(raw)
