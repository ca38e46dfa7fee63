# SPDX-License-Identifier: Apache-2.0
"""Who may use the dashboard, against the real ``kiosk-ledger dashboard`` process and a real PostgreSQL.

Login required everywhere (pages redirect, the API answers 401), failed logins audited and locked out after
five, CSRF token and Origin on every POST, roles (viewer, operator, admin), cookie flags, security headers,
static files without listing or escape, the users CLI (no default user, short passwords refused), and
configuration errors that name the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from dashkit import REPO, Http, login, put_alarm, put_status, validate

from fleet.ledger.cli import main as ledger_main
from fleet.ledger.config import parse_ledger_config
from fleet.ledger.errors import LedgerConfigError

PASSWORD = "correct horse battery"
HEADERS = {
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def audit_rows(dsn: str, action: str | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT username, action, target, detail FROM audit WHERE %(a)s::text IS NULL "
                            "OR action = %(a)s ORDER BY id", {"a": action}).fetchall()


def ui_tree(root: Path) -> Path:
    """A stand-in for the installed pages and assets (so these tests do not depend on the ui's files)."""
    (root / "pages").mkdir(parents=True)
    for name in ("login", "fleet", "kiosk", "alarms", "reports", "audit"):
        (root / "pages" / f"{name}.html").write_text(f"<!doctype html><title>{name}</title><main id=\"{name}\">"
                                                     "</main>", encoding="utf-8")
    static = root / "static"
    (static / "css").mkdir(parents=True)
    (static / "js").mkdir()
    (static / "vendor").mkdir()
    (static / "css" / "app.css").write_text("body{}", encoding="utf-8")
    (static / "js" / "app.js").write_text("export {};", encoding="utf-8")
    (static / "js" / "mod.mjs").write_text("export {};", encoding="utf-8")
    (static / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", encoding="utf-8")
    (static / "vendor" / "font.woff2").write_bytes(b"wOF2\x00\x01")
    (root / "secret.txt").write_text("outside static", encoding="utf-8")
    (static / "escape.txt").symlink_to(root / "secret.txt")
    return root


def test_login_required_everywhere_static_and_headers(start_dashboard: Any, tmp_path: Path) -> None:
    dash = start_dashboard(ui_dir=ui_tree(tmp_path / "ui"))
    web = Http(dash.url)
    for path in ("/api/me", "/api/fleet", "/api/kiosks/k1", "/api/kiosks/k1/series", "/api/alarms",
                 "/api/reports/tx", "/api/audit", "/api/events", "/api/nothing-here"):
        r = web.get(path)
        assert r.status == 401 and r.code == "auth.required", (path, r)
        validate(r.json(), "error")
    for path in ("/", "/kiosks/k1", "/alarms?x=1&y=2", "/audit"):
        r = web.get(path)
        where = urlsplit(r.headers["Location"])
        assert r.status == 303 and where.path == "/login" and parse_qs(where.query)["next"] == [path], (path, r)
    r = web.get("/login")
    assert r.status == 200 and "<main id=\"login\">" in r.text
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    for name, value in HEADERS.items():
        assert r.headers[name] == value, name
    assert r.headers["Server"] == "kiosk-dashboard"        # no library versions for a scanner to match
    # Static assets are public (the login page needs them), typed, never listed, never outside ui/static.
    for path, ctype in (("/static/css/app.css", "text/css; charset=utf-8"),
                        ("/static/js/app.js", "text/javascript; charset=utf-8"),
                        ("/static/js/mod.mjs", "text/javascript; charset=utf-8"),
                        ("/static/icon.svg", "image/svg+xml"), ("/static/vendor/font.woff2", "font/woff2")):
        r = web.get(path)
        assert r.status == 200 and r.headers["Content-Type"] == ctype, (path, r.headers["Content-Type"])
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-cache"
        again = web.get(path, headers={"If-None-Match": r.headers["ETag"]})      # revalidated: no body again
        assert again.status == 304 and again.body == b"", path
    for path in ("/static/", "/static/css/", "/static/css", "/static/../pages/login.html",
                 "/static/%2e%2e/pages/login.html", "/static/..%2fsecret.txt", "/static/escape.txt",
                 "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd"):
        r = web.get(path)
        assert r.status == 404, (path, r)
        assert b"outside static" not in r.body and b"<main" not in r.body


def test_bad_password_audited_then_lockout(start_dashboard: Any, make_user: Any, dsn: str) -> None:
    dash = start_dashboard()
    make_user("li", "operator", PASSWORD)
    web = Http(dash.url)
    wrong = web.post_form("/login", {"username": "li", "password": "not the password"})
    nobody = web.post_form("/login", {"username": "nobody", "password": "not the password"})
    assert wrong.status == nobody.status == 401
    assert wrong.code == nobody.code == "auth.required"
    assert wrong.json()["error"]["message"] == nobody.json()["error"]["message"]     # says nothing of who exists
    assert "kd_session" not in web.cookies
    failed = audit_rows(dsn, "login_failed")
    # A name that is no user is not kept (often a password typed into the wrong field).
    assert [(r[0], r[3]["reason"]) for r in failed] == [("li", "password"), ("(unknown)", "unknown_user")]
    for _ in range(4):          # five in a row with the first
        assert web.post_form("/login", {"username": "li", "password": "still wrong!!"}).status == 401
    locked = web.post_form("/login", {"username": "li", "password": PASSWORD})
    assert locked.status == 429 and locked.code == "auth.locked", locked
    assert audit_rows(dsn, "login_failed")[-1][3] == {"reason": "locked"}
    assert [r[3].get("locked") for r in audit_rows(dsn, "login_failed")][1:6] == [None, False, False, False, True]
    # The lockout ends by itself (five minutes): pretend they passed.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE dashboard_users SET locked_until = now() - interval '1 second'")
    ok = login(dash.url, "li", PASSWORD)
    me = ok.get_json("/api/me")
    validate(me, "me")
    assert me["username"] == "li" and me["role"] == "operator" and me["fleet"] == "north"
    assert audit_rows(dsn, "login")[-1][:3] == ("li", "login", "li")
    # The fixture's cheap hash was replaced with one at the server's parameters on that login.
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute("SELECT password_hash FROM dashboard_users WHERE username = 'li'").fetchone()
    assert stored is not None and stored[0].startswith("$argon2id$") and "m=8," not in stored[0]


def test_cookie_flags_next_and_session_end(start_dashboard: Any, make_user: Any, dsn: str) -> None:
    dash = start_dashboard(secure_cookies=True)
    make_user("li", "viewer", PASSWORD)
    web = Http(dash.url)
    r = web.post_form("/login", {"username": "li", "password": PASSWORD, "next": "/alarms"})
    assert r.status == 303 and r.headers["Location"] == "/alarms"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("kd_session=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/", "Secure"):
        assert flag in cookie, (flag, cookie)
    token = web.cookies["kd_session"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute("SELECT token_sha256 FROM dashboard_sessions").fetchall()
    assert len(stored) == 1 and token not in stored[0][0]        # only its hash is kept
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        r = Http(dash.url).post_form("/login", {"username": "li", "password": PASSWORD, "next": evil})
        assert r.status == 303 and r.headers["Location"] == "/", evil
    # Idle too long: the session is over.
    web.csrf = web.get_json("/api/me")["csrf"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE dashboard_sessions SET last_seen = now() - interval '9 hours' "
                     "WHERE token_sha256 = encode(sha256(%s::bytea), 'hex')", (token.encode(),))
    assert web.get("/api/me").code == "auth.required"


def test_csrf_origin_and_logout(start_dashboard: Any, make_user: Any, dsn: str) -> None:
    dash = start_dashboard()
    make_user("li", "operator", PASSWORD)
    with psycopg.connect(dsn, autocommit=True) as conn:
        put_status(conn, "k1")
        put_alarm(conn, "k1", "door_open", raised_ms=int(time.time() * 1000) - 60_000, severity="critical")
    web = login(dash.url, "li", PASSWORD)
    raised = web.get_json("/api/alarms")["alarms"][0]["raised_at"]
    body = {"kiosk": "k1", "code": "door_open", "raised_at": raised, "note": "x"}
    for csrf, origin in ((False, True), ("wrong-token-" * 4, True), (True, "http://evil.example"),
                         (True, "null")):
        r = web.post_json("/api/alarms/ack", body, csrf=csrf, origin=origin)
        assert r.status == 403 and r.code == "auth.csrf", (csrf, origin, r)
    r = web.request("POST", "/api/alarms/ack", b"{}", {"X-CSRF-Token": web.csrf or "", "Sec-Fetch-Site": "cross-site"})
    assert r.status == 403 and r.code == "auth.csrf"
    assert web.get_json("/api/alarms")["alarms"][0]["acked_by"] is None      # nothing was acknowledged
    # The login form has no session yet: Origin guards it.
    r = Http(dash.url).post_form("/login", {"username": "li", "password": PASSWORD},
                                 headers={"Origin": "http://evil.example"})
    assert r.status == 403 and r.code == "auth.csrf"
    # Behind a proxy that rewrites Host, the configured public address is the one origin accepted.
    proxied = start_dashboard(name="proxied", dashboard_extra='public_url = "https://dash.example"')
    r = Http(proxied.url).post_form("/login", {"username": "li", "password": PASSWORD})
    assert r.status == 403 and r.code == "auth.csrf"
    r = Http(proxied.url).post_form("/login", {"username": "li", "password": PASSWORD},
                                    headers={"Origin": "https://dash.example"})
    assert r.status == 303, r
    # Logout needs the token too, then ends the session.
    assert web.post_json("/logout", {}, csrf=False).code == "auth.csrf"
    r = web.post_json("/logout", {})
    assert r.status == 200 and r.json() == {"logged_out": True}
    assert web.get("/api/me").status == 401
    assert [a[1] for a in audit_rows(dsn)] == ["login", "login", "logout"]     # the proxied login too


def test_roles_ack_and_audit(start_dashboard: Any, make_user: Any, dsn: str, tmp_path: Path) -> None:
    dash = start_dashboard(ui_dir=ui_tree(tmp_path / "ui"))
    make_user("vera", "viewer", PASSWORD)
    make_user("otto", "operator", PASSWORD)
    make_user("ada", "admin", PASSWORD)
    now = int(time.time() * 1000)
    with psycopg.connect(dsn, autocommit=True) as conn:
        put_status(conn, "k1", active_alarms=[{"code": "tamper", "severity": "critical", "since": now - 90_000}])
        put_alarm(conn, "k1", "tamper", raised_ms=now - 90_000, severity="critical", latched=True)
    viewer, operator, admin = (login(dash.url, n, PASSWORD) for n in ("vera", "otto", "ada"))
    alarm = viewer.get_json("/api/alarms")["alarms"][0]
    body = {"kiosk": "k1", "code": "tamper", "raised_at": alarm["raised_at"], "note": "班长已到现场 / on site"}
    r = viewer.post_json("/api/alarms/ack", body)
    assert r.status == 403 and r.code == "auth.forbidden"
    r = operator.post_json("/api/alarms/ack", body)
    assert r.status == 200, r
    answer = r.json()
    validate(answer, "alarm")
    assert answer["acked_by"] == "otto" and answer["ack_note"] == body["note"] and answer["acked_at"]
    # Acknowledging is bookkeeping: a latched tamper still needs the kiosk's own ack, spelled out.
    assert answer["command"].endswith(" k1 ack-alarm code=tamper") and answer["cleared_at"] is None
    again = admin.post_json("/api/alarms/ack", body)
    assert again.status == 409 and again.code == "alarm.already_acked" and "otto" in again.json()["error"]["message"]
    gone = admin.post_json("/api/alarms/ack", {**body, "raised_at": "2020-01-01T00:00:00+00:00"})
    assert gone.status == 404 and gone.code == "alarm.unknown"
    for bad in ({**body, "note": "x" * 501}, {**body, "raised_at": "yesterday"}, {"kiosk": "k1"}, [1, 2]):
        r = admin.post_json("/api/alarms/ack", bad)
        assert r.status == 400 and r.code == "request.invalid", (bad, r)
    acks = audit_rows(dsn, "alarm_ack")
    assert len(acks) == 1 and acks[0][0] == "otto" and acks[0][2] == "k1/tamper"
    assert acks[0][3]["note"] == body["note"]
    # The audit trail is the admin's.
    for web in (viewer, operator):
        assert web.get("/api/audit").code == "auth.forbidden"
        page = web.get("/audit")
        assert page.status == 403 and "<main" not in page.text
    trail = admin.get_json("/api/audit?limit=50")
    validate(trail, "audit")
    assert [e["action"] for e in trail["entries"]][:2] == ["alarm_ack", "login"]
    assert admin.get("/audit").status == 200
    assert admin.get("/api/audit?limit=0").code == "request.invalid"


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``kiosk-ledger ARGV`` in its own process."""
    return subprocess.run([sys.executable, "-m", "fleet.ledger.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, stdin=subprocess.DEVNULL, timeout=60, check=False)


def test_users_cli(start_dashboard: Any, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def users(*argv: str) -> tuple[int, str, str]:
        """``kiosk-ledger users ...`` through its real entry point, in this process (one Python start saved each)."""
        code = ledger_main(["users", *argv, "--db", dsn])
        out = capsys.readouterr()
        return code, out.out, out.err

    assert users("list", "--json") == (0, "[]\n", "")              # no default user, ever
    short = tmp_path / "short"
    short.write_text("elevenchars\n")
    code, _out, err = users("add", "li", "--role", "admin", "--password-file", str(short))
    assert code == 2 and "at least 12 characters" in err, err
    r = run_cli("users", "add", "li", "--role", "admin", "--db", dsn)        # no terminal to ask on
    assert r.returncode == 2 and "--password-file" in r.stderr, r
    good = tmp_path / "pw"
    good.write_text(PASSWORD + "\n")
    code, out, err = users("add", "li", "--role", "admin", "--password-file", str(good))
    assert code == 0 and "li: added (admin)" in out, err
    code, _out, err = users("add", "li", "--role", "viewer", "--password-file", str(good))
    assert code == 2 and "exists already" in err
    code, _out, err = users("add", "bad name", "--role", "viewer", "--password-file", str(good))
    assert code == 2 and "user name" in err
    dash = start_dashboard()
    web = login(dash.url, "li", PASSWORD)
    new = tmp_path / "pw2"
    new.write_text("another long passphrase\n")
    assert users("passwd", "li", "--password-file", str(new))[0] == 0
    assert web.get("/api/me").status == 401               # the old password's session ended
    assert Http(dash.url).post_form("/login", {"username": "li", "password": PASSWORD}).status == 401
    web = login(dash.url, "li", "another long passphrase")
    assert users("disable", "li")[0] == 0
    assert web.get("/api/me").status == 401
    assert Http(dash.url).post_form("/login", {"username": "li", "password": "another long passphrase"}).status == 401
    code, out, _err = users("list", "--json")
    assert [(u["username"], u["role"], u["disabled"]) for u in json.loads(out)] == [("li", "admin", True)]
    code, out, _err = users("list")
    assert code == 0 and out.split()[:3] == ["li", "admin", "disabled"]
    assert users("passwd", "nobody", "--password-file", str(good))[0] == 2
    actions = [(a[0].startswith("cli:"), a[1], a[2]) for a in audit_rows(dsn) if a[1].startswith("user_")]
    assert actions == [(True, "user_add", "li"), (True, "user_passwd", "li"), (True, "user_disable", "li")]
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute("SELECT password_hash FROM dashboard_users").fetchone()
    assert stored is not None and stored[0].startswith("$argon2id$") and PASSWORD not in stored[0]


@pytest.mark.parametrize(("section", "error"), [
    ('[dashboard]\ntimezone = "Mars/Olympus"', "dashboard.timezone"),
    ('[dashboard]\nlisten = "8080"', "dashboard.listen"),
    ('[dashboard]\ndefault_language = "fr"', "dashboard.default_language"),
    ('[dashboard]\nsecure_cookies = "no"', "dashboard.secure_cookies"),
    ('[dashboard]\nsession_idle_s = 10', "dashboard.session_idle_s"),
    ('[dashboard]\nsession_idle_s = 90000\nsession_max_s = 3600', "dashboard.session_idle_s"),
    ('[dashboard]\nkioskctl_broker = "mqtt://b:1883; rm -rf /"', "dashboard.kioskctl_broker"),
    ('[dashboard]\ncolour = "blue"', "dashboard.colour"),
    ('[dashboard]\npublic_url = "https://dash.example/x?y"', "dashboard.public_url"),
])
def test_config_errors_name_the_key(section: str, error: str) -> None:
    import tomllib
    raw = tomllib.loads(f'[database]\ndsn = "postgresql://x/y"\n[ledger]\nfleet = "north"\n{section}\n')
    with pytest.raises(LedgerConfigError, match=error.replace(".", r"\.")):
        parse_ledger_config(raw, for_dashboard=True)


def test_dashboard_refuses_a_bad_config_with_exit_78(tmp_path: Path, dsn: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[database]\ndsn = "{dsn}"\n[ledger]\nfleet = "north"\n[dashboard]\ntimezone = "Nowhere/X"\n')
    r = run_cli("dashboard", "--config", str(config))
    assert r.returncode == 78 and "dashboard.timezone" in r.stderr, r
    # Without [mqtt] client_id and an ack key: the dashboard holds no key and needs none.
    parse_ledger_config({"database": {"dsn": dsn}, "ledger": {"fleet": "north"}}, for_dashboard=True)


def test_the_dashboard_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    """systemd/kiosk-dashboard.service: systemd-analyze verify clean, exposure at most 1.5 (the ledger's limit)."""
    import re
    import shutil
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed (Debian package: systemd)")
    shipped = (REPO / "systemd" / "kiosk-dashboard.service").read_text()
    program = "/opt/kiosk-agent/bin/kiosk-ledger"
    assert f"ExecStart={program} dashboard --config /etc/kiosk-ledger/dashboard.toml" in shipped
    copy = tmp_path / "kiosk-dashboard.service"
    copy.write_text(shipped.replace(program, f"{sys.executable} -m fleet.ledger.cli"))
    verify = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0 and (verify.stdout + verify.stderr).strip() == "", verify.stdout + verify.stderr
    security = subprocess.run([tool, "security", "--offline=true", str(copy)], capture_output=True, text=True,
                              timeout=120, check=False)
    match = re.search(r"Overall exposure level for kiosk-dashboard\.service: (\d+\.\d+)", security.stdout)
    assert match and float(match.group(1)) <= 1.5, security.stdout[-2000:] + security.stderr
    settings = dict(line.split("=", 1) for line in shipped.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["RestartPreventExitStatus"] == "78" and settings["User"] == "kiosk-ledger"


def _read_until(fd: int, marker: bytes, timeout: float = 30.0) -> bytes:
    """What a pty's other end printed, up to ``marker`` (or its end)."""
    import select
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got and time.monotonic() < deadline:
        ready, _w, _x = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:         # EIO: the other end closed
                break
            if not chunk:
                break
            got += chunk
    return got


def test_the_first_admin_types_the_password_twice_at_a_terminal(dsn: str) -> None:
    """``users add`` on a terminal (a pty): asks twice, refuses a mismatch, never echoes the password."""
    def add(name: str, answers: list[str]) -> tuple[int, bytes]:
        master, slave = os.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "fleet.ledger.cli", "users", "add", name, "--role", "admin",
                                 "--db", dsn], stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                                start_new_session=True)
        os.close(slave)
        seen = b""
        try:
            for answer in answers:
                seen += _read_until(master, b": ")
                os.write(master, answer.encode() + b"\n")
            seen += _read_until(master, b"\x00")      # to the end
            return proc.wait(30), seen
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    code, seen = add("ada", ["a long admin passphrase", "a long admin passphrase"])
    assert code == 0 and b"password (at least 12 characters)" in seen and b"again" in seen, seen
    assert b"ada: added (admin)" in seen and b"passphrase" not in seen
    code, seen = add("bob", ["first long passphrase", "second long passphrase"])
    assert code == 2 and b"differ" in seen, seen
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT username FROM dashboard_users").fetchall()] == ["ada"]
