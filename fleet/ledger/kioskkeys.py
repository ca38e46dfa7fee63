# SPDX-License-Identifier: Apache-2.0
"""A registered kiosk's public signing keys, as the checks use them (no database here).

    entry = KioskKeys("k-0001", "north", {key_id: SodiumKey(raw)})
    entry.keys[kid].verify(signature, data)      # raises InvalidSignature

Apart from :mod:`fleet.ledger.db` (which fills them from PostgreSQL), so a
checking process (:mod:`fleet.ledger.checkproc`) imports no database driver.
"""

from __future__ import annotations

import dataclasses

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["KioskKeys", "SodiumKey"]


class SodiumKey:
    """An Ed25519 public key verified through libsodium (PyNaCl), with ``Ed25519PublicKey.verify``'s interface.

    The ledger is bound by signature checks: libsodium verifies in about
    55 % of OpenSSL's time here (58 us against 109 us a record; the journal
    already signs with it, see ``agent.wire.signing.fast_signer``), and the
    call runs without the GIL. It is stricter than OpenSSL about
    non-canonical signatures, which a kiosk's deterministic signer never makes.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        Ed25519PublicKey.from_public_bytes(raw)       # the same check of the point as everywhere else
        self.raw = raw

    def verify(self, signature: bytes, data: bytes) -> None:
        if len(signature) != 64:
            raise InvalidSignature
        try:
            nacl.bindings.crypto_sign_open(signature + data, self.raw)
        except nacl.exceptions.BadSignatureError:
            raise InvalidSignature from None

    def public_bytes_raw(self) -> bytes:
        return self.raw


@dataclasses.dataclass(frozen=True)
class KioskKeys:
    """A registered kiosk: its fleet and its public signing keys by key id."""

    kiosk: str
    fleet: str
    keys: dict[str, SodiumKey]
