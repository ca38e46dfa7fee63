# SPDX-License-Identifier: Apache-2.0
"""``kiosk-provision renew``: a new TLS key and certificate before the current one expires.

    status = renew(Layout(Path("/")), days_before=60)   # 0 renewed or not due, 1 failed

Run daily (a systemd timer, or cron); it does nothing until the certificate
is within ``days_before`` days of its end. Then it makes a NEW key
(``tls.key.next``, kept across failed attempts so every retry asks for the
same key), sends the CSR over the kiosk's current mutual-TLS identity on
``kiosk/v1/{fleet}/enrol/{kiosk}/csr`` (the broker's ACL already allows it;
the fleet's ``kioskctl ca serve`` treats it as a renewal), checks the answer,
and swaps the pair in: old files renamed ``*.old-<time>``, new ones renamed
into place (each rename atomic). On a real kiosk the service is then
restarted so the agent reconnects with the new certificate. A flaky link is
retried inside the run (jittered back-off) and again by the next day's run.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric import ec

from provisioning import keys as kk
from provisioning.claim import request_certificate
from provisioning.errors import EnrolError
from provisioning.layout import UNIT_NAME, Layout
from provisioning.steps import Owner, write_if_changed

__all__ = ["DEFAULT_DAYS_BEFORE", "renew"]

DEFAULT_DAYS_BEFORE = 60


def _next_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key, _created = kk.ensure_tls_key(path)
    return key


def renew(lay: Layout, out: TextIO, *, days_before: int = DEFAULT_DAYS_BEFORE, force: bool = False,
          timeout_s: float = 120.0, now: dt.datetime | None = None) -> int:
    """Renew when due; return 0 (renewed or not due) or raise EnrolError / KeyProblem."""
    import tomllib

    from agent.config import parse_config

    try:
        cfg = parse_config(tomllib.loads(lay.config.read_text(encoding="utf-8")), source=lay.config)
    except OSError as exc:
        raise EnrolError(f"{lay.config}: {exc} (provision the kiosk first)") from None
    kiosk, fleet, url = cfg.kiosk.id, cfg.kiosk.fleet, cfg.mqtt.url
    tls_key, _ = kk.ensure_tls_key(lay.tls_key) if lay.tls_key.exists() else (None, False)
    if tls_key is None or not lay.tls_crt.exists() or not lay.fleet_ca.exists():
        raise EnrolError("no certificate to renew from: enrol with --bundle or --claim")
    try:
        current = kk.check_bundle(lay.tls_crt.read_bytes() + lay.fleet_ca.read_bytes(), tls_key, kiosk, now=now)
    except EnrolError as exc:
        raise EnrolError(f"the current certificate cannot be used to renew ({exc}); "
                         "an expired kiosk needs offline enrolment (--bundle) or a claim (--claim)") from None
    now = now or dt.datetime.now(dt.UTC)
    left = current.cert.not_valid_after_utc - now
    if left > dt.timedelta(days=days_before) and not force:
        print(f"certificate valid until {current.cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days): "
              f"renewal starts {days_before} days before", file=out)
        return 0
    next_key_path = lay.tls_key.with_name("tls.key.next")
    new_key = _next_key(next_key_path)
    csr = kk.make_csr(new_key, kiosk)
    ctx = ssl.create_default_context(cafile=str(lay.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(lay.tls_crt), str(lay.tls_key))
    print(f"renewing {kiosk} ({left.days} days left) over {url} …", file=out, flush=True)
    pem = request_certificate(url, ctx, kiosk, fleet, csr, timeout_s=timeout_s)
    enrolled = kk.check_bundle(pem, new_key, kiosk)
    if enrolled.ca_pem != lay.fleet_ca.read_bytes():
        raise EnrolError("the renewed certificate comes from another CA than the kiosk's fleet CA")
    next_crt = lay.tls_crt.with_name("tls.crt.next")
    write_if_changed(next_crt, enrolled.cert_pem, 0o644)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    # Old pair aside first, then the new pair in: an interruption leaves either
    # the old files or tls.*.next, both of which the next run handles.
    for path in (lay.tls_key, lay.tls_crt):
        shutil.copy2(path, path.with_name(f"{path.name}.old-{stamp}"))
    os.replace(next_key_path, lay.tls_key)
    os.replace(next_crt, lay.tls_crt)
    own = Owner(lay)
    own.apply(lay.tls_key, 0o600)
    own.apply(lay.tls_crt, 0o644)
    print(f"renewed: valid until {enrolled.cert.not_valid_after_utc:%Y-%m-%d}, "
          f"fingerprint {kk.cert_fingerprint(enrolled.cert)}", file=out)
    if not lay.staging and Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "try-restart", UNIT_NAME], check=False, timeout=120)
        print(f"{UNIT_NAME} restarted with the new certificate", file=out)
    return 0
