# SPDX-License-Identifier: Apache-2.0
"""The kiosk's own keys, generated on the device, and its TLS certificate.

    signing = ensure_signing_key(path)               # Ed25519, kept if present
    tls = ensure_tls_key(path)                       # EC P-256, kept if present
    csr_pem = make_csr(tls, "k-0001")
    bundle = check_bundle(pem, tls, "k-0001")        # leaf + CA, refuses a misfit
    signing_fingerprint(signing), cert_fingerprint(bundle.cert)

Private keys are PKCS#8 PEM, written 0600 through ``O_EXCL`` (never over an
existing key; rotation renames the old one first). Nothing here imports
``fleet``: the kiosk checks a bundle with the CA certificate inside it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.errors import EnrolError, KeyProblem

__all__ = [
    "Enrolled",
    "cert_fingerprint",
    "check_bundle",
    "csr_matches",
    "diagnose_certificate",
    "ensure_signing_key",
    "ensure_tls_key",
    "make_csr",
    "signing_fingerprint",
    "signing_public_b64",
    "write_private_key",
]


def write_private_key(path: Path, pem: bytes) -> None:
    """Create ``path`` 0600 with ``pem``; refuse if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyProblem(f"{path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def _pkcs8(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyProblem(f"cannot read the key {path}: {exc}; move it away or re-run with --rotate-keys") from None


def _rotate(path: Path) -> None:
    # The old key is kept beside the new one until the installer deletes it:
    # a rotation by mistake must not brick a kiosk whose certificate is out.
    if path.exists():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path.rename(path.with_name(f"{path.name}.old-{stamp}"))


def ensure_signing_key(path: Path, *, rotate: bool = False) -> tuple[Ed25519PrivateKey, bool]:
    """The Ed25519 signing key at ``path`` and whether it was created now."""
    if rotate:
        _rotate(path)
    if path.exists():
        key = _load(path)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyProblem(f"{path} is not an Ed25519 private key")
        return key, False
    key = Ed25519PrivateKey.generate()
    write_private_key(path, _pkcs8(key))
    return key, True


def ensure_tls_key(path: Path, *, rotate: bool = False) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The EC P-256 TLS key at ``path`` and whether it was created now."""
    if rotate:
        _rotate(path)
    if path.exists():
        key = _load(path)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyProblem(f"{path} is not an EC private key")
        return key, False
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(path, _pkcs8(key))
    return key, True


def make_csr(key: ec.EllipticCurvePrivateKey, kiosk_id: str) -> bytes:
    """A PEM CSR with CN = the kiosk id, signed by the TLS key."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kiosk_id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_matches(pem: bytes, key: ec.EllipticCurvePrivateKey, kiosk_id: str) -> bool:
    """Whether an existing CSR is for this key and id (then it is kept byte for byte)."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        return False
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return csr.public_key() == key.public_key() and len(cn) == 1 and cn[0].value == kiosk_id


@dataclasses.dataclass(frozen=True)
class Enrolled:
    cert: x509.Certificate
    ca_cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)


def check_bundle(pem: bytes, key: ec.EllipticCurvePrivateKey, kiosk_id: str, *,
                 now: dt.datetime | None = None) -> Enrolled:
    """Accept a bundle (kiosk certificate, then CA) only if it is this kiosk's, valid and CA-issued."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise EnrolError(f"the bundle is not PEM certificates: {exc}") from None
    if len(certs) != 2:
        raise EnrolError(f"a bundle holds 2 certificates (kiosk, then CA); this one holds {len(certs)}")
    leaf, ca_cert = certs
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrolError("the bundle's certificate was not issued by the bundle's CA") from None
    # The id first: another kiosk's bundle also has another key, and its id is what the installer can act on.
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cn) != 1 or cn[0].value != kiosk_id:
        raise EnrolError(f"the bundle is for kiosk {cn[0].value if cn else '?'!r}, and this is kiosk {kiosk_id!r}: "
                         f"use {kiosk_id}'s bundle")
    if leaf.public_key() != key.public_key():
        raise EnrolError("the bundle's certificate is for another key (signed from an old CSR? "
                         "send keys/tls.csr again)")
    now = now or dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise EnrolError(f"the bundle's certificate is valid {leaf.not_valid_before_utc:%Y-%m-%d} to "
                         f"{leaf.not_valid_after_utc:%Y-%m-%d}, not now (check the clock)")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise EnrolError("the bundle's certificate is not for TLS client authentication")
    return Enrolled(leaf, ca_cert)


def signing_public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def signing_fingerprint(key: Ed25519PrivateKey) -> str:
    """SHA-256 of the raw public key, first 16 bytes as colon hex (short enough for a slip)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16].hex(":").upper()


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, colon hex (as ``openssl x509 -fingerprint -sha256``)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def diagnose_certificate(cert_pem: bytes, ca_pem: bytes, *, now: dt.datetime | None = None) -> str | None:
    """Why a broker would refuse this client certificate, or None if it looks fine.

    A broker closes the connection without saying why (mosquitto logs only
    "certificate verify failed"), so the kiosk states the likely cause itself:

        diagnose_certificate(crt, ca)  # "the certificate expired on 2026-01-02 (renew it: …)"
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        return f"the certificate file is not a PEM certificate: {exc}"
    now = now or dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        return (f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                "(renew it: kioskctl ca sign keys/tls.csr, then kiosk-provision --bundle)")
    if now < cert.not_valid_before_utc:
        return (f"the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
                "the kiosk's clock is behind (check time sync)")
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        cas = []
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return None
        except (ValueError, TypeError, InvalidSignature):
            continue
    return (f"the certificate was issued by {cert.issuer.rfc4514_string()!r}, not by the CA in the CA file: "
            "the broker trusts the fleet CA only (re-enrol with the fleet's CA)")
