# SPDX-License-Identifier: Apache-2.0
"""``kiosk-provision``: the installer's tool.

    # on the kiosk, interactive (asks for what the flags do not give):
    sudo kiosk-provision
    # non-interactive, from flags or an answer file (flags win):
    sudo kiosk-provision --answers answers.toml --bundle /media/usb/k-0001.bundle.pem
    # rehearse on any Debian machine, everything under a directory:
    kiosk-provision --root /tmp/kiosk --non-interactive --kiosk-id k-0001 --fleet north \\
        --site "Outlet 37" --mqtt-url mqtts://broker.example:8883 --ca-dir ~/.kioskctl/ca
    # what the board preparation would change (UART, console, watchdog, screen, GPIO), nothing changed:
    sudo kiosk-provision --dry-run
    # erase keys and citizen data:
    sudo kiosk-provision decommission --yes
    # renew the TLS certificate over MQTT when within 60 days of expiry (daily timer):
    sudo kiosk-provision renew

On a kiosk already provisioned, the questions offer the answers in its
agent.toml (and the fleet trust it holds is kept), so Enter everywhere
re-provisions it unchanged.

Exit status: 0 done; 1 failed (the message names the step and its code);
2 bad usage (a missing or invalid answer, a file that is not there: before
any step runs); 3 done but waiting for the certificate (take keys/tls.csr to
the fleet office, re-run with --bundle).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from provisioning.decommission import decommission
from provisioning.errors import AnswerError, ProvisionError
from provisioning.layout import Layout
from provisioning.steps import TRUST_MARK, Answers, Reporter, provision

__all__ = ["answers_from", "build_parser", "main"]

_FIELDS = {f.name: f for f in dataclasses.fields(Answers) if f.name != "kept_trust"}   # not the installer's
_PATHS = {"bundle", "ca_dir", "broker_ca", "claim", "fleet_trust"}
_PROMPTS = [("kiosk_id", "Kiosk id (e.g. k-0001)"), ("fleet", "Fleet"), ("site", "Site (outlet name and address)"),
            ("mqtt_url", "Broker URL"), ("bundle", "Certificate bundle file (empty: enrol later)")]
_REQUIRED = {"kiosk_id", "fleet", "site", "mqtt_url"}
# agent.toml key -> answer, for the answers a provisioned kiosk already has.
_FROM_CONFIG = {("kiosk", "id"): "kiosk_id", ("kiosk", "fleet"): "fleet", ("kiosk", "site"): "site",
                ("kiosk", "mode"): "mode", ("mqtt", "url"): "mqtt_url", ("mqtt", "keepalive"): "keepalive",
                ("hal", "backend"): "backend", ("health", "interval_s"): "health_interval_s"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk-provision",
        description="Provision a kiosk: service user, device keys, certificate, agent.toml, "
                    "systemd unit, udev rules, self-test, commissioning slip. Safe to re-run.")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="stage everything under this directory instead of / (rehearsal, tests)")
    sub = parser.add_subparsers(dest="command")
    dec = sub.add_parser("decommission", help="stop the service, erase keys and citizen data")
    dec.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dec.add_argument("--all", action="store_true", help="also remove agent.toml, the unit, rules and the log")
    dec.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    brd = sub.add_parser("board", help="only the board preparation (UART, serial console, watchdog, "
                                       "blanking, screen, GPIO library)")
    brd.add_argument("--dry-run", action="store_true", help="list what would change; change nothing")
    brd.add_argument("--no-reboot", dest="reboot", action="store_false", help="do not reboot when needed")
    brd.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ren = sub.add_parser("renew", help="renew the TLS certificate over MQTT when it is due (run daily)")
    ren.add_argument("--days-before", type=int, default=60, help="start this many days before expiry")
    ren.add_argument("--force", action="store_true", help="renew now even if not due")
    ren.add_argument("--timeout", type=float, default=120.0, help="seconds to keep trying in this run")
    ren.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    g = parser.add_argument_group("answers (flags override --answers)")
    g.add_argument("--answers", type=Path, help="TOML answer file with the keys below (kiosk_id = \"k-0001\" …)")
    g.add_argument("--kiosk-id", dest="kiosk_id")
    g.add_argument("--fleet")
    g.add_argument("--site")
    g.add_argument("--mqtt-url", dest="mqtt_url", help="mqtts://host:8883")
    g.add_argument("--mode", choices=("production", "development"))
    g.add_argument("--backend", choices=("real", "sim"), help="hal.backend (sim: rehearsal without devices)")
    g.add_argument("--keepalive", type=int)
    g.add_argument("--health-interval", dest="health_interval_s", type=int)
    g.add_argument("--bundle", type=Path, help="certificate bundle from `kioskctl ca sign`")
    g.add_argument("--claim", type=Path,
                   help="claim file from `kioskctl ca claim`: get the certificate over MQTT")
    g.add_argument("--ca-dir", dest="ca_dir", type=Path,
                   help="sign with the fleet CA in this directory (rehearsals; never on a kiosk)")
    g.add_argument("--broker-ca", dest="broker_ca", type=Path,
                   help="CA of the broker's server certificate, if not the fleet CA")
    g.add_argument("--fleet-trust", dest="fleet_trust", type=Path,
                   help="the fleet office's TOML with [[commands.operators]] and [evidence] keys")
    g.add_argument("--agent-bin", dest="agent_bin", help="kiosk-agent path for ExecStart")
    g.add_argument("--rotate-keys", dest="rotate_keys", action="store_true", default=None,
                   help="make new device keys (old ones kept as *.old-<time>); needs a new certificate")
    g.add_argument("--staged-paths", dest="staged_paths", action="store_true", default=None,
                   help="with --root: agent.toml points inside the root, so the agent can run from it")
    g.add_argument("--no-selftest", dest="selftest", action="store_false", default=None)
    g.add_argument("--no-print", dest="print_slip", action="store_false", default=None)
    g.add_argument("--printer", dest="printer_url",
                   help="serial URL of the receipt printer for the slip (default /dev/kiosk/printer)")
    g.add_argument("--non-interactive", action="store_true", help="never prompt; missing answers are errors")
    g.add_argument("--no-board", dest="prepare_board", action="store_false", default=None,
                   help="skip the board preparation (UART, console, watchdog, blanking, screen, GPIO)")
    g.add_argument("--no-reboot", dest="reboot", action="store_false", default=None,
                   help="do not reboot at the end even when the board preparation needs it")
    g.add_argument("--dry-run", action="store_true",
                   help="list what the board preparation would change, change nothing, and stop")
    return parser


def existing_answers(lay: Layout) -> dict[str, Any]:
    """The answers the kiosk's current agent.toml was written from ({} when there is none)."""
    try:
        raw = tomllib.loads(lay.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    values: dict[str, Any] = {}
    def get(table: str, key: str) -> Any:
        section = raw.get(table)
        return section.get(key) if isinstance(section, dict) else None

    for (table, key), name in _FROM_CONFIG.items():
        value = get(table, key)
        if value is not None:
            values[name] = value
    storage = str(get("storage", "dir") or "")
    if lay.staging and storage.startswith(str(lay.root) + "/"):
        values["staged_paths"] = True
    trust = lay.config.read_text(encoding="utf-8").partition(TRUST_MARK)[2]
    if trust:
        values["kept_trust"] = trust      # "NAME:\n" and the tables, as config_text wrote them
    return values


def answers_from(args: argparse.Namespace, current: dict[str, Any] | None = None) -> Answers:
    """Defaults, then ``current`` (the kiosk's answers so far), then the answer file, then flags."""
    values: dict[str, Any] = dict(current or {})
    if args.answers is not None:
        try:
            raw = tomllib.loads(args.answers.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AnswerError(f"--answers {args.answers}: {exc}") from None
        for key, value in raw.items():
            if key not in _FIELDS:
                raise AnswerError(f"{args.answers}: unknown key {key!r} (known: {', '.join(sorted(_FIELDS))})")
            values[key] = value
        base = args.answers.parent
        for key in _PATHS & values.keys():
            # Relative paths in the answer file are relative to the file.
            values[key] = base / Path(values[key]).expanduser()
    for name in _FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    try:
        answers = Answers(**values)
    except TypeError as exc:
        raise AnswerError(str(exc)) from None
    for key in ("keepalive", "health_interval_s"):
        if not isinstance(getattr(answers, key), int):
            raise AnswerError(f"{key}: expected an integer")
    return answers


def _default_id() -> str:
    host = socket.gethostname().lower()
    return host if re.match(r"^[a-z0-9][a-z0-9-]{0,63}$", host) else ""


def _prompt(answers: Answers, lay: Layout) -> None:
    """Ask each question until its answer is acceptable: a mistake is caught where it is made."""
    print("Press Enter to keep the value in [brackets].")
    for name, label in _PROMPTS:
        if name == "bundle" and lay.tls_crt.exists():
            label = "Certificate bundle file (empty: keep the installed certificate)"
        current = getattr(answers, name)
        if name == "kiosk_id" and not current:
            current = _default_id()
        shown = "" if current is None else str(current)
        while True:
            try:
                reply = input(f"{label} [{shown}]: ").strip()
            except EOFError:
                print()
                raise AnswerError(f"no answer to {label!r}: the input ended") from None
            value: Any = reply or shown
            if name in _PATHS:
                value = Path(value).expanduser() if value else None
            if name in _REQUIRED and not value:
                print("      an answer is required here")
                continue
            setattr(answers, name, value)
            problem = answers.problem(name)
            if problem is None:
                break
            print(f"      {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    lay = Layout(root)
    if not lay.staging and os.geteuid() != 0:
        print("kiosk-provision: run as root (sudo), or rehearse with --root DIR", file=sys.stderr)
        return 2
    try:
        if args.command == "decommission":
            if not args.yes:
                if not sys.stdin.isatty():
                    print("kiosk-provision decommission: add --yes to erase without asking", file=sys.stderr)
                    return 2
                if input(f"Erase the keys and all citizen data under {root}? Type 'erase': ").strip() != "erase":
                    print("nothing removed")
                    return 1
            decommission(lay, everything=args.all)
            return 0
        if args.command == "board" or getattr(args, "dry_run", False):
            return _board_only(lay, dry_run=args.dry_run, reboot=args.reboot is not False)
        if args.command == "renew":
            from provisioning.renew import renew
            return renew(lay, sys.stdout, days_before=args.days_before, force=args.force, timeout_s=args.timeout)
        interactive = not args.non_interactive and sys.stdin.isatty()
        current = existing_answers(lay)
        if not interactive:
            # A script says what it means; but a re-run without --fleet-trust must not
            # silently leave the kiosk trusting no operator.
            current = {k: v for k, v in current.items() if k == "kept_trust"}
        answers = answers_from(args, current)
        if interactive:
            _prompt(answers, lay)
        if lay.staging:
            print(f"staging root {root}: nothing outside it is changed")
        result = provision(answers, lay, Reporter())
    except AnswerError as exc:
        # Found before any step ran: wrong usage, not a failed step.
        print(f"kiosk-provision: {exc} [{exc.code}]", file=sys.stderr)
        return 2
    except ProvisionError as exc:
        print(f"kiosk-provision: {exc} [{exc.code}]", file=sys.stderr)
        return 1
    except Exception as exc:  # agent.errors.ConfigError and fleet CaError carry codes too
        code = getattr(exc, "code", None)
        if code is None:
            raise
        print(f"kiosk-provision: {exc} [{code}]", file=sys.stderr)
        return 1
    if result.exit_code == 3:
        print("provisioned, but waiting for the certificate (exit 3)")
    else:
        print("provisioned")
    _reboot_if_needed(lay, result.reboot_reasons, answers.reboot)
    return result.exit_code


def _board_only(lay: Layout, *, dry_run: bool, reboot: bool) -> int:
    from provisioning.board import prepare_board
    report = prepare_board(lay, dry_run=dry_run)
    for line in report.ok:
        print(f"ok: {line}")
    for reason in report.pending:
        print(f"done by an earlier run, waiting for the reboot: {reason}")
    for change in report.changes:
        state = "would change" if dry_run else ("changed" if change.applied else "left to do on the kiosk")
        print(f"{state}: {change.what}" + (" (needs a reboot)" if change.reboot else ""))
    if dry_run:
        needs = any(c.reboot for c in report.changes) or bool(report.pending)
        print(f"dry run: nothing changed ({len(report.changes)} change(s) listed"
              + ("; a reboot would follow" if needs else "") + ")")
        return 0
    if not report.changes:
        print("the board is prepared; nothing changed")
    _reboot_if_needed(lay, report.reboot_reasons(), reboot)
    return 0


def _reboot_if_needed(lay: Layout, reasons: list[str], reboot: bool) -> None:
    """The one reboot of a visit: only when a board change takes effect at boot; never for a staging root."""
    if not reasons:
        return
    print("a reboot applies: " + "; ".join(reasons))
    if lay.staging:
        print(f"staging root {lay.root}: not rebooting (the kiosk applies these at its next boot)")
    elif not reboot:
        print("not rebooting (--no-reboot): run `sudo reboot` before the kiosk goes into service")
    else:
        print("rebooting now; after it, check the screen and `sudo kiosk-agent selftest`", flush=True)
        subprocess.run(["systemctl", "reboot"], check=False)


if __name__ == "__main__":
    sys.exit(main())
