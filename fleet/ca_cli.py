# SPDX-License-Identifier: Apache-2.0
"""``kioskctl ca …``: the fleet CA's subcommands, for fleet/cli.py to register.

    kioskctl ca init --dir ~/.kioskctl/ca --name "North fleet CA"
    kioskctl ca sign k-0001.csr --dir ~/.kioskctl/ca --days 397 --out k-0001.bundle.pem
    kioskctl ca acl --fleet north > /etc/mosquitto/kiosk/kiosk.acl
    kioskctl ca claim k-0001 --dir ~/.kioskctl/ca --hours 24      # claim-k-0001.pem for the installer
    kioskctl ca serve --dir ~/.kioskctl/ca --fleet north --broker mqtts://broker:8883 \
        --ca-file ca.pem --cert-file fleet-ca.crt --key-file fleet-ca.key

Before fleet/cli.py registers it, the same runs as ``python -m fleet.ca_cli ca …``.

Wiring (fleet/cli.py): add ``"fleet.ca_cli"`` to ``COMMAND_MODULES``; this
module's ``register(subparsers)`` adds the ``ca`` command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fleet import ca as _ca

__all__ = ["add_ca_commands", "register"]

DEFAULT_DIR = Path("~/.kioskctl/ca")


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir).expanduser()


def cmd_init(args: argparse.Namespace) -> int:
    ca = _ca.init_ca(_dir(args), args.name, days=args.days)
    print(f"CA created: {ca.directory / _ca.CA_KEY} (0600, keep it offline) and {ca.directory / _ca.CA_CERT}")
    print(f"fingerprint {_ca.fingerprint(ca.cert)}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    ca = _ca.load_ca(_dir(args))
    try:
        csr = Path(args.csr).read_bytes()
    except OSError as exc:
        raise _ca.CaError(f"cannot read the CSR {args.csr}: {exc}") from None
    bundle = _ca.sign_csr(ca, csr, days=args.days, kiosk_id=args.kiosk)
    out = Path(args.out) if args.out else Path(f"{bundle.common_name}.bundle.pem")
    out.write_bytes(bundle.pem())
    print(f"signed {bundle.common_name}: valid until {bundle.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, "
          f"fingerprint {_ca.fingerprint(bundle.cert)}")
    print(f"bundle written to {out}; on the kiosk: kiosk-provision --bundle {out.name} …")
    return 0


def cmd_acl(args: argparse.Namespace) -> int:
    sys.stdout.write(_ca.acl_text(args.fleet, service_user=args.service_user or None))
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    ca = _ca.load_ca(_dir(args))
    pem = _ca.make_claim(ca, args.kiosk, hours=args.hours)
    out = Path(args.out) if args.out else Path(f"{_ca.claim_identity(args.kiosk)}.pem")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    print(f"claim for {args.kiosk} written to {out} (0600), valid {args.hours} h; "
          f"on the kiosk: kiosk-provision --claim {out.name} …; delete it after the visit")
    return 0


def cmd_issue_service(args: argparse.Namespace) -> int:
    """The enrolment service's own certificate (CN fleet-ca)."""
    ca = _ca.load_ca(_dir(args))
    bundle = _ca.sign_csr(ca, Path(args.csr).read_bytes(), days=args.days, _claim=True)
    if bundle.common_name != "fleet-ca":
        raise _ca.CaError(f"the service CSR's common name must be 'fleet-ca', not {bundle.common_name!r}")
    Path(args.out).write_bytes(bundle.pem())
    print(f"service certificate written to {args.out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fleet.ca_serve import serve_enrolment
    from fleet.mqtt import FleetClient

    ca = _ca.load_ca(_dir(args))
    with FleetClient(args.broker, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                     client_id="fleet-ca") as client:
        print(f"answering enrolment requests for fleet {args.fleet} (Ctrl-C stops)")
        try:
            serve_enrolment(ca, client, args.fleet, days=args.days)
        except KeyboardInterrupt:
            pass
    return 0


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (_ca.CaError, OSError) as exc:
            print(f"kioskctl ca: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            if getattr(exc, "code", None) is None:      # fleet.mqtt.FleetError and friends carry one
                raise
            print(f"kioskctl ca: {exc} [{exc.code}]", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ca init | sign | acl`` to kioskctl's subparsers."""
    ca = sub.add_parser("ca", help="the fleet's certificate authority (kiosk TLS certificates)")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)

    init = ca_sub.add_parser("init", help="create the CA key (0600) and self-signed certificate")
    init.add_argument("--dir", default=str(DEFAULT_DIR), help="CA directory (default %(default)s)")
    init.add_argument("--name", default="kiosk fleet CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=_ca.DEFAULT_CA_DAYS, help="CA validity (default %(default)s)")
    init.set_defaults(func=_guard(cmd_init))

    sign = ca_sub.add_parser("sign", help="issue a kiosk's TLS client certificate from its CSR")
    sign.add_argument("csr", help="the CSR kiosk-provision wrote (keys/tls.csr)")
    sign.add_argument("--dir", default=str(DEFAULT_DIR), help="CA directory (default %(default)s)")
    sign.add_argument("--days", type=int, default=_ca.DEFAULT_DAYS, help="validity (default %(default)s)")
    sign.add_argument("--kiosk", help="refuse unless the CSR is for this kiosk id")
    sign.add_argument("--out", help="bundle file (default <kiosk id>.bundle.pem)")
    sign.set_defaults(func=_guard(cmd_sign))

    acl = ca_sub.add_parser("acl", help="print a mosquitto acl_file pinning each fleet")
    acl.add_argument("--fleet", action="append", required=True, help="a fleet name (repeat for several)")
    acl.add_argument("--service-user", default="fleet-ca", help="the enrolment service's identity ('' for none)")
    acl.set_defaults(func=_guard(cmd_acl))

    claim = ca_sub.add_parser("claim", help="a short-lived claim file for one kiosk's MQTT enrolment")
    claim.add_argument("kiosk", help="the kiosk id")
    claim.add_argument("--dir", default=str(DEFAULT_DIR), help="CA directory (default %(default)s)")
    claim.add_argument("--hours", type=int, default=24, help="validity (default %(default)s)")
    claim.add_argument("--out", help="file (default claim-<kiosk>.pem), created 0600")
    claim.set_defaults(func=_guard(cmd_claim))

    service = ca_sub.add_parser("issue-service", help="sign the enrolment service's CSR (CN fleet-ca)")
    service.add_argument("csr", help="the enrolment service's CSR (CN fleet-ca)")
    service.add_argument("--dir", default=str(DEFAULT_DIR), help="CA directory (default %(default)s)")
    service.add_argument("--days", type=int, default=_ca.DEFAULT_DAYS, help="validity (default %(default)s)")
    service.add_argument("--out", required=True, help="certificate file to write (PEM)")
    service.set_defaults(func=_guard(cmd_issue_service))

    serve = ca_sub.add_parser("serve", help="answer kiosks' certificate requests over MQTT")
    serve.add_argument("--dir", default=str(DEFAULT_DIR), help="CA directory (default %(default)s)")
    serve.add_argument("--fleet", required=True, help="fleet id whose kiosks it answers")
    serve.add_argument("--broker", required=True, help="mqtts://host:8883")
    serve.add_argument("--ca-file", required=True, help="CA of the broker's certificate")
    serve.add_argument("--cert-file", required=True, help="the service's certificate (CN fleet-ca)")
    serve.add_argument("--key-file", required=True, help="the service's private key")
    serve.add_argument("--days", type=int, default=_ca.DEFAULT_DAYS, help="validity of issued certificates")
    serve.set_defaults(func=_guard(cmd_serve))


add_ca_commands = register


def main(argv: list[str] | None = None) -> int:
    """``python -m fleet.ca_cli ca …`` until kioskctl registers this module."""
    parser = argparse.ArgumentParser(prog="kioskctl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
