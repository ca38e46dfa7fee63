# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger users``: the dashboard's accounts. There is no default user.

    kiosk-ledger users add li --role admin --config ledger.toml      # asks the password twice
    kiosk-ledger users add ops --role operator --password-file pw.txt --config ledger.toml
    kiosk-ledger users list --config ledger.toml
    kiosk-ledger users passwd li --config ledger.toml                 # also lifts a lockout
    kiosk-ledger users disable li --config ledger.toml                # and ends its sessions

Passwords have at least 12 characters and are stored as Argon2id hashes;
every change is written to the audit trail as ``cli:<system user>``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "read_password"]

ROLES = ("viewer", "operator", "admin")


def read_password(args: argparse.Namespace) -> str:
    """From ``--password-file`` (its first line), else typed twice at the terminal."""
    from fleet.dashboard.auth import check_password
    from fleet.dashboard.errors import UserError
    if args.password_file:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{args.password_file}: cannot read ({exc.strerror or exc})") from None
        lines = text.splitlines()
        return check_password(lines[0] if lines else "")
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask the password on: give --password-file FILE")
    first = getpass.getpass("password (at least 12 characters): ")
    check_password(first)
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ; nothing was changed")
    return first


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _connect(args: argparse.Namespace) -> Any:
    from fleet.ledger.config import load_ledger_config
    from fleet.ledger.db import check_schema, connect
    from fleet.ledger.errors import LedgerConfigError
    if args.db:
        dsn = str(args.db)
    elif args.config:
        dsn = load_ledger_config(Path(args.config), for_dashboard=True).database.dsn
    else:
        raise LedgerConfigError("give --config LEDGER.toml or --db DSN")
    conn = connect(dsn)
    check_schema(conn)
    return conn


def _audit(conn: Any, action: str, target: str, detail: dict[str, Any]) -> None:
    conn.execute("INSERT INTO audit (username, action, target, detail) VALUES (%s, %s, %s, %s)",
                 (_actor(), action, target, json.dumps(detail)))


def cmd_add(args: argparse.Namespace) -> int:
    from fleet.dashboard.auth import check_username, new_hasher
    from fleet.dashboard.errors import UserError
    name = check_username(args.name)
    password = read_password(args)
    with _connect(args) as conn, conn.transaction():
        cur = conn.execute("INSERT INTO dashboard_users (username, password_hash, role) VALUES (%s, %s, %s) "
                           "ON CONFLICT (username) DO NOTHING RETURNING 1",
                           (name, new_hasher().hash(password), args.role))
        if cur.fetchone() is None:
            raise UserError(f"user {name!r} exists already (kiosk-ledger users passwd {name} to change its "
                            "password)")
        _audit(conn, "user_add", name, {"role": args.role})
    print(f"{name}: added ({args.role})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        rows = conn.execute("SELECT username, role, created_at, disabled_at, locked_until > now() FROM "
                            "dashboard_users ORDER BY username").fetchall()
    if args.json:
        print(json.dumps([{"username": u, "role": r, "created_at": c.isoformat(),
                           "disabled": d is not None, "locked": bool(lk)} for u, r, c, d, lk in rows]))
        return 0
    if not rows:
        print("no users (kiosk-ledger users add NAME --role admin)", file=sys.stderr)
        return 0
    width = max(len(r[0]) for r in rows)
    for username, role, created, disabled, locked in rows:
        state = "disabled" if disabled is not None else "locked" if locked else "active"
        print(f"{username:<{width}}  {role:<8}  {state:<8}  created {created:%Y-%m-%d %H:%M}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    from fleet.dashboard.auth import new_hasher
    from fleet.dashboard.errors import UserError
    password = read_password(args)
    with _connect(args) as conn, conn.transaction():
        cur = conn.execute("UPDATE dashboard_users SET password_hash = %s, failed_logins = 0, locked_until = NULL "
                           "WHERE username = %s RETURNING 1", (new_hasher().hash(password), args.name))
        if cur.fetchone() is None:
            raise UserError(f"no user {args.name!r}")
        # A changed password ends the sessions opened with the old one.
        conn.execute("DELETE FROM dashboard_sessions WHERE username = %s", (args.name,))
        _audit(conn, "user_passwd", args.name, {})
    print(f"{args.name}: password changed; its sessions ended")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    from fleet.dashboard.errors import UserError
    with _connect(args) as conn, conn.transaction():
        cur = conn.execute("UPDATE dashboard_users SET disabled_at = coalesce(disabled_at, now()) "
                           "WHERE username = %s RETURNING 1", (args.name,))
        if cur.fetchone() is None:
            raise UserError(f"no user {args.name!r}")
        conn.execute("DELETE FROM dashboard_sessions WHERE username = %s", (args.name,))
        _audit(conn, "user_disable", args.name, {})
    print(f"{args.name}: disabled; its sessions ended")
    return 0


def register(sub: Any) -> None:
    """``kiosk-ledger users add|list|passwd|disable``."""
    users = sub.add_parser("users", help="the dashboard's users (no default user: add the first admin)")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="the ledger's TOML file (for database.dsn)")
        p.add_argument("--db", help="PostgreSQL connection string (instead of --config)")

    add = usub.add_parser("add", help="add a user (asks the password twice, or --password-file)")
    common(add)
    add.add_argument("name", help="user name")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="viewer reads; operator also acknowledges alarms; admin also reads the audit trail")
    add.add_argument("--password-file", help="read the password from this file's first line")
    add.set_defaults(func=cmd_add)
    lst = usub.add_parser("list", help="users, roles, and whether disabled or locked")
    common(lst)
    lst.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    lst.set_defaults(func=cmd_list)
    passwd = usub.add_parser("passwd", help="set a user's password (lifts a lockout, ends its sessions)")
    common(passwd)
    passwd.add_argument("name", help="user name")
    passwd.add_argument("--password-file", help="read the password from this file's first line")
    passwd.set_defaults(func=cmd_passwd)
    disable = usub.add_parser("disable", help="disable a user and end its sessions")
    common(disable)
    disable.add_argument("name", help="user name")
    disable.set_defaults(func=cmd_disable)
