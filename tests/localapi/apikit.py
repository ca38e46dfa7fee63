# SPDX-License-Identifier: Apache-2.0
"""Helpers for the local API tests: the agent with its API on a free port, a plain WebSocket client.

Every message an :class:`ApiClient` receives is checked against the
contract's JSON Schemas (``agent/localapi/schemas/``) and recorded raw, so
a test can also scan the frames for citizen data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sessions.sesskit import QUICK_SERVICES, BackOffice, session_config
from websockets.sync.client import ClientConnection, connect

from agent.localapi.contract import validate_message
from agent.sim.devbroker import free_port

__all__ = ["ApiClient", "api_config", "read_token", "ws_url", "Completed", "RunningApi", "card_secrets",
           "API_SERVICES", "PAYMENT_CODE"]

ROOT = "/xfs4iot/v1.0"
PAYMENT_CODE = "134567890123456789"     # a WeChat Pay code to the scanner driver (hal/protocols/scanner.py)
# The sessions tests' quick services, and one whose receipt is its purpose (refused without paper).
API_SERVICES = QUICK_SERVICES + '''
[[services]]
id = "quick_receipt"
name_zh = "回执打印"
name_en = "Receipt print"
offline = true
receipt = "purpose"
steps = [{ kind = "confirm", timeout_s = 20 }, { kind = "print_receipt", timeout_s = 20 }]
'''


def api_config(workdir: Path, broker_url: str, *, port: int | None = None, extra: str = "",
               services: str = API_SERVICES, overrides: dict[str, str] | None = None) -> tuple[Path, int]:
    """The simulation config with quick services, an evidence key and ``[local_api]`` on a free port."""
    port = port or free_port()
    backoffice = BackOffice(workdir / "backoffice")
    path = session_config(workdir, broker_url, backoffice, overrides=overrides,
                          extra=services + f"\n[local_api]\nport = {port}\n" + extra)
    return path, port


def read_token(state_dir: Path, timeout: float = 20.0) -> str:
    path = state_dir / "local-api.token"
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no token in {path} after {timeout} s")
        time.sleep(0.05)


def ws_url(port: int, service: str = "", token: str | None = None) -> str:
    query = f"?token={token}" if token is not None else ""
    return f"ws://127.0.0.1:{port}{ROOT}/{service}{query}"


class Completed:
    """One command's answer: its acknowledge, events and completion."""

    def __init__(self, ack: dict[str, Any], events: list[dict[str, Any]], completion: dict[str, Any] | None) -> None:
        self.ack = ack
        self.events = events
        self.completion = completion

    @property
    def code(self) -> str | None:
        return None if self.completion is None else self.completion["payload"]["completionCode"]

    @property
    def payload(self) -> dict[str, Any]:
        assert self.completion is not None, f"no completion (acknowledge {self.ack})"
        return self.completion["payload"]  # type: ignore[no-any-return]


class ApiClient:
    """A plain XFS4IoT client over ``websockets.sync.client``."""

    def __init__(self, url: str, *, max_size: int | None = 2**24, **kwargs: Any) -> None:
        self.ws: ClientConnection = connect(url, max_size=max_size, open_timeout=10, **kwargs)
        self.raw: list[str] = []
        self.backlog: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._next_id = 0

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ws.close()
        assert not self.errors, "messages that break the contract:\n" + "\n".join(self.errors)

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, name: str, payload: dict[str, Any] | None = None, *, request_id: int | None = None,
             timeout: int = 0) -> int:
        rid = self.next_id() if request_id is None else request_id
        header: dict[str, Any] = {"name": name, "requestId": rid, "type": "command", "version": "1.0"}
        if timeout:
            header["timeout"] = timeout
        self.ws.send(json.dumps({"header": header, "payload": payload or {}}))
        return rid

    def send_raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def _read(self, timeout: float) -> dict[str, Any]:
        text = self.ws.recv(timeout)
        assert isinstance(text, str), "the server sends text frames"
        self.raw.append(text)
        message = json.loads(text)
        try:
            validate_message(message)
        except Exception as exc:  # noqa: BLE001 - collected, asserted at close
            self.errors.append(f"{text[:300]}: {exc.__class__.__name__}: {str(exc)[:400]}")
        return message  # type: ignore[no-any-return]

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0,
             what: str = "a message") -> dict[str, Any]:
        """The first message (backlog first) matching ``predicate``; the others stay in the backlog."""
        for i, message in enumerate(self.backlog):
            if predicate(message):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; backlog: {self.backlog[-5:]}")
            try:
                message = self._read(left)
            except TimeoutError:
                continue
            if predicate(message):
                return message
            self.backlog.append(message)

    def answer(self, rid: int, timeout: float = 20.0, *, until_completion: bool = True) -> Completed:
        """The acknowledge, events and (if accepted) completion of request ``rid``."""
        ack = self.wait(lambda m: m["header"].get("requestId") == rid and m["header"]["type"] == "acknowledge",
                        timeout, f"the acknowledge of {rid}")
        events: list[dict[str, Any]] = []
        if ack["header"]["status"] is not None or not until_completion:
            return Completed(ack, events, None)
        while True:
            message = self.wait(lambda m: m["header"].get("requestId") == rid, timeout, f"the completion of {rid}")
            if message["header"]["type"] == "completion":
                return Completed(ack, events, message)
            events.append(message)

    def start(self, name: str, payload: dict[str, Any] | None = None, *, timeout: int = 0) -> int:
        """Send a long-running command and take its acknowledge (which must accept it); its requestId."""
        rid = self.send(name, payload, timeout=timeout)
        ack = self.answer(rid, until_completion=False).ack
        assert ack["header"]["status"] is None, ack
        return rid

    def finish(self, rid: int, timeout: float = 30.0) -> Completed:
        """The remaining events and the completion of ``rid``, started with :meth:`start`."""
        events: list[dict[str, Any]] = []
        while True:
            message = self.wait(lambda m: m["header"].get("requestId") == rid and m["header"]["type"] != "acknowledge",
                                timeout, f"the completion of {rid}")
            if message["header"]["type"] == "completion":
                return Completed({}, events, message)
            events.append(message)

    def command(self, name: str, payload: dict[str, Any] | None = None, *, timeout: int = 0,
                wait_s: float = 20.0) -> Completed:
        return self.answer(self.send(name, payload, timeout=timeout), wait_s)

    def event(self, rid: int, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next event ``name`` of request ``rid``."""
        return self.wait(lambda m: m["header"].get("requestId") == rid and m["header"]["type"] == "event"
                         and m["header"]["name"] == name, timeout, f"{name} of request {rid}")

    def step(self, rid: int, step: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next ``Kiosk.StepEvent`` of ``rid`` for ``step`` (earlier ones, e.g. a retake's, skipped)."""
        while True:
            payload = self.event(rid, "Kiosk.StepEvent", timeout)["payload"]
            if payload["step"] == step:
                return payload  # type: ignore[no-any-return]

    def unsolicited(self, name: str, timeout: float = 20.0,
                    predicate: Callable[[dict[str, Any]], bool] = lambda _p: True) -> dict[str, Any]:
        return self.wait(lambda m: m["header"]["type"] == "unsolicited" and m["header"]["name"] == name
                         and predicate(m["payload"]), timeout, f"unsolicited {name}")


def card_secrets(kind: str = "resident") -> list[str]:
    """The simulated card's full ID number, names and address (hal/sim data): never on the API."""
    from hal.sim.idcard import sample_card
    card = sample_card(kind)
    values = [card.id_number, card.name, getattr(card, "name_en", None), getattr(card, "address", None)]
    return [v for v in values if v]


class RunningApi:
    """A real agent process (simulated peripherals, real broker) with its local API, and how to reach it."""

    def __init__(self, agent: Any, port: int, broker_url: str) -> None:
        self.agent = agent
        self.port = port
        self.broker_url = broker_url
        self.token = read_token(agent.state_dir)

    def client(self, service: str = "kiosk", *, token: str | None = None, **kwargs: Any) -> ApiClient:
        return ApiClient(ws_url(self.port, service, self.token if token is None else token), **kwargs)

    def http(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A plain GET: status, headers (lower-case names), body."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()
