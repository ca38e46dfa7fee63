# SPDX-License-Identifier: Apache-2.0
"""What a service of the local API is: its URI, its commands, its unsolicited events.

A :class:`Service` is one WebSocket endpoint (``/xfs4iot/v1.0/<path>``). The
server (:mod:`agent.localapi.server`) frames and validates messages, keeps
each connection's requests and calls the service's handler with a
:class:`Request`; the handler returns a :class:`Reply` or raises
:class:`CommandError` with an XFS4IoT completion code.

    class Printer(Service):
        path, interface = "printer", "Printer"
        def __init__(self):
            super().__init__()
            self.commands["Common.Status"] = self.get_status
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.localapi import messages

__all__ = ["Service", "Request", "Reply", "CommandError", "Peer", "Broadcast", "Handler"]


class Peer(Protocol):
    """One client connection, as a service sees it."""

    @property
    def drives(self) -> bool:
        """Whether this connection may drive citizen sessions."""

    @property
    def gone(self) -> bool:
        """Whether the client has gone away (its connection closed)."""

    def post(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for this client (kept in order)."""


Broadcast = Callable[[str, dict[str, Any]], None]   # (service path, message) to every client of that service


@dataclasses.dataclass
class Request:
    """One accepted command while it runs."""

    peer: Peer
    name: str
    request_id: int
    payload: dict[str, Any]
    # why the server cancelled it: messages.CANCELED (Common.Cancel) or messages.TIMEOUT
    cancel_reason: str | None = None

    def event(self, name: str, payload: dict[str, Any]) -> None:
        """An intermediate event of this command (type "event", same requestId)."""
        self.peer.post(messages.event(name, self.request_id, payload))


@dataclasses.dataclass(frozen=True)
class Reply:
    """A command's completion: code, payload, optional errorDescription."""

    payload: dict[str, Any] = dataclasses.field(default_factory=dict)
    code: str = messages.SUCCESS
    error: str | None = None


class CommandError(Exception):
    """Ends a command with ``code`` (an XFS4IoT completion code) and ``why`` as errorDescription."""

    def __init__(self, code: str, why: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(why)
        self.completion_code = code
        self.why = why
        self.payload = payload or {}


Handler = Callable[[Request], Awaitable[Reply]]


class Service:
    """Base of every endpoint: ``path`` ("" is the ServicePublisher), ``interface``, ``commands``."""

    path = ""
    interface = ""
    events: tuple[str, ...] = ()             # unsolicited events this service may send

    def __init__(self) -> None:
        self.commands: dict[str, Handler] = {}
        self.broadcast: Broadcast = lambda _path, _message: None
        self.max_in_flight = 16

    def attach(self, broadcast: Broadcast, max_in_flight: int) -> None:
        """Called by the server before it starts listening."""
        self.broadcast = broadcast
        self.max_in_flight = max_in_flight

    def unsolicited(self, name: str, payload: dict[str, Any]) -> None:
        self.broadcast(self.path, messages.unsolicited(name, payload))

    async def start(self) -> None:
        """Begin watching what this service reports (called once the server listens)."""

    async def stop(self) -> None:
        """Stop watching."""

    def opened(self, peer: Peer) -> None:
        """A client connected to this service."""

    def closed(self, peer: Peer) -> None:
        """A client of this service went away."""

    def refresh(self) -> None:
        """Look again at what this service reports; send a changed event if it changed.

        The server calls it about once a second while a client is connected,
        so a state without an event of its own (the light tower) still shows.
        """

    def capabilities(self) -> dict[str, Any]:
        """``Common.Capabilities``: the interfaces, their commands and events."""
        interfaces: dict[str, dict[str, Any]] = {}
        for name in sorted([*self.commands, "Common.Cancel"]):
            prefix = name.split(".")[0]
            interfaces.setdefault(prefix, {"name": prefix, "commands": {}, "events": {},
                                           "maximumRequests": self.max_in_flight})
            interfaces[prefix]["commands"][name] = {"versions": [messages.VERSION]}
        for name in self.events:
            prefix = name.split(".")[0]
            interfaces.setdefault(prefix, {"name": prefix, "commands": {}, "events": {},
                                           "maximumRequests": self.max_in_flight})
            interfaces[prefix]["events"][name] = {"versions": [messages.VERSION]}
        return {"interfaces": list(interfaces.values())}

