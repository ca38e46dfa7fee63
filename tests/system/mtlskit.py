# SPDX-License-Identifier: Apache-2.0
"""Test PKI and mutual-TLS mosquitto configuration shared by the system tests.

    pki = Pki(tmp_path)                                   # fleet CA, another CA, broker certificate
    cert, key = pki.client("k-0001")                      # a kiosk certificate (expired=…, ca=…)
    DevBroker(dir, extra_conf=broker_conf(pki, fleet.ca.acl_text(["north"]), dir))
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet import ca as fca

__all__ = ["Pki", "broker_conf"]


class Pki:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.ca = fca.init_ca(base / "ca", "north fleet CA")
        self.other = fca.init_ca(base / "other", "someone else's CA")
        key, csr = self._key_csr("broker")
        server = fca.sign_server_csr(self.ca, csr, dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        self.server_key = self._write(base / "server.key", key)
        self.server_crt = base / "server.crt"
        self.server_crt.write_bytes(server.pem()[: server.pem().index(b"-----END CERTIFICATE-----") + 26])
        self.ca_file = base / "ca" / fca.CA_CERT

    @staticmethod
    def _key_csr(cn: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(key, hashes.SHA256()))
        return key, csr.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _write(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        os.chmod(path, 0o600)
        return path

    def client(self, cn: str, *, ca: fca.Ca | None = None, expired: bool = False) -> tuple[Path, Path]:
        """A client certificate and key for ``cn`` (expired, or from another CA, on request)."""
        key, csr = self._key_csr(cn)
        issuer = ca or self.ca
        if expired:
            bundle = fca.sign_csr(issuer, csr, days=1, _claim=cn.startswith("claim-"),
                                  not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
        else:
            bundle = fca.sign_csr(issuer, csr, _claim=cn.startswith(("claim-", "fleet-")))
        tag = f"{cn}{'-expired' if expired else ''}{'-other' if ca is not None else ''}"
        crt = self.base / f"{tag}.crt"
        crt.write_bytes(bundle.cert.public_bytes(serialization.Encoding.PEM))
        return crt, self._write(self.base / f"{tag}.key", key)


def broker_conf(pki: Pki, acl: str, workdir: Path) -> str:
    acl_file = workdir / "kiosk.acl"
    workdir.mkdir(parents=True, exist_ok=True)
    acl_file.write_text(acl)
    return "\n".join([
        # As root, mosquitto drops to the "mosquitto" user after start and can
        # then read neither the ACL nor write the log in pytest's 0700 dirs.
        *(["user root"] if os.geteuid() == 0 else []),
        f"cafile {pki.ca_file}",
        f"certfile {pki.server_crt}",
        f"keyfile {pki.server_key}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"acl_file {acl_file}",
        "log_type information",
    ])
