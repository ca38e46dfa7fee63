# SPDX-License-Identifier: Apache-2.0
"""The local API's JSON Schemas (``schemas/``) and the check tests run on every message.

    validate_message(message)     # raises jsonschema.ValidationError (needs the dev extra)

The kiosk never validates what it sends at run time; the tests check every
message a client receives, so the schemas and the server cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_DIR", "schema", "validate_message", "payload_schema_name"]

SCHEMA_DIR = Path(__file__).with_name("schemas")


@functools.cache
def schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


def payload_schema_name(header: dict[str, Any]) -> str | None:
    """The ``$defs`` entry for a message's payload: events and unsolicited by name, completions by command."""
    kind, name = header.get("type"), header.get("name")
    if kind == "acknowledge":
        return "acknowledgePayload"
    if kind == "completion":
        return f"{name}.completion"
    return str(name)


def validate_message(message: Any) -> None:
    """Raise unless ``message`` is a message the server may send, with the payload its name promises."""
    import jsonschema

    doc = schema("local-api")
    jsonschema.Draft202012Validator(doc, format_checker=jsonschema.FormatChecker()).validate(message)
    name = payload_schema_name(message["header"])
    defs = doc["$defs"]
    if name not in defs:
        if message["header"]["type"] == "completion":
            name = "completion"
        else:
            raise jsonschema.ValidationError(f"no schema for {message['header']['type']} {name!r}")
    sub = {"$schema": doc["$schema"], "$defs": defs, "$ref": f"#/$defs/{name}"}
    jsonschema.Draft202012Validator(sub, format_checker=jsonschema.FormatChecker()).validate(message["payload"])
