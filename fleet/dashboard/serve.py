# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger dashboard --config ledger.toml``: serve the fleet dashboard until SIGTERM.

It reads the ledger's TOML (``[database]``, ``[ledger] fleet``, ``[dashboard]``)
and needs neither an MQTT client id nor the acknowledgement key: the
dashboard holds no key at all. A database that is down at start is not an
error (the API answers 503 until it is back); one at the wrong schema
version is (exit 2), as for ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

__all__ = ["register", "cmd_dashboard"]

log = logging.getLogger("fleet.dashboard")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from fleet.ledger.config import load_ledger_config
    from fleet.ledger.db import check_schema, connect
    from fleet.ledger.errors import LedgerDatabaseError
    cfg = load_ledger_config(Path(args.config), for_dashboard=True)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        conn = connect(cfg.database.dsn)
    except LedgerDatabaseError as exc:
        log.warning("%s; serving anyway (the API answers 503 db.unavailable until it is reachable)", exc)
    else:
        with conn:
            check_schema(conn)
    ui_root = Path(args.ui_dir).resolve() if args.ui_dir else None
    asyncio.run(_serve(cfg, ui_root, access_log=args.verbose))
    return 0


async def _serve(cfg: Any, ui_root: Path | None, *, access_log: bool) -> None:
    from aiohttp import web

    from fleet.dashboard.app import UI_ROOT, create_app
    from fleet.dashboard.db import Database
    db = Database(cfg.database.dsn, size=cfg.dashboard.db_connections)
    app = create_app(cfg, db, ui_root=ui_root or UI_ROOT, keepalive_s=cfg.dashboard.sse_keepalive_s)
    host, _sep, port = cfg.dashboard.listen.rpartition(":")
    runner = web.AppRunner(app, shutdown_timeout=3.0, access_log=log if access_log else None,
                           handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
        await site.start()
        log.info("dashboard of fleet %s listening on http://%s (timezone %s)", cfg.ledger.fleet,
                 cfg.dashboard.listen, cfg.dashboard.timezone)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        await db.close()


def register(sub: Any) -> None:
    """``kiosk-ledger dashboard``."""
    p = sub.add_parser("dashboard", help="serve the fleet dashboard (pages, JSON API, live updates)",
                       description="Serve the fleet manager's dashboard of [ledger] fleet on [dashboard] listen "
                                   "until SIGTERM. Users: kiosk-ledger users add NAME --role admin.")
    p.add_argument("--config", required=True, help="the ledger's TOML file ([database], [ledger], [dashboard])")
    p.add_argument("--ui-dir", help="serve pages and static files from this directory instead of the installed "
                                    "ones (development)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and an access log")
    p.set_defaults(func=cmd_dashboard)
