# SPDX-License-Identifier: Apache-2.0
"""Helpers for the dashboard's tests: the real ``kiosk-ledger dashboard`` process, users, an HTTP client.

    proc = DashboardProcess(tmp_path, write_dashboard_config(tmp_path / "d.toml", dsn=dsn)).start()
    make_user(dsn, "li", "operator", "correct horse battery")
    web = login(proc.url, "li", "correct horse battery")     # Http with the session cookie and .csrf
    web.get_json("/api/fleet")
    web.post_json("/api/alarms/ack", {...})                   # sends X-CSRF-Token and a same-origin Origin

``Http`` follows no redirects (a test sees the 303) and keeps only the
session cookie, as a browser would for this one origin. ``history`` writes
rows shaped as ``fleet/ledger/history.py`` writes them (schema step 3), for
tests that need a given state without a broker and agents.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
from argon2 import PasswordHasher

# tests/ledger's private PostgreSQL cluster, importable whichever conftest pytest loaded first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ledger"))
from pgcluster import PgCluster, find_pg_bin

__all__ = ["PgCluster", "find_pg_bin", "DashboardProcess", "write_dashboard_config", "make_user", "free_port", "Http",
           "Response", "login", "EventStream", "put_status", "put_alarm", "put_health", "put_tx", "REPO", "validate",
           "SCHEMAS"]

REPO = Path(__file__).resolve().parents[2]
# Argon2id at argon2-cffi's minimum cost: users made by fixtures need not cost a login's 50 ms each. The
# dashboard verifies them all the same (the parameters are in the hash) and rehashes them on login.
_FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_dashboard_config(path: Path, *, dsn: str, port: int | None = None, fleet: str = "north",
                           broker_url: str = "mqtt://127.0.0.1:1883", extra: str = "",
                           dashboard_extra: str = "", secure_cookies: bool = False) -> Path:
    """A ledger TOML with the ``[dashboard]`` the tests want: loopback, plain HTTP cookies, fresh counts."""
    path.write_text(f'''[database]
dsn = "{dsn}"

[mqtt]
url = "{broker_url}"

[ledger]
fleet = "{fleet}"

[dashboard]
listen = "127.0.0.1:{port or free_port()}"
secure_cookies = {str(secure_cookies).lower()}
tx_today_refresh_s = 0
{dashboard_extra}
{extra}''', encoding="utf-8")
    return path


class DashboardProcess:
    """``kiosk-ledger dashboard`` in its own process (its log in a file); ``url`` once started."""

    def __init__(self, workdir: Path, config: Path, *, ui_dir: Path | None = None) -> None:
        import tomllib
        self.workdir, self.config, self.ui_dir = workdir, config, ui_dir
        listen = tomllib.loads(config.read_text())["dashboard"]["listen"]
        self.url = f"http://{listen}"
        self.log_path = workdir / f"{config.stem}.dashboard.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> DashboardProcess:
        argv = [sys.executable, "-m", "fleet.ledger.cli", "dashboard", "--config", str(self.config)]
        if self.ui_dir is not None:
            argv += ["--ui-dir", str(self.ui_dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the server answers HTTP (any status); AssertionError with its log if it exits first."""
        deadline = time.monotonic() + timeout
        parts = urlsplit(self.url)
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"kiosk-ledger dashboard exited {self.proc.returncode}:\n{self.log[-3000:]}")
            try:
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
                conn.request("GET", "/static/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not answer within {timeout:g}s:\n{self.log[-3000:]}") \
                        from None
                time.sleep(0.05)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the dashboard did not stop on SIGTERM; log:\n{self.log[-2000:]}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def make_user(dsn: str, name: str, role: str, password: str, *, disabled: bool = False) -> None:
    """A dashboard user straight into the database (the CLI's own tests add users through the CLI)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO dashboard_users (username, password_hash, role, disabled_at) "
                     "VALUES (%s, %s, %s, CASE WHEN %s THEN now() END)",
                     (name, _FAST_HASHER.hash(password), role, disabled))


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The API error's ``code``, if the body is one."""
        try:
            doc = self.json()
        except ValueError:
            return None
        return doc.get("error", {}).get("code") if isinstance(doc, dict) else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


class Http:
    """One browser-like client of the dashboard: the session cookie, its CSRF token, no redirects followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None
        self.seen: list[bytes] = []         # every response body, for the leak checks

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
                ) -> Response:
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            raw = conn.getresponse()
            response = Response(raw.status, raw.headers, raw.read())
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _eq, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header or not value:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        self.seen.append(response.body)
        return response

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def get_json(self, path: str) -> Any:
        response = self.get(path)
        assert response.status == 200, response
        return response.json()

    def post_json(self, path: str, data: Any, *, csrf: str | bool | None = True, origin: str | bool | None = True
                  ) -> Response:
        headers = {"Content-Type": "application/json"}
        token = self.csrf if csrf is True else csrf if isinstance(csrf, str) else None
        if token:
            headers["X-CSRF-Token"] = token
        sent_origin = self.origin if origin is True else origin if isinstance(origin, str) else None
        if sent_origin:
            headers["Origin"] = sent_origin
        return self.request("POST", path, json.dumps(data).encode(), headers)

    def post_form(self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Response:
        return self.request("POST", path, urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin,
                             **(headers or {})})


def login(base: str, username: str, password: str) -> Http:
    """Log in through ``POST /login`` and fetch the CSRF token from ``/api/me``."""
    web = Http(base)
    response = web.post_form("/login", {"username": username, "password": password})
    assert response.status == 303, response
    web.csrf = web.get_json("/api/me")["csrf"]
    return web


class EventStream:
    """``GET /api/events`` read line by line (server-sent events) with the session's cookie."""

    def __init__(self, web: Http) -> None:
        self.conn = http.client.HTTPConnection(web.host, web.port, timeout=30)
        self.conn.request("GET", "/api/events", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in
                                                                             web.cookies.items())})
        self.response = self.conn.getresponse()

    def events(self, timeout: float = 20.0) -> Iterator[tuple[str, Any]]:
        """(event, data) as they come, comments as ("comment", text); stops at the deadline."""
        deadline = time.monotonic() + timeout
        event, data = "message", []
        while time.monotonic() < deadline:
            raw = self.response.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith(":"):
                yield "comment", line[1:].strip()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                yield event, json.loads("\n".join(data))
                event, data = "message", []

    def wait_end(self, timeout: float = 30.0) -> bool:
        """True once the server ends the stream (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.response.readline():
                    return True
            except TimeoutError:
                return False
        return False

    def next(self, kind: str, predicate: Any = None, timeout: float = 20.0) -> Any:
        for event, data in self.events(timeout):
            if event == kind and (predicate is None or predicate(data)):
                return data
        raise AssertionError(f"no {kind} event within {timeout:g}s")

    def close(self) -> None:
        self.conn.close()


# -- history rows shaped as fleet/ledger/history.py writes them (schema step 3) ------------------------------

def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def put_status(conn: psycopg.Connection[Any], kiosk: str, *, fleet: str = "north", site: str | None = "site-1",
               online: bool | None = True, mode: str = "in_service", active_alarms: list[dict[str, Any]] | None = None,
               health: dict[str, Any] | None = None, peripherals: dict[str, Any] | None = None,
               versions: dict[str, Any] | None = None, since_ms: int | None = None) -> None:
    """kiosk_status as the birth, health and alarms of a kiosk leave it."""
    now_ms = int(time.time() * 1000)
    conn.execute(
        "INSERT INTO kiosk_status (kiosk, fleet, site, online, online_since, bd_seq, mode, versions, peripherals, "
        "health, health_at, active_alarms, last_seen) VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (kiosk) DO UPDATE SET site = EXCLUDED.site, online = EXCLUDED.online, "
        "online_since = EXCLUDED.online_since, mode = EXCLUDED.mode, versions = EXCLUDED.versions, "
        "peripherals = EXCLUDED.peripherals, health = EXCLUDED.health, health_at = EXCLUDED.health_at, "
        "active_alarms = EXCLUDED.active_alarms, last_seen = EXCLUDED.last_seen, updated_at = now()",
        (kiosk, fleet, site, online, _ts(since_ms or now_ms - 3_600_000), mode,
         json.dumps(versions or {"agent": "0.9.0", "firmware": "1.2.0"}),
         json.dumps(peripherals if peripherals is not None else {"printer": {"kind": "printer", "simulated": True},
                                                                 "idcard": {"kind": "idcard", "simulated": True}}),
         json.dumps(health) if health is not None else None, _ts(now_ms) if health is not None else None,
         json.dumps(active_alarms or []), _ts(now_ms)))


def put_alarm(conn: psycopg.Connection[Any], kiosk: str, code: str, *, raised_ms: int, severity: str = "warning",
              cleared_ms: int | None = None, detail: str = "", latched: bool = False, fleet: str = "north",
              device: str | None = None) -> None:
    """One alarm episode (alarm_history): raised at ``raised_ms``, open unless ``cleared_ms``."""
    conn.execute("INSERT INTO alarm_history (kiosk, fleet, code, raised_at, cleared_at, severity, detail, device, "
                 "latched) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                 (kiosk, fleet, code, _ts(raised_ms), _ts(cleared_ms) if cleared_ms else None, severity, detail,
                  device, latched))


def put_health(conn: psycopg.Connection[Any], kiosk: str, ts_ms: int, *, disk_free_mb: float = 2000.0,
               cpu_temp_c: float | None = 50.0, outbox_backlog: int = 0, connects: int = 1,
               fleet: str = "north") -> None:
    payload = {"v": 1, "kiosk": kiosk, "ts": ts_ms, "reason": "periodic", "uptime_s": 60, "mode": "in_service",
               "system": {"uptime_s": 3600, "load": [0.1, 0.1, 0.1], "mem_total_mb": 1900, "mem_available_mb": 900,
                          "disk_free_mb": disk_free_mb, "disk_total_mb": 4000, "cpu_temp_c": cpu_temp_c},
               "agent": {"rss_mb": 40, "version": "0.9.0", "connects": connects}, "peripherals": {}, "alarms": []}
    conn.execute("INSERT INTO health_history (kiosk, fleet, ts, mode, disk_free_mb, cpu_temp_c, outbox_backlog, "
                 "connects, rss_mb, payload) VALUES (%s, %s, %s, 'in_service', %s, %s, %s, %s, 40, %s)",
                 (kiosk, fleet, _ts(ts_ms), disk_free_mb, cpu_temp_c, outbox_backlog, connects, json.dumps(payload)))


def put_tx(conn: psycopg.Connection[Any], kiosk: str, seq: int, data: dict[str, Any], *, ts_ms: int,
           fleet: str = "north", epoch: str = "e" * 32) -> None:
    """A stored transaction record: the payload as a kiosk signs it (signature bytes aside: nothing verifies here)."""
    record = {"canon": "jcs", "data": data, "epoch": epoch, "id": f"{kiosk}-{seq:08d}", "kid": "k" * 16,
              "kiosk": kiosk, "prev": "0" * 64, "seq": seq, "sig": "x", "ts": ts_ms, "v": 1}
    payload = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    conn.execute("INSERT INTO tx (kiosk, epoch, seq, id, fleet, hash, prev, kid, ts_ms, kind, has_evidence, payload, "
                 "linked_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false, %s, now())",
                 (kiosk, epoch, seq, record["id"], fleet, f"{seq:064x}", "0" * 64, record["kid"], ts_ms,
                  data.get("type", "?"), payload))


# -- the API's JSON Schemas (fleet/dashboard/schemas/api.json) ------------------------------------------------

SCHEMAS = REPO / "fleet" / "dashboard" / "schemas" / "api.json"


def validate(doc: Any, name: str) -> None:
    """jsonschema.ValidationError unless ``doc`` is what the contract's ``$defs/<name>`` says."""
    import jsonschema
    root = json.loads(SCHEMAS.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator({**root, "$ref": f"#/$defs/{name}"},
                                    format_checker=jsonschema.FormatChecker()).validate(doc)
