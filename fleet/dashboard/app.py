# SPDX-License-Identifier: Apache-2.0
"""The dashboard's aiohttp application: pages, static assets, the JSON API and the event stream.

    app = create_app(cfg, Database(cfg.database.dsn), ui_root=UI_ROOT)

docs/dashboard-api.md is the contract. Middlewares, outermost first: error
answers (``{"error": {"code", "message"}}``, 503 ``db.unavailable`` when
PostgreSQL is down), then access (a session everywhere but ``/login`` and
``/static/``; on every POST the session's CSRF token in ``X-CSRF-Token`` and
a same-origin ``Origin``). Every response gets the security headers as it
is prepared. Pages are static files: the server never writes data into
HTML, so there is nothing to escape; the pages read ``/api/me`` and the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from aiohttp import web

from fleet.dashboard import queries
from fleet.dashboard.auth import Authenticator, Session, require_role
from fleet.dashboard.db import Database
from fleet.dashboard.errors import (
    AlarmAlreadyAcked,
    AlarmUnknown,
    AuthCsrf,
    AuthRequired,
    DashboardError,
    DbUnavailable,
    KioskUnknown,
    NotFound,
    RequestInvalid,
)
from fleet.dashboard.live import LiveFeed
from fleet.ledger.config import LedgerConfig

__all__ = ["create_app", "UI_ROOT", "SECURITY_HEADERS", "COOKIE", "CSP"]

log = logging.getLogger("fleet.dashboard")

UI_ROOT = Path(__file__).resolve().parent / "ui"
COOKIE = "kd_session"
LANG_COOKIE = "kd_lang"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
}
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".woff2": "font/woff2", ".woff": "font/woff",
    ".png": "image/png", ".ico": "image/x-icon", ".json": "application/json", ".map": "application/json",
    ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
}
PAGES = {"/": "fleet", "/alarms": "alarms", "/reports": "reports", "/audit": "audit"}
FORBIDDEN_PAGE = ("<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>403</title>"
                  "<h1>403 &middot; 禁止访问 / Forbidden</h1><p><a href=\"/\">&larr;</a></p></html>")
NOTE_MAX = 500
KEEPALIVE_S = 15.0

class DashboardState:
    """What the handlers share: configuration, database, authenticator, live feed, caches."""

    def __init__(self, cfg: LedgerConfig, db: Database, ui_root: Path, keepalive_s: float) -> None:
        d = cfg.dashboard
        self.cfg, self.db, self.ui_root, self.keepalive_s = cfg, db, ui_root, keepalive_s
        self.fleet = cfg.ledger.fleet
        self.clock = queries.Clock(d.timezone)
        self.zone = self.clock.zone
        self.auth = Authenticator(db, idle_s=d.session_idle_s, max_s=d.session_max_s)
        self.tx_today = queries.TxToday(self.fleet, self.clock, refresh_s=d.tx_today_refresh_s)
        self.broker = d.kioskctl_broker or cfg.mqtt.url
        self.live = LiveFeed(cfg.database.dsn, rows=self.live_rows, alarms=self.live_alarms)

    async def live_rows(self, kiosks: list[str]) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            counts = await self.tx_today.counts(conn)
            return await queries.fleet_rows(conn, self.fleet, counts, self.zone, only=kiosks)

    async def live_alarms(self, kiosks: list[str]) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await queries.changed_alarms(conn, self.fleet, kiosks)
        return [queries.alarm_json(r, self.zone, r["now"]) for r in rows]


_STATE = web.AppKey("dashboard", DashboardState)


def _state(request: web.Request) -> DashboardState:
    return request.app[_STATE]


def _session(request: web.Request) -> Session:
    session: Session = request["session"]
    return session


COMPRESS_FROM = 32 * 1024     # bytes: a 1,000-kiosk fleet (~380 KB of JSON) crosses an office's WAN as ~40 KB


def _maybe_gzip(request: web.Request | None, response: web.Response, body: bytes) -> web.Response:
    """gzip a large body when the client accepts it, at level 1: ~15x cheaper than zlib's default here, and
    these repetitive JSON rows shrink about as much."""
    response.headers["Vary"] = "Accept-Encoding"
    accepted = request.headers.get("Accept-Encoding", "") if request is not None else ""
    if len(body) >= COMPRESS_FROM and _accepts_gzip(accepted):
        response.body = gzip.compress(body, compresslevel=1, mtime=0)
        response.headers["Content-Encoding"] = "gzip"
    return response


def _accepts_gzip(header: str) -> bool:
    """``Accept-Encoding`` names gzip with a q above 0."""
    for part in header.split(","):
        token, *params = (p.strip().lower() for p in part.split(";"))
        if token != "gzip":
            continue
        for param in params:
            if param.startswith("q="):
                try:
                    return float(param[2:]) > 0
                except ValueError:
                    return False
        return True
    return False


def _json(data: Any, status: int = 200, request: web.Request | None = None) -> web.Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    response = web.Response(body=body, status=status, content_type="application/json", charset="utf-8")
    return _maybe_gzip(request, response, body)


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


def _remote(request: web.Request) -> str:
    return request.remote or ""


# -- middlewares and headers ----------------------------------------------------------------------------

@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    """Every failure as the API's error JSON (pages get plain text); the process keeps serving."""
    try:
        return await handler(request)
    except DashboardError as exc:
        return _error(exc.status, exc.code, str(exc))
    except psycopg.OperationalError:
        exc2 = DbUnavailable("the database is not reachable just now; try again shortly")
        return _error(exc2.status, exc2.code, str(exc2))
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        code = {404: NotFound.code, 405: "request.method"}.get(exc.status, RequestInvalid.code)
        return _error(exc.status, code, exc.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _error(500, "internal", "internal error (logged)")


def _public(request: web.Request) -> bool:
    return request.path == "/login" or request.path.startswith("/static/") or request.path == "/favicon.ico"


def _same_origin(request: web.Request) -> bool:
    """A POST's Origin (browsers always send one) names this server; a missing one is a non-browser client.

    This server: ``[dashboard] public_url`` when set (a proxy may rewrite Host), else the request's Host.
    """
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    public = _state(request).cfg.dashboard.public_url.rstrip("/").lower()
    if public:
        return origin.rstrip("/").lower() == public
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


@web.middleware
async def access_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    """A session for everything but the login page and the static assets; CSRF and Origin on every POST."""
    if request.method not in ("GET", "HEAD") and not _same_origin(request):
        raise AuthCsrf("cross-origin request refused")
    if _public(request):
        return await handler(request)
    session = await _state(request).auth.session(request.cookies.get(COOKIE))
    if session is None:
        if request.method in ("GET", "HEAD") and not request.path.startswith("/api/"):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        raise AuthRequired("log in first")
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise AuthCsrf("missing or wrong X-CSRF-Token (GET /api/me gives it)")
    request["session"] = session
    return await handler(request)


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "kiosk-dashboard"      # not aiohttp's and Python's versions


# -- pages and static files -----------------------------------------------------------------------------

def _page(request: web.Request, name: str, status: int = 200) -> web.StreamResponse:
    path = _state(request).ui_root / "pages" / f"{name}.html"
    if not path.is_file():
        raise web.HTTPNotFound(text=f"page {name} is not installed")
    return web.FileResponse(path, status=status, headers={"Content-Type": "text/html; charset=utf-8"})


async def login_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "login")


async def page(request: web.Request) -> web.StreamResponse:
    name = PAGES[request.path]
    if name == "audit" and _session(request).role != "admin":
        custom = _state(request).ui_root / "pages" / "403.html"
        if custom.is_file():
            return _page(request, "403", status=403)
        return web.Response(status=403, text=FORBIDDEN_PAGE, content_type="text/html", charset="utf-8")
    return _page(request, name)


async def kiosk_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "kiosk")


async def static(request: web.Request) -> web.StreamResponse:
    """A file under ui/static: no listing, nothing outside it (symlinks resolved), explicit content types."""
    root = (_state(request).ui_root / "static").resolve()
    rel = request.match_info["path"]
    if not rel or "\x00" in rel or any(part.startswith(".") for part in rel.split("/")):
        raise web.HTTPNotFound()
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise web.HTTPNotFound()
    ctype = CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
    # Revalidated on each use (ETag / Last-Modified: a 304 without the body), never stale after an upgrade;
    # pages and the API stay no-store (they carry data).
    return web.FileResponse(target, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})


# -- login / logout -------------------------------------------------------------------------------------

def _safe_next(value: str | None) -> str:
    """Only a local path: never ``//host`` or ``http://host`` (an open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or any(
            ord(c) < 32 for c in value):
        return "/"
    return value


async def login(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise RequestInvalid("give username and password (form fields)")
    token, _opened = await st.auth.login(username, password, remote=_remote(request))
    after = form.get("next")
    response = web.HTTPSeeOther(_safe_next(after if isinstance(after, str) else None))
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=st.cfg.dashboard.secure_cookies, max_age=st.cfg.dashboard.session_max_s)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    await st.auth.logout(_session(request), remote=_remote(request))
    response = _json({"logged_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


# -- the JSON API ---------------------------------------------------------------------------------------

def _language(request: web.Request, default: str) -> str:
    for candidate in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in ("zh", "en"):
            return candidate
    for part in request.headers.get("Accept-Language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return default


async def api_me(request: web.Request) -> web.StreamResponse:
    st, session = _state(request), _session(request)
    return _json({"username": session.username, "role": session.role, "csrf": session.csrf, "fleet": st.fleet,
                  "timezone": st.clock.name, "language": _language(request, st.cfg.dashboard.default_language)})


async def api_fleet(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    status = request.query.get("status") or None
    if status is not None and status not in queries.STATUSES:
        raise RequestInvalid(f"status={status!r}: expected one of {', '.join(queries.STATUSES)}")
    async with st.db.connection() as conn:
        counts = await st.tx_today.counts(conn)
        rows = await queries.fleet_rows(conn, st.fleet, counts, st.zone)
    summary = queries.fleet_summary(rows, site=request.query.get("site") or None, q=request.query.get("q"),
                                    status=status)
    return _json({"generated_at": queries.iso(st.clock.now(), st.zone), "fleet": st.fleet,
                  "today": st.clock.today().isoformat(), **summary}, request=request)


def _kiosk_id(request: web.Request) -> str:
    kiosk = request.match_info["kiosk"]
    if not kiosk or len(kiosk) > 64:
        raise KioskUnknown(f"no kiosk {kiosk[:64]!r} in this fleet")
    return kiosk


async def api_kiosk(request: web.Request) -> web.StreamResponse:
    st, kiosk = _state(request), _kiosk_id(request)
    async with st.db.connection() as conn:
        counts = await st.tx_today.counts(conn)
        detail = await queries.kiosk_detail(conn, st.fleet, kiosk, counts, st.zone, broker=st.broker,
                                            key=st.cfg.dashboard.kioskctl_key)
    if detail is None:
        raise KioskUnknown(f"no kiosk {kiosk!r} in fleet {st.fleet}")
    return _json(detail, request=request)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestInvalid(f"{name}={raw[:40]!r}: expected an integer {low}…{high}") from None
    if not low <= value <= high:
        raise RequestInvalid(f"{name}={value}: expected {low}…{high}")
    return value


async def api_series(request: web.Request) -> web.StreamResponse:
    st, kiosk = _state(request), _kiosk_id(request)
    hours = _int_param(request, "hours", 24, 1, 720)
    async with st.db.connection() as conn:
        if not await queries.kiosk_exists(conn, st.fleet, kiosk):
            raise KioskUnknown(f"no kiosk {kiosk!r} in fleet {st.fleet}")
        series = await queries.kiosk_series(conn, st.fleet, kiosk, hours, st.zone)
    return _json(series, request=request)


def _timestamp(name: str, raw: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise RequestInvalid(f"{name}={raw[:60]!r}: expected an ISO 8601 time with offset") from None
    if value.tzinfo is None:
        raise RequestInvalid(f"{name}={raw[:60]!r}: expected an ISO 8601 time with offset")
    return value


async def api_alarms(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    state = request.query.get("state", "open")
    if state not in ("open", "all"):
        raise RequestInvalid(f"state={state[:20]!r}: expected open or all")
    since_raw = request.query.get("since")
    since = _timestamp("since", since_raw) if since_raw else st.clock.now() - dt.timedelta(days=7)
    async with st.db.connection() as conn:
        found = await queries.alarms(conn, st.fleet, st.zone, open_only=state == "open", since=since)
    return _json({"alarms": found}, request=request)


async def api_ack(request: web.Request) -> web.StreamResponse:
    st, session = _state(request), _session(request)
    require_role(session, "operator")
    try:
        body = await request.json()
    except ValueError:
        raise RequestInvalid("the body must be JSON: {\"kiosk\", \"code\", \"raised_at\", \"note\"}") from None
    if not isinstance(body, dict):
        raise RequestInvalid("the body must be a JSON object")
    kiosk, code, raised, note = body.get("kiosk"), body.get("code"), body.get("raised_at"), body.get("note", "")
    for name, value in (("kiosk", kiosk), ("code", code), ("raised_at", raised)):
        if not isinstance(value, str) or not value or len(value) > 64:
            raise RequestInvalid(f"{name}: required, a string")
    if not isinstance(note, str) or len(note) > NOTE_MAX:
        raise RequestInvalid(f"note: a string of at most {NOTE_MAX} characters")
    assert isinstance(kiosk, str) and isinstance(code, str) and isinstance(raised, str)
    raised_at = _timestamp("raised_at", raised)
    async with st.db.connection() as conn:
        outcome = await queries.ack_alarm(conn, st.fleet, kiosk, code, raised_at, username=session.username,
                                          note=note, remote=_remote(request))
        episode = await queries.alarm_episode(conn, st.fleet, kiosk, code, raised_at)
    if outcome == "unknown" or episode is None:
        raise AlarmUnknown(f"no {code} alarm of {kiosk} raised at {raised}")
    answer = queries.alarm_json(episode, st.zone, episode["now"])
    if outcome == "already":
        when = answer["acked_at"]
        raise AlarmAlreadyAcked(f"already acknowledged by {episode['acked_by']} at {when}")
    if code == "tamper" and episode["cleared_at"] is None:
        answer["command"] = queries.kioskctl_actions(st.fleet, kiosk, st.broker, st.cfg.dashboard.kioskctl_key,
                                                     tamper_latched=True)[-1]["command"]
    return _json(answer)


def _day(name: str, raw: str | None, default: dt.date) -> dt.date:
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise RequestInvalid(f"{name}={raw[:20]!r}: expected YYYY-MM-DD") from None


async def api_reports(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    today = st.clock.today()
    last = _day("to", request.query.get("to"), today)
    first = _day("from", request.query.get("from"), last - dt.timedelta(days=6))
    by = request.query.get("by", "kiosk")
    if by not in ("kiosk", "service", "day"):
        raise RequestInvalid(f"by={by[:20]!r}: expected kiosk, service or day")
    if first > last:
        raise RequestInvalid(f"from={first} is after to={last}")
    if (last - first).days >= 366:
        raise RequestInvalid("at most 366 days at a time")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise RequestInvalid(f"format={fmt[:20]!r}: expected json or csv")
    async with st.db.connection() as conn:
        report = await queries.tx_report(conn, st.fleet, st.clock, first, last, by)
    if fmt == "json":
        return _json(report, request=request)
    lines = [f"{by},completed,abandoned,failed,total"]
    for row in report["rows"]:
        lines.append(",".join([_csv_cell(str(row["key"]))] + [str(row[k]) for k in
                                                             ("completed", "abandoned", "failed", "total")]))
    body = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    response = web.Response(body=body, content_type="text/csv", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="tx-{by}-{first}-{last}.csv"'})
    return _maybe_gzip(request, response, body)


def _csv_cell(value: str) -> str:
    """RFC 4180 quoting, and a leading ' before =, +, -, @ so a spreadsheet never runs a cell as a formula."""
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        value = "'" + value
    if any(c in value for c in ',"\r\n'):
        value = '"' + value.replace('"', '""') + '"'
    return value


async def api_audit(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    require_role(_session(request), "admin")
    limit = _int_param(request, "limit", 200, 1, 5000)
    async with st.db.connection() as conn:
        entries = await queries.audit_entries(conn, st.zone, limit)
    return _json({"entries": entries}, request=request)


async def api_events(request: web.Request) -> web.StreamResponse:
    """``text/event-stream``: ``event: kiosk`` / ``event: alarm`` as they happen, ``: keepalive`` every 15 s."""
    st = _state(request)
    token = request.cookies.get(COOKIE)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "X-Accel-Buffering": "no"})
    queue = st.live.subscribe()
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n: connected\n\n")
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=st.keepalive_s)
            except TimeoutError:
                # Also the moment to notice a session that ended (logout, expiry, user disabled) meanwhile; while
                # the database is down the stream stays (an EventSource answered 503 would stop for good).
                with contextlib.suppress(DbUnavailable):
                    if await st.auth.session(token) is None:
                        break
                message = b": keepalive\n\n"
            if message is None:
                break
            await response.write(message)
    except ConnectionResetError:
        pass
    finally:
        st.live.unsubscribe(queue)
    return response


# -- the application ------------------------------------------------------------------------------------

def create_app(cfg: LedgerConfig, db: Database, *, ui_root: Path = UI_ROOT, keepalive_s: float = KEEPALIVE_S,
               live: bool = True) -> web.Application:
    """The dashboard for ``cfg``'s fleet over ``db``; ``live`` starts the LISTEN feed with the app."""
    app = web.Application(middlewares=[errors_middleware, access_middleware], client_max_size=64 * 1024)
    state = DashboardState(cfg, db, ui_root, keepalive_s)
    app[_STATE] = state
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/kiosks/{kiosk}", kiosk_page)
    app.router.add_get("/static/{path:.+}", static)
    app.router.add_get("/api/me", api_me)
    app.router.add_get("/api/fleet", api_fleet)
    app.router.add_get("/api/kiosks/{kiosk}", api_kiosk)
    app.router.add_get("/api/kiosks/{kiosk}/series", api_series)
    app.router.add_get("/api/alarms", api_alarms)
    app.router.add_post("/api/alarms/ack", api_ack)
    app.router.add_get("/api/reports/tx", api_reports)
    app.router.add_get("/api/audit", api_audit)
    app.router.add_get("/api/events", api_events, allow_head=False)

    async def run_live(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(state.live.run()) if live else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def end_streams(_app: web.Application) -> None:
        state.live.close_streams()

    app.cleanup_ctx.append(run_live)
    app.on_shutdown.append(end_streams)
    return app
