# SPDX-License-Identifier: Apache-2.0
"""The wire contract, defined once: topics, envelopes, JSON Schemas.

The agent publishes with it and ``kioskctl`` reads with it; neither copies a
topic string or a field name.

    topics = Topics("north", "k-0001")
    topics.alarm("door_open")        # "kiosk/v1/north/k-0001/alarm/door_open"
    payload = encode(envelope("k-0001", online=True, bdSeq=7))
    validate("state", json.loads(payload))     # needs the dev extra (jsonschema)

Every upward payload is JSON with ``v`` (contract version), ``kiosk`` and
``ts`` (UTC epoch milliseconds), plus the fields of its schema in
``agent/wire/schemas/<name>.json``, which ``docs/mqtt-api.yaml`` references.
"""

from __future__ import annotations

import json
import time
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

__all__ = ["CONTRACT_VERSION", "ROOT", "Topics", "envelope", "encode", "decode", "loads_strict",
           "DuplicateKey", "schema", "validate", "SCHEMA_DIR", "now_ms", "parse_topic", "TX_ACK_MAX_BYTES"]

CONTRACT_VERSION = 1
ROOT = "kiosk/v1"
SCHEMA_DIR = Path(__file__).with_name("schemas")
# The largest ``tx/ack`` worth reading: 10,000 ids (the most one ack may
# name) of uuid4 hex are about 350 KB. Anything bigger is dropped unread.
TX_ACK_MAX_BYTES = 512 * 1024


def now_ms() -> int:
    return int(time.time() * 1000)


class Topics:
    """Topic names for one kiosk (or, with ``kiosk="+"``, a fleet-wide filter)."""

    def __init__(self, fleet: str, kiosk: str) -> None:
        self.fleet = fleet
        self.kiosk = kiosk
        self.prefix = f"{ROOT}/{fleet}/{kiosk}"

    @property
    def state(self) -> str:
        return f"{self.prefix}/state"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"

    def alarm(self, code: str) -> str:
        return f"{self.prefix}/alarm/{code}"

    @property
    def tx(self) -> str:
        return f"{self.prefix}/tx"

    @property
    def tx_ack(self) -> str:
        return f"{self.prefix}/tx/ack"

    @property
    def evidence(self) -> str:
        return f"{self.prefix}/evidence"

    def cmd(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}"

    def cmd_result(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}/result"

    @property
    def config_desired(self) -> str:
        return f"{self.prefix}/config/desired"

    @property
    def config_reported(self) -> str:
        return f"{self.prefix}/config/reported"

    @classmethod
    def fleet_filter(cls, fleet: str = "+") -> str:
        """Everything every kiosk of ``fleet`` publishes (``+`` = all fleets)."""
        return f"{ROOT}/{fleet}/+/#"


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """``kiosk/v1/F/K/rest`` → ``(F, K, rest)``, or None for foreign topics."""
    parts = topic.split("/", 4)
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != ROOT:
        return None
    return parts[2], parts[3], parts[4]


def envelope(kiosk: str, ts: int | None = None, **fields: Any) -> dict[str, Any]:
    return {"v": CONTRACT_VERSION, "kiosk": kiosk, "ts": now_ms() if ts is None else ts, **fields}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON with sorted keys: the same object, the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


class DuplicateKey(ValueError):
    """A JSON object names one key twice.

    Python keeps the last value, other parsers the first: a signed document
    with a duplicate could mean one thing to the signer and another here.
    """

    code = "contract.duplicate_key"


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise DuplicateKey(f"duplicate key {key[:40]!r}")
        doc[key] = value
    return doc


def loads_strict(data: bytes | str) -> Any:
    """``json.loads`` that refuses duplicate keys at any depth (every signed document is read with it).

    Raises ValueError (DuplicateKey, json.JSONDecodeError, UnicodeDecodeError, or
    too deep a nesting, which json reports as RecursionError).

    >>> loads_strict(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    agent.contract.DuplicateKey: duplicate key 'a'
    """
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def decode(data: bytes) -> Any:
    return loads_strict(data)


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of payload ``name`` (file ``agent/wire/schemas/<name>.json``)."""
    result: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return result


def validate(name: str, payload: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``payload`` fits schema ``name``.

    jsonschema is a dev/fleet-side dependency; the kiosk itself never needs it.
    """
    _validator(name).validate(payload)


@cache
def _validator(name: str) -> Any:
    # Built once per schema: building one costs as much as validating a payload (the ledger's history
    # worker validates every state, health and alarm message of a fleet).
    import jsonschema

    return jsonschema.Draft202012Validator(schema(name), registry=_registry(),
                                           format_checker=jsonschema.FormatChecker())


@lru_cache(maxsize=1)
def _registry() -> Any:
    from referencing import Registry, Resource

    return Registry().with_resources(
        (path.name, Resource.from_contents(json.loads(path.read_text(encoding="utf-8"))))
        for path in sorted(SCHEMA_DIR.glob("*.json")))
