# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger``'s configuration: TOML to a typed, checked ``LedgerConfig``.

    cfg = load_ledger_config(Path("/etc/kiosk-ledger/ledger.toml"))

Strict like the agent's: an unknown table or key is an error, and every
error names the dotted key, the value and what was expected. Relative
paths are relative to the file. A minimal file::

    [database]
    dsn = "postgresql://ledger@db.example/ledger"

    [mqtt]
    url = "mqtts://broker.example:8883"
    client_id = "ledger-host1-1"       # stable: the broker keeps this worker's session

    [ledger]
    fleet = "north"

    [acks]
    key_file = "/etc/kiosk-ledger/keys/backoffice.key"   # kioskctl keys init --role backoffice
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

from fleet.ledger.errors import LedgerConfigError

__all__ = ["LedgerConfig", "DatabaseConfig", "MqttConfig", "IngestConfig", "AcksConfig", "GapsConfig",
           "MetricsConfig", "load_ledger_config", "parse_ledger_config"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = ""                   # libpq connection string or URI


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = ""             # required: stable per worker, so a restart gets its unacknowledged messages
    session_expiry_s: int = 86_400  # how long the broker keeps a dead worker's session (and its messages)
    keepalive: int = 30
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    fleet: str = ""                 # required: whose kiosk/v1/{fleet}/+/tx and evidence this worker consumes
    share_group: str = "ledger"     # $share/{share_group}/...: every worker of one ledger uses the same
    batch_max: int = 500            # messages per PostgreSQL transaction, at most
    batch_ms: int = 20              # how long a batch waits for more messages after its first
    # A record announcing evidence is acknowledged only once its bundle is stored (the ack makes the kiosk
    # erase it). 0: wait for the bundle however long; > 0: acknowledge that long after the record anyway
    # (for records whose bundle is known lost, e.g. a kiosk crash between record and bundle).
    evidence_grace_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class AcksConfig:
    key_file: Path | None = None    # required: the back-office Ed25519 key (kioskctl keys init --role backoffice)
    key_id: str = ""                # defaults to the key file's name without .key
    interval_ms: int = 200          # how often committed, linked records are acknowledged, per kiosk in one tx/ack
    max_ids: int = 1000             # ids per tx/ack (the contract allows 10,000)


@dataclasses.dataclass(frozen=True)
class GapsConfig:
    reorder_window_s: float = 60.0  # a missing seq younger than this is reordering, not yet a gap
    check_interval_s: float = 5.0   # how often one worker scans for gaps (fleet/ledger/gaps.py)
    retry_s: float = 300.0          # how often an open gap is asked for again


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""                # host:port of the Prometheus endpoint; empty = none


@dataclasses.dataclass(frozen=True)
class LedgerConfig:
    database: DatabaseConfig = DatabaseConfig()
    mqtt: MqttConfig = MqttConfig()
    ledger: IngestConfig = IngestConfig()
    acks: AcksConfig = AcksConfig()
    gaps: GapsConfig = GapsConfig()
    metrics: MetricsConfig = MetricsConfig()
    source: Path | None = None


_BOUNDS: dict[str, tuple[float, float]] = {
    "mqtt.session_expiry_s": (0, 2**32 - 1), "mqtt.keepalive": (5, 3600),
    "ledger.batch_max": (1, 10_000), "ledger.batch_ms": (0, 10_000), "ledger.evidence_grace_s": (0, 30 * 86_400),
    "acks.interval_ms": (10, 600_000), "acks.max_ids": (1, 10_000), "gaps.reorder_window_s": (0, 86_400),
    "gaps.check_interval_s": (0.1, 3600), "gaps.retry_s": (1, 86_400),
}
_SECTIONS: dict[str, type[Any]] = {"database": DatabaseConfig, "mqtt": MqttConfig, "ledger": IngestConfig,
                                   "acks": AcksConfig, "gaps": GapsConfig, "metrics": MetricsConfig}


def _value(key: str, field: dataclasses.Field[Any], raw: Any, base: Path) -> Any:
    kind = str(field.type)
    if kind in ("int", "float"):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (kind == "int" and not isinstance(raw, int)):
            raise LedgerConfigError(f"{key} = {raw!r}: expected {'an integer' if kind == 'int' else 'a number'}")
        low, high = _BOUNDS.get(key, (float("-inf"), float("inf")))
        if not low <= raw <= high:
            raise LedgerConfigError(f"{key} = {raw!r}: expected {low:g} to {high:g}")
        return float(raw) if kind == "float" else raw
    if not isinstance(raw, str):
        raise LedgerConfigError(f"{key} = {raw!r}: expected a string")
    if kind.startswith("Path"):
        path = Path(raw).expanduser()
        return path if path.is_absolute() else base / path
    return raw


def parse_ledger_config(raw: dict[str, Any], *, base: Path = Path("."), source: Path | None = None) -> LedgerConfig:
    """A checked ``LedgerConfig`` from parsed TOML; LedgerConfigError naming the key otherwise."""
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            raise LedgerConfigError(f"[{name}]: unknown table (expected one of {', '.join(_SECTIONS)})")
        if not isinstance(table, dict):
            raise LedgerConfigError(f"{name}: expected a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            if key not in fields:
                raise LedgerConfigError(f"{name}.{key}: unknown key (expected one of {', '.join(fields)})")
            values[key] = _value(f"{name}.{key}", fields[key], value, base)
        sections[name] = cls(**values)
    cfg = LedgerConfig(**sections, source=source)
    _require(cfg)
    return cfg


def _require(cfg: LedgerConfig) -> None:
    if not cfg.database.dsn:
        raise LedgerConfigError("database.dsn: required (a libpq connection string)")
    if not cfg.ledger.fleet or not _ID.match(cfg.ledger.fleet) or cfg.ledger.fleet in ("+", "#"):
        raise LedgerConfigError(f"ledger.fleet = {cfg.ledger.fleet!r}: required, a fleet id (no wildcards)")
    if not _ID.match(cfg.ledger.share_group):
        raise LedgerConfigError(f"ledger.share_group = {cfg.ledger.share_group!r}: letters, digits, '_', '-', '.'")
    if not cfg.mqtt.client_id or not _ID.match(cfg.mqtt.client_id):
        raise LedgerConfigError(f"mqtt.client_id = {cfg.mqtt.client_id!r}: required, stable per worker "
                                "(letters, digits, '_', '-', '.'), so a restart resumes its broker session")
    if not cfg.mqtt.url.startswith(("mqtt://", "mqtts://")):
        raise LedgerConfigError(f"mqtt.url = {cfg.mqtt.url!r}: expected mqtt://host:port or mqtts://host:port")
    if cfg.acks.key_file is None:
        raise LedgerConfigError("acks.key_file: required, the back-office key that signs tx/ack "
                                "(kioskctl keys init --role backoffice)")


def load_ledger_config(path: Path) -> LedgerConfig:
    """Read and check ``path``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LedgerConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LedgerConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_ledger_config(raw, base=path.resolve().parent, source=path)
