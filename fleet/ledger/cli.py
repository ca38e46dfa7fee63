# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger``: the back office's ledger.

    kiosk-ledger migrate --config /etc/kiosk-ledger/ledger.toml
    kiosk-ledger kiosks import --config ledger.toml slips/*.txt
    kiosk-ledger serve --config /etc/kiosk-ledger/ledger.toml
    kiosk-ledger status --config ledger.toml [--json]
    kiosk-ledger users add li --role admin --config ledger.toml     # the dashboard's first user
    kiosk-ledger dashboard --config ledger.toml                     # the fleet dashboard

Exit codes: 0 done, 1 status found something to look at, 2 a database or
usage error, 78 a configuration error (as ``kiosk-agent``).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from fleet.dashboard import serve as dashboard_serve
from fleet.dashboard import users as dashboard_users
from fleet.errors import FleetError
from fleet.ledger import report
from fleet.ledger.config import LedgerConfig, load_ledger_config
from fleet.ledger.errors import LedgerConfigError

__all__ = ["main", "build_parser", "add_kiosks_commands"]

log = logging.getLogger("fleet.ledger")
EX_CONFIG = 78


def _config(args: argparse.Namespace) -> LedgerConfig:
    return load_ledger_config(Path(args.config))


def _dsn(args: argparse.Namespace) -> str:
    """``--db`` if given, else the configuration's ``database.dsn``."""
    if getattr(args, "db", None):
        return str(args.db)
    if not getattr(args, "config", None):
        raise LedgerConfigError("give --config LEDGER.toml or --db DSN")
    return _config(args).database.dsn


def cmd_migrate(args: argparse.Namespace) -> int:
    from fleet.ledger.db import connect
    from fleet.ledger.schema import migrate
    with connect(_dsn(args)) as conn:
        before, after = migrate(conn)
    print(f"schema version {before} -> {after}" if after != before else f"schema version {after}: up to date")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """One worker: ingest and acknowledgements, gap requests, the history, the metrics endpoint; until SIGTERM."""
    from fleet.ledger.acks import AckSigner
    from fleet.ledger.db import check_schema, connect
    from fleet.ledger.gaps import GapTracker, GapWatcher, ResendRequester
    from fleet.ledger.history import HistoryWorker
    from fleet.ledger.ingest import IngestWorker
    from fleet.ledger.metrics import LedgerMetrics
    from fleet.mqtt import FleetClient
    cfg = _config(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert cfg.acks.key_file is not None    # required by the configuration's check
    signer = AckSigner.from_file(cfg.acks.key_file, cfg.acks.key_id or None)
    dsn = cfg.database.dsn
    with connect(dsn) as conn:
        check_schema(conn)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())
    faulthandler.register(signal.SIGUSR1)       # `kill -USR1` prints every thread's stack to the log
    metrics = LedgerMetrics(cfg.ledger.fleet)
    server = metrics.serve(cfg.metrics.listen) if cfg.metrics.listen else None
    mq = cfg.mqtt
    # Gap requests and their answers on a connection of their own: the ingest session stays only tx/evidence.
    with FleetClient(mq.url, ca_file=str(mq.ca_file) if mq.ca_file else None,
                     cert_file=str(mq.cert_file) if mq.cert_file else None,
                     key_file=str(mq.key_file) if mq.key_file else None, client_id=f"{mq.client_id}-gaps",
                     keepalive=mq.keepalive) as gap_client:
        tracker = GapTracker(cfg.ledger.fleet, ResendRequester(gap_client, cfg.ledger.fleet, signer.key_id, signer.key),
                             reorder_window_s=cfg.gaps.reorder_window_s, retry_s=cfg.gaps.retry_s,
                             observer=metrics)
        watcher = GapWatcher(tracker, gap_client, lambda: connect(dsn, autocommit=True),
                             interval_s=cfg.gaps.check_interval_s).start()
        # The dashboard's history on its own MQTT session and thread (fleet/ledger/history.py).
        history = HistoryWorker(cfg, connect=lambda: connect(dsn, autocommit=True),
                                observer=metrics).start() if cfg.history.enabled else None
        try:
            IngestWorker(cfg, connect=lambda: connect(dsn, autocommit=True), signer=signer,
                         observer=metrics).run(stop)
        finally:
            if history is not None:
                history.stop()
            watcher.stop()
            if server is not None:
                server.close()
    return 0


def cmd_kiosks_register(args: argparse.Namespace) -> int:
    from fleet.ledger.db import connect, parse_public_key, register_kiosk
    key_text = args.public_key
    path = Path(key_text)
    if path.exists():
        key_text = path.read_text(encoding="ascii", errors="replace")
    raw = parse_public_key(key_text)
    with connect(_dsn(args)) as conn:
        what = register_kiosk(conn, args.kiosk, args.fleet, raw, source=args.source)
    print(f"{args.kiosk} ({args.fleet}): {what}")
    return 0


def cmd_kiosks_import(args: argparse.Namespace) -> int:
    from fleet.ledger.db import connect, read_registrations, register_all
    with connect(_dsn(args)) as conn:
        for name in args.files:
            for line in register_all(conn, read_registrations(Path(name)), source=f"import {Path(name).name}"):
                print(line)
    return 0


def add_kiosks_commands(sub: Any, *, with_config: bool) -> list[argparse.ArgumentParser]:
    """``kiosks register`` and ``kiosks import`` (shared by kiosk-ledger and kioskctl); returns their parsers."""
    kiosks = sub.add_parser("kiosks", help="register kiosks' public signing keys with the ledger")
    ksub = kiosks.add_subparsers(dest="kiosks_command", required=True, metavar="ACTION")

    def db_args(p: argparse.ArgumentParser) -> None:
        if with_config:
            p.add_argument("--config", help="kiosk-ledger configuration (for database.dsn)")
        p.add_argument("--db", help="PostgreSQL connection string (instead of --config)")

    register = ksub.add_parser("register", help="register one kiosk: id, fleet, Ed25519 public key")
    db_args(register)
    register.add_argument("kiosk", help="the kiosk id")
    register.add_argument("--fleet", required=True, help="its fleet")
    register.add_argument("--public-key", required=True,
                          help="base64 public key, or the kiosk's device-ed25519.pub file from provisioning")
    register.add_argument("--source", default="register", help="a note kept with the registration")
    register.set_defaults(func=cmd_kiosks_register)
    imp = ksub.add_parser("import", help="register kiosks from commissioning slips (or their QR lines, JSON Lines)")
    db_args(imp)
    imp.add_argument("files", nargs="+", metavar="FILE", help="commissioning-slip.txt or JSON Lines of QR payloads")
    imp.set_defaults(func=cmd_kiosks_import)
    return [register, imp]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk-ledger", description="The back office's transaction ledger.")
    parser.add_argument("--version", action="version", version=f"kiosk-ledger {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="consume tx and evidence of a fleet into PostgreSQL and acknowledge them")
    serve.add_argument("--config", required=True, help="the ledger's TOML file")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument("--config", help="the ledger's TOML file")
    migrate.add_argument("--db", help="PostgreSQL connection string (instead of --config)")
    migrate.set_defaults(func=cmd_migrate)
    report.register(sub)       # status and export (ledger-ops)
    add_kiosks_commands(sub, with_config=True)
    dashboard_serve.register(sub)    # the fleet dashboard (fleet/dashboard/)
    dashboard_users.register(sub)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run a command; errors of the fleet tree become one line and an exit code."""
    try:
        return func(args)
    except LedgerConfigError as exc:
        print(f"{prog}: {exc} ({exc.code})", file=sys.stderr)
        return EX_CONFIG
    except FleetError as exc:
        print(f"{prog}: {exc} ({exc.code})", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.func, args, "kiosk-ledger")


if __name__ == "__main__":
    sys.exit(main())
