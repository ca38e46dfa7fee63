# SPDX-License-Identifier: Apache-2.0
"""The commissioning slip: what the fleet office files for a new kiosk.

    text, qr = render_slip(answers, signing_key, enrolled)
    print_slip(text, qr, "/dev/kiosk/printer")   # the receipt printer, or says why not

The QR payload is compact JSON the fleet's records can scan:
``{"v":1,"kiosk":"k-0001","fleet":"north","sig":"<Ed25519 public key, base64>","tls":"<cert SHA-256>"}``.
The slip carries no timestamp of its own, so a re-run reproduces it byte for
byte; the certificate's validity dates say when it was enrolled.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning import keys as kk

if TYPE_CHECKING:
    from provisioning.steps import Answers

__all__ = ["print_slip", "qr_payload", "render_slip"]


def qr_payload(a: Answers, signing: Ed25519PrivateKey, enrolled: kk.Enrolled | None) -> str:
    doc = {"v": 1, "kiosk": a.kiosk_id, "fleet": a.fleet, "sig": kk.signing_public_b64(signing),
           "tls": kk.cert_fingerprint(enrolled.cert).replace(":", "").lower() if enrolled else None}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def render_slip(a: Answers, signing: Ed25519PrivateKey, enrolled: kk.Enrolled | None) -> tuple[str, str]:
    """The slip as text (32 columns fit a 58 mm printer) and the QR payload."""
    qr = qr_payload(a, signing, enrolled)
    lines = [
        "KIOSK COMMISSIONING SLIP",
        "=" * 32,
        f"Kiosk:  {a.kiosk_id}",
        f"Fleet:  {a.fleet}",
        f"Site:   {a.site}",
        f"Mode:   {a.mode}",
        f"Broker: {a.mqtt_url}",
        "Signing key (Ed25519) SHA-256:",
        f"  {kk.signing_fingerprint(signing)}",
    ]
    if enrolled is not None:
        fp = kk.cert_fingerprint(enrolled.cert)
        valid = (f"Valid: {enrolled.cert.not_valid_before_utc:%Y-%m-%d} to "
                 f"{enrolled.cert.not_valid_after_utc:%Y-%m-%d}")
        lines += ["TLS certificate SHA-256:", *(f"  {fp[i:i + 48]}" for i in range(0, len(fp), 48)), valid]
    else:
        lines.append("TLS certificate: PENDING (enrol, then re-run)")
    lines += ["QR (fleet records):", qr, "=" * 32, "Installer signature: ____________", ""]
    return "\n".join(lines), qr


def print_slip(text: str, qr: str, url: str = "/dev/kiosk/printer", *, baudrate: int = 9600) -> str:
    """Print the slip on the receipt printer at ``url`` (ESC/POS, native QR); return what happened.

    Uses the HAL's driver (hal.printer); a printer that does not answer or
    cannot print is reported, never a reason to undo the provisioning.
    """
    try:
        from hal.exc import HalError
        from hal.printer import ReceiptPrinter
        from hal.protocols.escpos import Receipt
        from hal.serial import open_port
    except ImportError as exc:
        return f"not printed: no receipt printer driver in this build ({exc}); the slip is the text file above"
    try:
        port = open_port(url, baudrate=baudrate)
    except HalError as exc:
        return f"not printed: {url}: {exc}; the slip is the text file above"
    try:
        printer = ReceiptPrinter(port)
        status = printer.status()
        if not status.responding:
            return f"not printed: the printer at {url} does not answer; the slip is the text file above"
        if status.errors:
            return (f"not printed: the printer reports {', '.join(status.errors)}; "
                    "fix it and re-run (the slip is the text file above)")
        printer.print(Receipt().lines(text.rstrip("\n").split("\n")).qr(qr, size=4).cut())
    except (HalError, OSError, ValueError) as exc:
        return f"not printed ({exc.__class__.__name__}: {exc}); the slip is the text file above"
    finally:
        port.close()
    return f"printed on {url}"
