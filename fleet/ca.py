# SPDX-License-Identifier: Apache-2.0
"""The fleet's certificate authority: one EC P-256 key that signs kiosk TLS certificates.

Offline enrolment (the installer carries a file):

    ca = init_ca(Path("~/.kioskctl/ca").expanduser(), "North fleet CA")   # once
    bundle = sign_csr(ca, Path("k-0001.csr").read_bytes(), days=397)
    Path("k-0001.bundle.pem").write_bytes(bundle.pem())                  # leaf, then CA

Claim enrolment over MQTT (see docs/installing.md, "Enrolment"):

    claim = issue_claim(ca, "k-0001", claim_csr, hours=24)   # short-lived, CN "claim-k-0001"
    # the kiosk connects with it, publishes its CSR on
    #   enrol_topic("north", "claim-k-0001", "csr")
    # and the fleet service answers with
    bundle = answer_enrolment(ca, "claim-k-0001", csr_pem)   # refuses a CSR for another kiosk

The CA key is PKCS#8 PEM, mode 0600, created with ``O_EXCL`` so an existing CA
is never overwritten; the kiosk's private key never leaves the kiosk (the CA
signs a CSR made on the device).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.errors import CaError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CLAIM_PREFIX",
    "RESERVED_IDS",
    "Bundle",
    "Ca",
    "CaError",
    "acl_per_kiosk",
    "acl_text",
    "answer_enrolment",
    "claim_identity",
    "enrol_topic",
    "fingerprint",
    "init_ca",
    "issue_claim",
    "kiosk_of_claim",
    "load_ca",
    "parse_bundle",
    "sign_csr",
    "sign_server_csr",
]

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
CLAIM_PREFIX = "claim-"
# Ids that would collide with the enrolment topics, the fleet service or claim identities under
# the ACL pattern kiosk/v1/{fleet}/%u/#: never issued to a kiosk.
RESERVED_IDS = ("enrol", "fleet-ca")
# Same rule as agent.config's kiosk.id (a topic level: no wildcards, no '/').
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_DAYS = 397              # 13 months: renewed yearly, well before expiry
DEFAULT_CA_DAYS = 3650


@dataclasses.dataclass(frozen=True)
class Ca:
    """A loaded CA: its key, its certificate and the directory they live in."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass(frozen=True)
class Bundle:
    """What the CA hands back: the kiosk's certificate and the CA certificate."""

    cert: x509.Certificate
    ca_cert: x509.Certificate

    def pem(self) -> bytes:
        """Leaf first, then the CA: the file ``kiosk-provision --bundle`` reads."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, self.ca_cert))

    @property
    def common_name(self) -> str:
        return _cn(self.cert.subject)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, colon-separated hex (what ``openssl x509 -fingerprint`` prints)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if len(attrs) == 1 else ""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def init_ca(directory: Path, name: str = "kiosk fleet CA", *, days: int = DEFAULT_CA_DAYS) -> Ca:
    """Create ``<dir>/ca.key`` (0600) and the self-signed ``<dir>/ca.pem``; refuse to overwrite."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(directory / CA_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CaError(f"{directory / CA_KEY} exists; refusing to overwrite a CA key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Ca(directory, key, cert)


def load_ca(directory: Path) -> Ca:
    """The CA in ``directory`` (from ``init_ca``)."""
    directory = Path(directory)
    try:
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise CaError(f"cannot read the CA in {directory}: {exc} (create one with `kioskctl ca init`)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CaError(f"{directory}: {CA_KEY} is not the key of {CA_CERT}")
    return Ca(directory, key, cert)


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CaError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise CaError("the CSR's signature does not verify (corrupted, or not made with its own key)")
    key = csr.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1")):
        raise CaError("the CSR's key must be EC P-256 or P-384")
    return csr


def sign_csr(ca: Ca, csr_pem: bytes, *, days: int = DEFAULT_DAYS, kiosk_id: str | None = None,
             not_before: dt.datetime | None = None, validity: dt.timedelta | None = None,
             _claim: bool = False) -> Bundle:
    """Issue a TLS client certificate for the CSR's CN (the kiosk id).

    ``kiosk_id``, when given, must equal the CN (so a CSR for another kiosk is
    refused). ``not_before`` back-dates the certificate (tests of expiry);
    ``validity`` overrides ``days`` with an exact span (claim certificates).
    """
    csr = _load_csr(csr_pem)
    cn = _cn(csr.subject)
    if not _ID.match(cn):
        raise CaError(f"CSR common name {cn!r}: expected a kiosk id (lower-case letters, digits, '-' or '_', "
                      "1 to 64 characters)")
    if not _claim and (cn in RESERVED_IDS or cn.startswith(CLAIM_PREFIX)):
        raise CaError(f"CSR common name {cn!r} is reserved for enrolment")
    if kiosk_id is not None and cn != kiosk_id:
        raise CaError(f"CSR common name {cn!r} is not the kiosk {kiosk_id!r}")
    if not 1 <= days <= 3650:
        raise CaError(f"validity of {days} days: expected 1 to 3650")
    start = not_before or (_now() - dt.timedelta(minutes=5))   # a kiosk clock a little behind
    end = min(start + (validity or dt.timedelta(days=days)), ca.cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Bundle(cert, ca.cert)


def parse_bundle(pem: bytes) -> Bundle:
    """Read a bundle (leaf, then CA) and check the leaf was signed by that CA."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CaError(f"not a PEM certificate bundle: {exc}") from None
    if len(certs) != 2:
        raise CaError(f"a bundle holds 2 certificates (kiosk, then CA); this one holds {len(certs)}")
    leaf, ca_cert = certs
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CaError("the bundle's certificate was not issued by the bundle's CA") from None
    return Bundle(leaf, ca_cert)


def sign_server_csr(ca: Ca, csr_pem: bytes, *, dns_names: tuple[str, ...] = (),
                    ip_addresses: tuple[str, ...] = (), days: int = DEFAULT_DAYS) -> Bundle:
    """The broker's TLS server certificate (serverAuth, the names kiosks connect to as SANs).

        sign_server_csr(ca, csr, dns_names=("broker.example",), ip_addresses=("10.0.0.5",))
    """
    import ipaddress

    csr = _load_csr(csr_pem)
    if not dns_names and not ip_addresses:
        raise CaError("a server certificate needs at least one DNS name or IP address")
    if not 1 <= days <= 3650:
        raise CaError(f"validity of {days} days: expected 1 to 3650")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    start = _now() - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(csr.subject).issuer_name(ca.cert.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(min(start + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Bundle(cert, ca.cert)


# --- claim flow --------------------------------------------------------------

def claim_identity(kiosk_id: str) -> str:
    """The CN of a kiosk's claim certificate: ``claim-<kiosk id>``."""
    return CLAIM_PREFIX + kiosk_id


def kiosk_of_claim(identity: str) -> str:
    """Inverse of ``claim_identity``; CaError for anything else."""
    kiosk = identity.removeprefix(CLAIM_PREFIX)
    if kiosk == identity or not _ID.match(kiosk) or kiosk in RESERVED_IDS or kiosk.startswith(CLAIM_PREFIX):
        raise CaError(f"{identity!r} is not a claim identity")
    return kiosk


def enrol_topic(fleet: str, identity: str, leaf: str) -> str:
    """``kiosk/v1/{fleet}/enrol/{claim identity}/{csr|cert|error}``."""
    return f"kiosk/v1/{fleet}/enrol/{identity}/{leaf}"


def issue_claim(ca: Ca, kiosk_id: str, csr_pem: bytes, *, hours: int = 24) -> Bundle:
    """A short-lived claim certificate for a key the installer's tool generated.

    Its CN ``claim-<kiosk>`` gives it, under ``acl_text``, only the kiosk's
    enrolment topics; it cannot publish as any kiosk.
    """
    if _cn(_load_csr(csr_pem).subject) != claim_identity(kiosk_id):
        raise CaError(f"a claim CSR's common name must be {claim_identity(kiosk_id)!r}")
    if not 1 <= hours <= 24 * 14:
        raise CaError(f"claim validity of {hours} h: expected 1 to 336")
    return sign_csr(ca, csr_pem, validity=dt.timedelta(hours=hours), _claim=True)


def make_claim(ca: Ca, kiosk_id: str, *, hours: int = 24) -> bytes:
    """The claim file ``kioskctl ca claim`` hands the installer: key, claim certificate, CA (PEM).

    The key is made here, so the file is a bearer credential: short-lived,
    confined by the ACL to one kiosk's enrolment topic, and useless for
    anything else. Write it 0600 and delete it after the visit.
    """
    if not _ID.match(kiosk_id) or kiosk_id in RESERVED_IDS or kiosk_id.startswith(CLAIM_PREFIX):
        raise CaError(f"kiosk id {kiosk_id!r}: lower-case letters, digits, '-' or '_' (not reserved)")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, claim_identity(kiosk_id))]))
           .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM)
    bundle = issue_claim(ca, kiosk_id, csr, hours=hours)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + bundle.pem()


def answer_enrolment(ca: Ca, identity: str, csr_pem: bytes, *, days: int = DEFAULT_DAYS) -> Bundle:
    """What the fleet service sends back on ``enrol/{identity}/cert``.

    ``identity`` comes from the topic the CSR arrived on, which the broker's
    ACL only lets that certificate's owner write. A claim identity
    (``claim-k-0001``) gets a certificate for its kiosk (first enrolment); a
    kiosk identity (``k-0001``, its current certificate) gets a new one for
    itself (renewal). Either way the CSR must be for that kiosk, so no
    certificate can obtain another kiosk's identity.
    """
    kiosk = kiosk_of_claim(identity) if identity.startswith(CLAIM_PREFIX) else identity
    return sign_csr(ca, csr_pem, days=days, kiosk_id=kiosk)


answer_claim = answer_enrolment


def acl_text(fleets: list[str] | tuple[str, ...], *, service_user: str | None = "fleet-ca",
             readers: tuple[str, ...] = ()) -> str:
    """A mosquitto ``acl_file`` for ``use_identity_as_username true``, one broker (listener) per fleet.

    The pattern line pins the fleet level: ``kiosk/v1/+/%u/#`` would let a
    kiosk write into another fleet. Pattern lines apply to every user, so with
    SEVERAL fleets on one broker a kiosk of fleet A could still write
    ``kiosk/v1/B/{its id}/…``; use ``acl_per_kiosk`` there. A claim identity
    gets ``kiosk/v1/{fleet}/claim-…/#`` from the same line, a topic no kiosk or
    service uses (kiosk ids starting ``claim-`` are never issued), plus its
    own enrolment topics.
    """
    lines = ["# kiosk-agent ACL: generated by fleet.ca.acl_text; the fleet level is pinned"]
    if len(fleets) > 1:
        lines.append("# WARNING: several fleets share this broker; a kiosk can write under its own id in "
                     "each of them. Prefer acl_per_kiosk (kioskctl ca acl --kiosk ID=FLEET).")
    for fleet in fleets:
        if not _ID.match(fleet):
            raise CaError(f"fleet {fleet!r}: lower-case letters, digits, '-' or '_'")
        lines.append(f"pattern readwrite kiosk/v1/{fleet}/%u/#")
        lines.append(f"pattern readwrite kiosk/v1/{fleet}/enrol/%u/#")
    if service_user:
        lines += ["", f"user {service_user}"]
        lines += [f"topic readwrite kiosk/v1/{fleet}/enrol/#" for fleet in fleets]
    for reader in readers:
        lines += ["", f"user {reader}", *(f"topic read kiosk/v1/{fleet}/#" for fleet in fleets)]
    return "\n".join(lines) + "\n"


def acl_per_kiosk(kiosks: dict[str, str], *, service_user: str | None = "fleet-ca",
                  readers: tuple[str, ...] = ()) -> str:
    """A mosquitto ``acl_file`` with one block per kiosk id (``{kiosk: fleet}``): exact on shared brokers.

    Each kiosk gets ``kiosk/v1/{its fleet}/{its id}/#`` and nothing else; its
    claim identity gets only its enrolment topic. ``readers`` (monitoring
    identities) may read everything under ``kiosk/v1/``. Regenerate and
    SIGHUP mosquitto when a kiosk is added.
    """
    lines = ["# kiosk-agent ACL: generated by fleet.ca.acl_per_kiosk; one block per kiosk"]
    for kiosk, fleet in sorted(kiosks.items()):
        for name in (kiosk, fleet):
            if not _ID.match(name):
                raise CaError(f"{name!r}: lower-case letters, digits, '-' or '_'")
        lines += ["", f"user {kiosk}", f"topic readwrite kiosk/v1/{fleet}/{kiosk}/#",
                  f"topic readwrite kiosk/v1/{fleet}/enrol/{kiosk}/#",
                  "", f"user {claim_identity(kiosk)}",
                  f"topic readwrite kiosk/v1/{fleet}/enrol/{claim_identity(kiosk)}/#"]
    if service_user:
        lines += ["", f"user {service_user}"]
        lines += [f"topic readwrite kiosk/v1/{fleet}/enrol/#" for fleet in sorted(set(kiosks.values()))]
    for reader in readers:
        lines += ["", f"user {reader}", "topic read kiosk/v1/#"]
    return "\n".join(lines) + "\n"
