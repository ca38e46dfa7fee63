# SPDX-License-Identifier: Apache-2.0
"""Operator key pairs for signing fleet commands.

    paths = init_key(Path("~/.kioskctl"), "ops-anna", role="admin")
    key_id, key = load_key(paths.private)        # key id from the file name
    print(config_snippet("ops-anna", key, "admin"))

The private key is PKCS#8 PEM, mode 0600, created with ``O_EXCL`` so an
existing key is never overwritten. The public key file holds the one
base64 line a kiosk's ``[[commands.operators]] public_key`` takes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.wire.signing import public_b64
from fleet.errors import KeyFileError

__all__ = ["KeyError_", "KeyFileError", "KeyPaths", "init_key", "load_key", "config_snippet", "backoffice_snippet",
           "evidence_snippet"]

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# The name kioskctl's callers and tests have used; the class is the fleet tree's.
KeyError_ = KeyFileError


@dataclasses.dataclass(frozen=True)
class KeyPaths:
    private: Path
    public: Path


def init_key(directory: Path, key_id: str) -> tuple[KeyPaths, Ed25519PrivateKey]:
    """Generate ``<dir>/<id>.key`` (0600) and ``<dir>/<id>.pub``."""
    if not _ID.match(key_id):
        raise KeyFileError(f"key id {key_id!r}: lower-case letters, digits, '-' or '_', 1 to 64 characters")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = KeyPaths(directory / f"{key_id}.key", directory / f"{key_id}.pub")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(paths.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{paths.private} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    paths.public.write_text(public_b64(key) + "\n", encoding="ascii")
    return paths, key


def load_key(path: Path, key_id: str | None = None) -> tuple[str, Ed25519PrivateKey]:
    """The key and its id (``key_id`` or the file name without ``.key``)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the private key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key_id or path.name.removesuffix(".key"), key


def config_snippet(key_id: str, key: Ed25519PrivateKey, role: str) -> str:
    """What to paste into a kiosk's agent.toml to trust this key."""
    if role == "backoffice":
        return backoffice_snippet(public_b64(key), key_id)
    return f'[[commands.operators]]\nid = "{key_id}"\npublic_key = "{public_b64(key)}"\nrole = "{role}"\n'


# Both back-office keys live in one [evidence] table, and TOML refuses a
# table defined twice: evidence-keygen's snippet opens the table, the
# acknowledgement key's snippet adds a line to it (its header commented out
# for a file that has no [evidence] table yet), so pasting both, in that
# order, gives one table.
def evidence_snippet(recipient_b64: str, comment: str) -> str:
    """``kioskctl evidence-keygen``'s lines: the [evidence] table with the sealing key."""
    return (f"# {comment}\n[evidence]\nrecipient_public_key = \"{recipient_b64}\"\n"
            "# ack_public_keys: the line kioskctl keys init --role backoffice prints goes here\n")


def backoffice_snippet(ack_b64: str, key_id: str | None = None) -> str:
    """``keys init --role backoffice``'s lines: the ack key for the [evidence] table evidence-keygen's lines
    open, then (with ``key_id``) the same key trusted for ``tx-resend`` alone, so the ledger can ask for a gap."""
    lines = ("# back-office acknowledgement key: below the [evidence] lines of kioskctl evidence-keygen\n"
             "# (uncomment the header only if agent.toml has no [evidence] table; a second key joins the list)\n"
             f"# [evidence]\nack_public_keys = [\"{ack_b64}\"]\n")
    if key_id is None:
        return lines
    return (lines + "# the same key may ask for transactions to be sent again (tx-resend), and nothing else\n"
            f'[[commands.operators]]\nid = "{key_id}"\npublic_key = "{ack_b64}"\nrole = "backoffice"\n')
