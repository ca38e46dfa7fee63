# SPDX-License-Identifier: Apache-2.0
"""The device's Ed25519 signing key: loaded from its path, or made on first start.

Every journal record is signed with it. On a kiosk provisioning generates
the key (``keys.signing_key`` in the configuration); when none is
configured the agent creates ``device-ed25519.pem`` in ``storage.dir`` on
first start (mode 0600, written to a temporary file, fsynced and renamed,
so a power cut leaves either no key or a whole one) and warns in production
mode, where a key nobody provisioned is a key nobody registered.

    key = load_or_create(cfg.keys.signing_key, cfg.storage.dir, production=True)
    key_id(key.public_key())        # "3f2a9c0b1d4e5f60"
    sign = fast_signer(key)         # the journal's hot path, same bytes as key.sign
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.errors import AgentError
from agent.store.database import fsync_dir
from agent.wire.keyid import key_id  # the one key id (records, bundles, logs)
from agent.wire.signing import fast_signer  # the journal's signer, beside the envelopes'

__all__ = [
    "DEVICE_KEY_NAME",
    "KeyError_",
    "device_key_path",
    "fast_signer",
    "key_id",
    "load_or_create",
    "load_private",
    "load_public",
    "public_pem",
]

log = logging.getLogger(__name__)

DEVICE_KEY_NAME = "device-ed25519.pem"


class KeyError_(AgentError):
    """The device key cannot be read, is not Ed25519, or is readable by others."""

    code = "agent.keys.invalid"


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key; refuse one others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read device key {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise KeyError_(f"device key {path} is readable by group or others (mode {mode & 0o777:o}); chmod 600")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"device key {path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"device key {path} is not Ed25519")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or from a private key file."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{path} is not an Ed25519 public key")
    return key


def _write_new(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def device_key_path(configured: Path | None, storage_dir: Path) -> Path:
    """Where the device key is: ``keys.signing_key``, else the one the agent makes in ``storage.dir``."""
    return Path(configured) if configured is not None else Path(storage_dir) / DEVICE_KEY_NAME


def load_or_create(configured: Path | None, storage_dir: Path, *, production: bool) -> Ed25519PrivateKey:
    """The configured key, else ``storage_dir/device-ed25519.pem``, made if missing.

    A configured path that is missing is an error (never silently replaced:
    the back office knows that key).
    """
    path = device_key_path(configured, storage_dir)
    if configured is not None or path.exists():
        return load_private(path)
    Path(storage_dir).mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    _write_new(path, key)
    if production:
        log.warning("no keys.signing_key configured: generated device key %s (id %s); register its public key "
                    "with the back office", path, key_id(key.public_key()))
    else:
        log.info("no keys.signing_key configured: generated device key %s (id %s)", path, key_id(key.public_key()))
    return key
