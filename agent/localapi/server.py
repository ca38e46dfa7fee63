# SPDX-License-Identifier: Apache-2.0
"""The local API server: one loopback HTTP/WebSocket listener for the kiosk screen.

A component of the agent (built by the daemon with what it uses):

    server = LocalApiServer(cfg.local_api, token_file, services=[publisher, kiosk, printer, ...], ui_dir=UI_DIR)
    await server.start()          # 127.0.0.1:<port>; writes a fresh token to token_file
    server.url                    # "http://127.0.0.1:5846/?token=..."
    await server.stop()

Plain GETs are the reference UI's static files (:mod:`agent.localapi.static`).
A WebSocket upgrade to ``/xfs4iot/v1.0/<service>`` must carry the token
(``?token=`` or ``Authorization: Bearer``): otherwise HTTP 401 before the
upgrade; an unknown path is 404 and a page from another origin 403.

Per connection: messages up to ``local_api.max_message_bytes`` are handled;
bigger ones, up to ``SOCKET_MAX_BYTES`` (2 MiB), are not parsed and get an
acknowledge ``invalidMessage`` (the requestId echoed when the message's head
names one); beyond that the socket closes with 1009. At most
``local_api.max_in_flight`` commands run at once (``tooManyRequests``
beyond). The first ``/kiosk`` connection while none drives may drive
sessions; the others are read-only.

Binding the port can fail (another program has it): the agent keeps serving
(MQTT, sessions) and tries again every ``RETRY_BIND_S``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import http
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from agent.config import LocalApiConfig
from agent.localapi import messages
from agent.localapi.auth import offered_token, token_matches, write_token
from agent.localapi.service import CommandError, Reply, Request, Service
from agent.localapi.static import StaticFiles
from agent.tasks import spawn

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request as HttpRequest
    from websockets.http11 import Response as HttpResponse

__all__ = ["LocalApiServer", "Connection", "UI_DIR", "API_ROOT", "SOCKET_MAX_BYTES"]

log = logging.getLogger(__name__)
# websockets logs every connection at INFO; a kiosk screen reconnecting is not news.
_ws_log = logging.getLogger("agent.localapi.websockets")
_ws_log.setLevel(logging.WARNING)


class _HandshakeNoise(logging.Filter):
    """websockets logs a failed opening handshake at ERROR with a traceback.

    Anything on the machine can cause one (a port probe, a health check, a
    browser's preconnect that closes unused), so a journal full of tracebacks
    would hide real errors: a connection closed before its request is not
    logged, any other bad handshake is one WARNING line naming the cause.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "opening handshake failed" or not record.exc_info:
            return True
        exc = record.exc_info[1]
        causes = []
        while exc is not None:
            causes.append(exc)
            exc = exc.__cause__ or exc.__context__
        if any(isinstance(c, EOFError | ConnectionError) for c in causes):
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "local API: a bad opening handshake refused (%s)", (causes[-1],)
        record.exc_info = record.exc_text = None
        return True


_ws_log.addFilter(_HandshakeNoise())

UI_DIR = Path(__file__).with_name("ui")
API_ROOT = "/xfs4iot/v1.0"
SOCKET_MAX_BYTES = 2 * 2**20     # a message bigger than this closes the connection (1009)
OUT_HIGH = 2000                  # queued outgoing messages: stop reading this client's commands
OUT_LOW = 200                    # ... until its queue drains to this
OUT_MAX = 20_000                 # a client this far behind is not reading: closed (1008)
RETRY_BIND_S = 10.0
REFRESH_S = 1.0
AUTH_LOG_EVERY_S = 60.0          # refused upgrades are logged at most once a minute (with the count)
CANCEL = "Common.Cancel"         # every service has it; the server answers it
HOSTS = ("127.0.0.1", "localhost")


@dataclasses.dataclass
class _Running:
    request: Request
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None


class Connection:
    """One authenticated WebSocket client of one service."""

    def __init__(self, ws: ServerConnection, service: Service, *, max_in_flight: int, max_message_bytes: int,
                 drives: bool) -> None:
        self.ws = ws
        self.service = service
        self.max_in_flight = max_in_flight
        self.max_message_bytes = max_message_bytes
        self._drives = drives
        self.running: dict[int, _Running] = {}
        self.out: asyncio.Queue[str | None] = asyncio.Queue()
        self.drained = asyncio.Event()
        self.drained.set()
        self.closed = False

    @property
    def drives(self) -> bool:
        return self._drives

    @property
    def gone(self) -> bool:
        return self.closed

    def post(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.out.qsize() >= OUT_MAX:
            log.warning("local API client of /%s is not reading (%d messages queued): closing it",
                        self.service.path, self.out.qsize())
            self.closed = True
            spawn(self.ws.close(1008, "not reading its messages"), name="localapi-close")
            return
        self.out.put_nowait(messages.encode(message))
        if self.out.qsize() >= OUT_HIGH:
            self.drained.clear()

    async def writer(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                text = await self.out.get()
                if text is None:
                    return
                if self.out.qsize() <= OUT_LOW:
                    self.drained.set()
                await self.ws.send(text)
        except ConnectionClosed:
            return
        finally:
            # Whatever ended the writing, the reader must not wait for a drain that cannot come.
            self.closed = True
            self.drained.set()


class LocalApiServer:
    """See the module docstring."""

    def __init__(self, settings: LocalApiConfig, token_file: Path, *, services: Sequence[Service],
                 ui_dir: Path = UI_DIR) -> None:
        self.settings = settings
        self.token_file = token_file
        self.services = {service.path: service for service in services}
        self.services[""] = ServicePublisher(self)
        self.static = StaticFiles(ui_dir)
        self.token = ""
        self.port = settings.port
        self.connections: set[Connection] = set()
        self.driver: Connection | None = None
        self.counts = {"connections": 0, "refused_auth": 0, "invalid": 0, "too_many": 0}
        self._server: Server | None = None
        self._binder: asyncio.Task[None] | None = None
        self._refresher: asyncio.TimerHandle | None = None
        self._stopping = False
        self._auth_logged = -AUTH_LOG_EVERY_S

    @property
    def url(self) -> str:
        """The kiosk screen's address, token included (what ``make run`` prints)."""
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self.token_file.unlink(missing_ok=True)      # a killed run's token opens nothing
        self.token = secrets.token_urlsafe(32)
        for service in self.services.values():
            service.attach(self.broadcast, self.settings.max_in_flight)
            await service.start()
        try:
            await self._listen()
        except OSError as exc:
            log.warning("local API: cannot listen on 127.0.0.1:%d (%s); the kiosk screen cannot connect "
                        "until it can; trying again every %.0f s", self.port, exc.strerror or exc, RETRY_BIND_S)
            self._binder = asyncio.create_task(self._retry_listen(), name="localapi-bind")

    async def _listen(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(self._serve, "127.0.0.1", self.port, process_request=self._process_request,
                                   max_size=SOCKET_MAX_BYTES, max_queue=4, compression=None,
                                   ping_interval=20, ping_timeout=20, close_timeout=2,
                                   server_header=None, logger=_ws_log)
        # Written once listening: a screen (or make run) that finds the token finds this server.
        write_token(self.token_file, self.token, group=self.settings.ui_group)
        log.info("local API listening on http://127.0.0.1:%d/ (token in %s)", self.port, self.token_file)

    async def _retry_listen(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RETRY_BIND_S)
            try:
                await self._listen()
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    log.warning("local API: cannot listen on 127.0.0.1:%d (%s)", self.port, exc)

    async def stop(self) -> None:
        self._stopping = True
        if self._binder is not None:
            self._binder.cancel()
            self._binder = None
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                log.warning("local API: connections did not close within 5 s")
        for service in self.services.values():
            await service.stop()
        self.token_file.unlink(missing_ok=True)

    # -- HTTP: static files and the upgrade's checks --------------------------------

    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        def respond(status: int, text: str) -> HttpResponse:
            return Response(status, http.HTTPStatus(status).phrase,
                            Headers([("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
                                     ("Content-Length", str(len(text.encode())))]), text.encode())

        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in HOSTS:
            # A page that rebound its own name to 127.0.0.1 gets nothing, not even the UI.
            return respond(421, "this server answers for 127.0.0.1 only\n")
        if (request.headers.get("Upgrade") or "").lower() != "websocket":
            found = self.static.get(request.path, if_none_match=request.headers.get("If-None-Match"))
            headers = Headers(list(found.headers.items()))
            headers["Content-Length"] = str(len(found.body))
            return Response(found.status, found.reason, headers, found.body)
        parts = urlsplit(request.path)
        if self._service_for(parts.path) is None:
            return respond(404, f"no service at {parts.path}; discovery: {API_ROOT}/\n")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).hostname not in HOSTS:
            return respond(403, "cross-origin connections are refused\n")
        offered = offered_token(parse_qs(parts.query), request.headers.get("Authorization"))
        if not token_matches(self.token, offered):
            self.counts["refused_auth"] += 1
            now = time.monotonic()
            if now - self._auth_logged >= AUTH_LOG_EVERY_S:
                # One line per period at most: a loop of wrong tokens must not fill the journal.
                log.warning("local API: upgrade to %s refused: %s token (%d refused since start)", parts.path,
                            "missing" if offered is None else "wrong", self.counts["refused_auth"])
                self._auth_logged = now
            return respond(401, "a valid token is required (?token= or Authorization: Bearer)\n")
        return None

    def _service_for(self, path: str) -> Service | None:
        if path in (API_ROOT, API_ROOT + "/"):
            return self.services.get("")
        if not path.startswith(API_ROOT + "/"):
            return None
        name = path[len(API_ROOT) + 1:].rstrip("/")
        return self.services.get(name) if name else None

    # -- WebSocket ------------------------------------------------------------------

    async def _serve(self, ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        service = self._service_for(urlsplit(ws.request.path if ws.request else "").path)
        if service is None:      # _process_request refused it already
            return
        drives = service.path == "kiosk" and self.driver is None
        conn = Connection(ws, service, max_in_flight=self.settings.max_in_flight,
                          max_message_bytes=self.settings.max_message_bytes, drives=drives)
        if drives:
            self.driver = conn
        self.connections.add(conn)
        self.counts["connections"] += 1
        writer = asyncio.create_task(conn.writer(), name="localapi-writer")
        service.opened(conn)
        self._arm_refresh()
        try:
            async for message in ws:
                if not conn.drained.is_set():
                    await conn.drained.wait()
                if conn.closed:
                    break
                self._receive(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self.connections.discard(conn)
            if self.driver is conn:
                self.driver = None
            for running in list(conn.running.values()):
                if running.task is not None:
                    # The screen went away: its session ends (screen_lost). When the agent stops, the
                    # engine's own stop ends it (shutdown): no reason given, nothing answered.
                    running.request.cancel_reason = None if self._stopping else messages.CANCELED
                    running.task.cancel()
            service.closed(conn)
            conn.out.put_nowait(None)
            try:
                await asyncio.wait_for(writer, 2)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()

    def _receive(self, conn: Connection, message: str | bytes) -> None:
        size = len(message)
        if isinstance(message, str) and size * 4 > conn.max_message_bytes:
            size = len(message.encode("utf-8", "surrogatepass"))
        if size > conn.max_message_bytes:
            head = message[:4096]
            rid = messages.peek_request_id(head.encode("utf-8", "replace") if isinstance(head, str) else head)
            self.counts["invalid"] += 1
            conn.post(messages.acknowledge("", rid, messages.INVALID_MESSAGE,
                                           f"message of {size} bytes; the limit is {conn.max_message_bytes}"))
            return
        try:
            command = messages.parse_command(message)
        except messages.Rejected as exc:
            self.counts["invalid"] += 1
            conn.post(exc.acknowledge())
            return
        name, rid = command.name, command.request_id
        if rid in conn.running:
            conn.post(messages.acknowledge(name, rid, messages.INVALID_REQUEST_ID,
                                           f"requestId {rid} is in flight on this connection"))
            return
        handler = conn.service.commands.get(name)
        if handler is None and name != CANCEL:
            self.counts["invalid"] += 1
            known = ", ".join(sorted([*conn.service.commands, CANCEL]))
            conn.post(messages.acknowledge(name, rid, messages.INVALID_MESSAGE,
                                           f"{name} is not a command of /{conn.service.path}; known: {known}"))
            return
        if len(conn.running) >= conn.max_in_flight:
            self.counts["too_many"] += 1
            conn.post(messages.acknowledge(name, rid, messages.TOO_MANY_REQUESTS,
                                           f"{conn.max_in_flight} commands are in flight on this connection"))
            return
        conn.post(messages.acknowledge(name, rid))
        request = Request(conn, name, rid, command.payload)
        running = _Running(request)
        conn.running[rid] = running
        if name == CANCEL:
            # Answered at once, before the commands it cancels complete.
            self._cancel(conn, request)
            return
        running.task = asyncio.create_task(self._run(conn, running, handler), name=f"localapi-{name}")
        if command.timeout_ms > 0:
            running.timer = asyncio.get_running_loop().call_later(
                command.timeout_ms / 1000, self._expire, running)

    def _expire(self, running: _Running) -> None:
        if running.task is not None and not running.task.done() and running.request.cancel_reason is None:
            running.request.cancel_reason = messages.TIMEOUT
            running.task.cancel()

    def _cancel(self, conn: Connection, request: Request) -> None:
        wanted = request.payload.get("requestIds")
        try:
            if wanted is None:
                ids = [rid for rid in conn.running if rid != request.request_id]
            elif isinstance(wanted, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in wanted):
                ids = list(wanted)
            else:
                raise CommandError(messages.INVALID_DATA, "requestIds must be an array of integers")
            for rid in ids:
                target = conn.running.get(rid)
                if target is not None and target.task is not None and not target.task.done() \
                        and target.request.cancel_reason is None:
                    target.request.cancel_reason = messages.CANCELED
                    target.task.cancel()
            reply = messages.completion(request.name, request.request_id, messages.SUCCESS)
        except CommandError as exc:
            reply = messages.completion(request.name, request.request_id, exc.completion_code, error=exc.why)
        conn.running.pop(request.request_id, None)
        conn.post(reply)

    async def _run(self, conn: Connection, running: _Running, handler: Any) -> None:
        request = running.request
        name, rid = request.name, request.request_id
        try:
            reply: Reply = await handler(request)
            message = messages.completion(name, rid, reply.code, reply.payload, reply.error)
        except asyncio.CancelledError:
            reason = request.cancel_reason
            if reason is None:          # the server is stopping
                raise
            why = "canceled" if reason == messages.CANCELED else "the command's timeout expired"
            message = messages.completion(name, rid, reason, error=why)
        except CommandError as exc:
            message = messages.completion(name, rid, exc.completion_code, exc.payload, error=exc.why)
        except Exception:  # a handler bug must not take the connection or the agent down
            log.exception("local API: %s failed", name)
            message = messages.completion(name, rid, messages.INTERNAL_ERROR, error="internal error (logged)")
        finally:
            conn.running.pop(rid, None)
            if running.timer is not None:
                running.timer.cancel()
        conn.post(message)

    # -- unsolicited ----------------------------------------------------------------

    def broadcast(self, path: str, message: dict[str, Any]) -> None:
        """``message`` to every client of the service at ``path``."""
        for conn in list(self.connections):
            if conn.service.path == path:
                conn.post(message)

    def _arm_refresh(self) -> None:
        if self._refresher is None and not self._stopping:
            self._refresher = asyncio.get_running_loop().call_later(REFRESH_S, self._refresh)

    def _refresh(self) -> None:
        self._refresher = None
        paths = {conn.service.path for conn in self.connections}
        for path in paths:
            try:
                self.services[path].refresh()
            except Exception:  # one service's bug must not stop the others' events
                log.exception("local API: refreshing /%s failed", path)
        if self.connections:
            self._arm_refresh()


class ServicePublisher(Service):
    """``/xfs4iot/v1.0/``: discovery of the other services' URIs."""

    path, interface = "", "ServicePublisher"

    def __init__(self, server: LocalApiServer) -> None:
        super().__init__()
        self.server = server
        self.commands["ServicePublisher.GetServices"] = self.get_services
        self.commands["Common.Capabilities"] = self.get_capabilities

    async def get_services(self, _request: Request) -> Reply:
        base = f"ws://127.0.0.1:{self.server.port}{API_ROOT}"
        return Reply({"services": [{"serviceURI": f"{base}/{service.path}", "interface": service.interface}
                                   for service in self.server.services.values() if service.path]})

    async def get_capabilities(self, _request: Request) -> Reply:
        return Reply(self.capabilities())
