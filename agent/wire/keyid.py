# SPDX-License-Identifier: Apache-2.0
"""The one key id: how records, bundles and logs name a public key."""

from __future__ import annotations

import hashlib
from typing import Protocol

__all__ = ["key_id"]


class _RawPublicKey(Protocol):
    def public_bytes_raw(self) -> bytes: ...


def key_id(public: bytes | _RawPublicKey) -> str:
    """First 8 bytes of SHA-256 over the raw public key, hex (Ed25519 or X25519, raw bytes or key object).

    >>> key_id(bytes(32))
    '66687aadf862bd77'
    """
    raw = public if isinstance(public, (bytes, bytearray)) else public.public_bytes_raw()
    return hashlib.sha256(raw).hexdigest()[:16]
