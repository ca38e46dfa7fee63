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
           "MetricsConfig", "DashboardConfig", "HistoryConfig", "load_ledger_config", "parse_ledger_config"]

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
    # Child processes checking signatures and form (fleet/ledger/checkproc.py): the checks are ~3/4 of a
    # worker's CPU per record and get a core of their own; 0 = in the worker's own thread.
    check_processes: int = 1
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
class HistoryConfig:
    """The kiosks' state, health, alarms and command results kept for the dashboard (fleet/ledger/history.py)."""

    enabled: bool = True            # every worker keeps history too ($share/{share_group}-history/...)
    retention_days: int = 90        # state, health and command history, and closed alarm episodes, older: deleted
    prune_interval_s: float = 3600.0  # how often one worker (an advisory lock) deletes what is past retention
    prune_batch: int = 5000         # rows per DELETE: a prune never holds a long transaction
    batch_max: int = 500            # messages per PostgreSQL transaction, at most
    batch_ms: int = 20              # a batch waits for more messages this long after its first, at most
    snapshot_quiet_ms: int = 2000   # the retained snapshot after a (re)connect ends when none came for this long


@dataclasses.dataclass(frozen=True)
class DashboardConfig:
    """``kiosk-ledger dashboard`` (fleet/dashboard/, docs/dashboard-api.md)."""

    listen: str = "127.0.0.1:8080"  # host:port; put a TLS reverse proxy in front of anything but loopback
    timezone: str = "Asia/Shanghai"  # IANA zone: shown times, "today" and report days
    default_language: str = "zh"    # zh | en, when neither ?lang, the kd_lang cookie nor Accept-Language says
    secure_cookies: bool = True     # false only for plain HTTP on a developer's loopback
    session_idle_s: int = 8 * 3600
    session_max_s: int = 24 * 3600
    kioskctl_broker: str = ""       # --broker of the kioskctl lines the kiosk page shows; empty: mqtt.url
    kioskctl_key: str = "~/.kioskctl/operator.key"   # --key of those lines: where operators keep their own key
    db_connections: int = 4         # PostgreSQL connections of the API (plus one that LISTENs)
    tx_today_refresh_s: float = 30.0  # how old the fleet page's "transactions today" counts may be
    sse_keepalive_s: float = 15.0   # a comment on every idle event stream (proxies close silent ones)
    # The address browsers use (https://dash.example), behind a proxy that rewrites Host: a POST's Origin must
    # be this. Empty: the request's own Host.
    public_url: str = ""


@dataclasses.dataclass(frozen=True)
class LedgerConfig:
    database: DatabaseConfig = DatabaseConfig()
    mqtt: MqttConfig = MqttConfig()
    ledger: IngestConfig = IngestConfig()
    acks: AcksConfig = AcksConfig()
    gaps: GapsConfig = GapsConfig()
    metrics: MetricsConfig = MetricsConfig()
    history: HistoryConfig = HistoryConfig()
    dashboard: DashboardConfig = DashboardConfig()
    source: Path | None = None


_BOUNDS: dict[str, tuple[float, float]] = {
    "mqtt.session_expiry_s": (0, 2**32 - 1), "mqtt.keepalive": (5, 3600),
    "ledger.batch_max": (1, 10_000), "ledger.batch_ms": (0, 10_000), "ledger.evidence_grace_s": (0, 30 * 86_400),
    "ledger.check_processes": (0, 16),
    "acks.interval_ms": (10, 600_000), "acks.max_ids": (1, 10_000), "gaps.reorder_window_s": (0, 86_400),
    "gaps.check_interval_s": (0.1, 3600), "gaps.retry_s": (1, 86_400),
    "history.retention_days": (1, 3650), "history.prune_interval_s": (0.1, 86_400),
    "history.prune_batch": (1, 1_000_000), "history.batch_max": (1, 10_000), "history.batch_ms": (0, 10_000),
    "history.snapshot_quiet_ms": (50, 600_000),
    "dashboard.session_idle_s": (60, 30 * 86_400), "dashboard.session_max_s": (60, 90 * 86_400),
    "dashboard.db_connections": (1, 64), "dashboard.tx_today_refresh_s": (0, 3600),
    "dashboard.sse_keepalive_s": (0.1, 300),
}
_SECTIONS: dict[str, type[Any]] = {"database": DatabaseConfig, "mqtt": MqttConfig, "ledger": IngestConfig,
                                   "acks": AcksConfig, "gaps": GapsConfig, "metrics": MetricsConfig,
                                   "history": HistoryConfig,
                                   "dashboard": DashboardConfig}


def _value(key: str, field: dataclasses.Field[Any], raw: Any, base: Path) -> Any:
    kind = str(field.type)
    if kind == "bool":
        if not isinstance(raw, bool):
            raise LedgerConfigError(f"{key} = {raw!r}: expected true or false")
        return raw
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


def parse_ledger_config(raw: dict[str, Any], *, base: Path = Path("."), source: Path | None = None,
                        for_dashboard: bool = False) -> LedgerConfig:
    """A checked ``LedgerConfig`` from parsed TOML; LedgerConfigError naming the key otherwise.

    ``for_dashboard``: the dashboard's needs only (no MQTT client id, no ack key: it holds no key).
    """
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
    if for_dashboard:
        _require_dashboard(cfg)
    else:
        _require(cfg)
    return cfg


def _require_dashboard(cfg: LedgerConfig) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    if not cfg.database.dsn:
        raise LedgerConfigError("database.dsn: required (a libpq connection string)")
    if not cfg.ledger.fleet or not _ID.match(cfg.ledger.fleet) or cfg.ledger.fleet in ("+", "#"):
        raise LedgerConfigError(f"ledger.fleet = {cfg.ledger.fleet!r}: required, the fleet the dashboard shows")
    d = cfg.dashboard
    host, _sep, port = d.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LedgerConfigError(f"dashboard.listen = {d.listen!r}: expected host:port, e.g. 127.0.0.1:8080")
    try:
        ZoneInfo(d.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise LedgerConfigError(f"dashboard.timezone = {d.timezone!r}: expected an IANA time zone such as "
                                "Asia/Shanghai") from None
    if d.default_language not in ("zh", "en"):
        raise LedgerConfigError(f"dashboard.default_language = {d.default_language!r}: expected zh or en")
    if d.session_idle_s > d.session_max_s:
        raise LedgerConfigError(f"dashboard.session_idle_s = {d.session_idle_s}: expected at most "
                                f"dashboard.session_max_s ({d.session_max_s})")
    broker = d.kioskctl_broker or cfg.mqtt.url
    if not broker.startswith(("mqtt://", "mqtts://")) or any(c.isspace() or c in "'\"$`\\;&|<>" for c in broker):
        raise LedgerConfigError(f"dashboard.kioskctl_broker = {broker!r}: expected mqtt://host:port or "
                                "mqtts://host:port")
    if d.public_url and not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$", d.public_url):
        raise LedgerConfigError(f"dashboard.public_url = {d.public_url!r}: expected scheme://host[:port], e.g. "
                                "https://dash.example")
    if not d.kioskctl_key or any(c.isspace() or c in "'\"$`\\;&|<>" for c in d.kioskctl_key):
        raise LedgerConfigError(f"dashboard.kioskctl_key = {d.kioskctl_key!r}: expected a path without spaces "
                                "or shell characters")


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


def load_ledger_config(path: Path, *, for_dashboard: bool = False) -> LedgerConfig:
    """Read and check ``path`` (``for_dashboard``: only what ``kiosk-ledger dashboard`` needs)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LedgerConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LedgerConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_ledger_config(raw, base=path.resolve().parent, source=path, for_dashboard=for_dashboard)
