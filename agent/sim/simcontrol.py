# SPDX-License-Identifier: Apache-2.0
"""A control socket for the simulators, present only with ``hal.backend = "sim"``.

A UNIX stream socket in ``storage.dir`` (never a network port) taking one
JSON request per line and answering one JSON line. ``kiosk-agent sim`` is
its client, so a developer running ``make run`` can open the door or run
the printer out of paper, and tests drive a running agent the same way.

    $ kiosk-agent sim --config .run/agent.toml door open
    {"ok": true, "device": "door", "active": true}
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SimControl", "send_sim_command", "socket_path"]

log = logging.getLogger(__name__)

Action = Callable[[list[str]], dict[str, Any]]


def socket_path(storage_dir: Path) -> Path:
    return storage_dir / "sim-control.sock"


class SimControl:
    """Serves ``{"device": D, "action": A, "args": [...]}`` requests."""

    def __init__(self, path: Path, actions: dict[str, dict[str, Action]]) -> None:
        self.path = path
        self.actions = actions
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        device, action = request.get("device"), request.get("action")
        args = request.get("args") or []
        table = self.actions.get(device) if isinstance(device, str) else None
        if table is None:
            return {"ok": False, "error": f"unknown device {device!r}; known: {', '.join(sorted(self.actions))}"}
        fn = table.get(action) if isinstance(action, str) else None
        if fn is None:
            return {"ok": False, "error": f"{device}: unknown action {action!r}; known: {', '.join(sorted(table))}"}
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return {"ok": False, "error": "args must be a list of strings"}
        try:
            return {"ok": True, "device": device, **fn(args)}
        except Exception as exc:  # noqa: BLE001 - report, never crash the agent
            return {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    reply = {"ok": False, "error": "not JSON"}
                else:
                    # Simulator actions may block briefly (pty I/O); keep the loop free.
                    reply = await asyncio.get_running_loop().run_in_executor(None, self.handle, request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def send_sim_command(path: Path, device: str, action: str, args: list[str] | None = None,
                     timeout: float = 10.0) -> dict[str, Any]:
    """Client side: send one request and return the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"device": device, "action": action, "args": args or []}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply
