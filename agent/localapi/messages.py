# SPDX-License-Identifier: Apache-2.0
"""XFS4IoT message framing: parse a command, build what the server sends.

Every message is ``{"header": {...}, "payload": {...}}``. A client sends
``command``s; the server answers each with one ``acknowledge`` (status null
when accepted), zero or more ``event``s with the same ``requestId``, then one
``completion`` (``payload.completionCode``). ``unsolicited`` messages carry no
requestId. See ``docs/local-api.yaml``.

    cmd = parse_command(text)          # Command, or raises Rejected (send its .acknowledge())
    completion("Common.Status", cmd.request_id, SUCCESS, {"common": {...}})
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

__all__ = [
    "VERSION", "Command", "Rejected", "parse_command", "acknowledge", "event", "completion", "unsolicited",
    "encode", "INVALID_MESSAGE", "INVALID_REQUEST_ID", "TOO_MANY_REQUESTS", "COMPLETION_CODES",
    "SUCCESS", "CANCELED", "TIMEOUT", "DEVICE_NOT_READY", "HARDWARE_ERROR", "SEQUENCE_ERROR",
    "INVALID_DATA", "UNSUPPORTED_COMMAND", "INTERNAL_ERROR",
]

VERSION = "1.0"
MAX_REQUEST_ID = 2**53 - 1          # what a JavaScript client can count to exactly

# acknowledge statuses
INVALID_MESSAGE = "invalidMessage"
INVALID_REQUEST_ID = "invalidRequestID"
TOO_MANY_REQUESTS = "tooManyRequests"

# completion codes
SUCCESS = "success"
CANCELED = "canceled"
TIMEOUT = "timeOut"
DEVICE_NOT_READY = "deviceNotReady"
HARDWARE_ERROR = "hardwareError"
SEQUENCE_ERROR = "sequenceError"
INVALID_DATA = "invalidData"
UNSUPPORTED_COMMAND = "unsupportedCommand"
INTERNAL_ERROR = "internalError"
COMPLETION_CODES = (SUCCESS, CANCELED, TIMEOUT, DEVICE_NOT_READY, HARDWARE_ERROR, SEQUENCE_ERROR,
                    INVALID_DATA, UNSUPPORTED_COMMAND, INTERNAL_ERROR)

_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,39}\.[A-Z][A-Za-z0-9]{0,63}$")
# Read from the head of a message too big to parse, only to echo it in the refusal.
_REQUEST_ID_PEEK = re.compile(rb'"requestId"\s*:\s*([0-9]{1,16})\b')


@dataclasses.dataclass(frozen=True)
class Command:
    """A well-formed command: its name, requestId, timeout (ms, 0 = none) and payload."""

    name: str
    request_id: int
    timeout_ms: int
    payload: dict[str, Any]


class Rejected(Exception):
    """A message that gets only an acknowledge with a non-null status."""

    def __init__(self, status: str, request_id: int, name: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.request_id = request_id
        self.name = name
        self.why = why

    def acknowledge(self) -> dict[str, Any]:
        return acknowledge(self.name, self.request_id, self.status, self.why)


def _request_id(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_REQUEST_ID:
        return None
    return value


def parse_command(text: str | bytes) -> Command:
    """The command in ``text``; ``Rejected`` (invalidMessage / invalidRequestID) when it is not one."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(INVALID_MESSAGE, 0, "", "not JSON") from None
    header = message.get("header") if isinstance(message, dict) else None
    if not isinstance(header, dict):
        raise Rejected(INVALID_MESSAGE, 0, "", "no header object")
    raw_id = header.get("requestId")
    echo = _request_id(raw_id) or 0
    name = header.get("name")
    shown = name if isinstance(name, str) and _NAME.match(name) else ""
    if not shown:
        raise Rejected(INVALID_MESSAGE, echo, "", "header.name must be Interface.Command")
    if header.get("type") != "command":
        raise Rejected(INVALID_MESSAGE, echo, shown, "header.type must be \"command\"")
    request_id = _request_id(raw_id)
    if request_id is None:
        raise Rejected(INVALID_REQUEST_ID, 0, shown, f"header.requestId must be an integer from 1 to {MAX_REQUEST_ID}")
    version = header.get("version", VERSION)
    if not isinstance(version, str) or version.split(".")[0] != VERSION.split(".")[0]:
        raise Rejected(INVALID_MESSAGE, request_id, shown, f"header.version {version!r} not supported (1.x)")
    timeout = header.get("timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= 86_400_000:
        raise Rejected(INVALID_MESSAGE, request_id, shown, "header.timeout must be milliseconds from 0 to 86400000")
    payload = message.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise Rejected(INVALID_MESSAGE, request_id, shown, "payload must be an object")
    return Command(shown, request_id, timeout, payload)


def peek_request_id(head: bytes) -> int:
    """The requestId in the first bytes of a message too big to parse, else 0."""
    found = _REQUEST_ID_PEEK.search(head[:4096])
    value = int(found.group(1)) if found else 0
    return value if 0 < value <= MAX_REQUEST_ID else 0


def _header(name: str, request_id: int | None, kind: str) -> dict[str, Any]:
    header: dict[str, Any] = {"name": name, "type": kind, "version": VERSION}
    if request_id is not None:
        header["requestId"] = request_id
    return header


def acknowledge(name: str, request_id: int, status: str | None = None, why: str | None = None) -> dict[str, Any]:
    header = _header(name, request_id, "acknowledge")
    header["status"] = status
    if why is not None:
        header["errorDescription"] = why
    return {"header": header, "payload": {}}


def event(name: str, request_id: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {"header": _header(name, request_id, "event"), "payload": payload}


def completion(name: str, request_id: int, code: str, payload: dict[str, Any] | None = None,
               error: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"completionCode": code}
    if error is not None:
        body["errorDescription"] = error
    body.update(payload or {})
    return {"header": _header(name, request_id, "completion"), "payload": body}


def unsolicited(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"header": _header(name, None, "unsolicited"), "payload": payload}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
