# SPDX-License-Identifier: Apache-2.0
"""Configuration: one TOML file, loaded once into typed, validated objects.

Every error names the key, the value and what was expected, so an installer
reading one line of the journal knows what to fix:

    $ kiosk-agent check-config agent.toml
    agent.toml: mqtt.keepalive: got 'abc', expected an integer from 5 to 3600

    cfg = load_config(Path("/etc/kiosk-agent/agent.toml"))
    cfg.mqtt.host, cfg.mqtt.port        # ("broker.example", 8883)

Unknown keys are errors too: a misspelt ``keepalvie`` silently ignored is a
kiosk that behaves unlike its file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_SIM_CONFIG",
    "SERIAL_DEVICES",
    "Config",
    "LocalApiConfig",
    "deployment_warnings",
    "load_config",
    "parse_config",
    "tls_context",
]

SERIAL_DEVICES = ("idcard", "printer", "scanner", "coproc")
MODES = ("in_service", "maintenance", "out_of_service")
STEP_KINDS = ("read_id", "capture_photo", "confirm", "print_receipt", "scan_payment", "capture_address")
RECEIPT_ROLES = ("purpose", "secondary")
DEFAULT_SIM_CONFIG = Path(__file__).with_name("data") / "sim.toml"
DEFAULT_CONFIG = Path("/etc/kiosk-agent/agent.toml")      # what the service runs with

# MQTT topic levels and client ids: no wildcards, no separators (CVE-2017-7650).
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# -- field checks --------------------------------------------------------------
# A check turns one TOML value into the field's Python value or raises
# ConfigError naming the key, the value and what was expected. Each dataclass
# field below carries its check in ``metadata`` (see ``toml``), next to its
# type and default, so the validator has nothing of its own to keep in step.

Check = Callable[[str, Any], Any]


def toml(check: Check) -> Mapping[str, Check]:
    """Field metadata: the key is read from the TOML file through ``check``."""
    return {"toml": check}


def _string(pattern: re.Pattern[str] | None = None, what: str = "a non-empty string") -> Check:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or (pattern and not pattern.match(value)):
            raise ConfigError(key, value, what)
        return value
    return check


def _choice(*choices: str) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(key, value, "one of " + ", ".join(repr(c) for c in choices))
        return str(value)
    return check


def _integer(low: int, high: int) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(key, value, f"an integer from {low} to {high}")
        return value
    return check


def _number(low: float, high: float) -> Check:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(key, value, f"a number from {low:g} to {high:g}")
        return float(value)
    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def _path(key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a file system path")
    return Path(value)


def _pin(key: str, value: Any) -> int | None:
    if value is False or value == "none":
        return None
    return int(_integer(0, 53)(key, value))


def _serial_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(key, value, "a serial URL (/dev/ttyUSB0, socket://host:port, loop://)")
    return value


def _list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, value, "an array")
    return value


def _key32(kind: str) -> Check:
    def check(key: str, value: Any) -> bytes:
        try:
            raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(key, value, f"a base64 raw 32-byte {kind} public key")
        return raw
    return check


def _key_list(kind: str) -> Check:
    def check(key: str, value: Any) -> tuple[bytes, ...]:
        return tuple(_key32(kind)(f"{key}[{i}]", item) for i, item in enumerate(_list(key, value)))
    return check


def _nested(_key: str, value: Any) -> Any:
    """A table or array of tables, validated by its own reader below."""
    return value


_ID = _string(_NAME, "lower-case letters, digits, '-' or '_'")
_TOPIC_LEVEL = _string(_NAME, "lower-case letters, digits, '-' or '_', 1 to 64 characters")
_BAUDRATE = _integer(1200, 4_000_000)
_POLL_INTERVAL = _number(0.2, 600)


# -- the configuration: each field's type, default and check in one place ------

@dataclasses.dataclass(frozen=True)
class KioskConfig:
    id: str = field(metadata=toml(_TOPIC_LEVEL))
    fleet: str = field(metadata=toml(_TOPIC_LEVEL))
    site: str = field(metadata=toml(_string()))
    mode: str = field(default="production", metadata=toml(_choice("production", "development")))
    initial_service_mode: str = field(default="in_service", metadata=toml(_choice(*MODES)))


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = field(default=None, metadata=toml(_path))
    cert_file: Path | None = field(default=None, metadata=toml(_path))
    key_file: Path | None = field(default=None, metadata=toml(_path))


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    url: str = field(metadata=toml(_string()))
    host: str                       # host, port and tls_enabled are read from url
    port: int
    tls_enabled: bool
    keepalive: int = field(default=60, metadata=toml(_integer(5, 3600)))
    client_id: str = field(default="", metadata=toml(_ID))      # "" in code; the kiosk id when read from a file
    reconnect_min_s: float = field(default=1.0, metadata=toml(_number(0.1, 60)))
    reconnect_max_s: float = field(default=120.0, metadata=toml(_number(1, 3600)))
    max_inflight: int = field(default=50, metadata=toml(_integer(20, 100)))
    tls: TlsConfig = TlsConfig()    # [mqtt.tls], read by _mqtt


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    dir: Path = field(metadata=toml(_path))
    outbox_max_mb: int = field(default=256, metadata=toml(_integer(1, 100_000)))
    min_free_mb: int = field(default=100, metadata=toml(_integer(0, 100_000_000)))
    # acknowledged records older than this are pruned; 0 keeps all
    journal_keep_days: int = field(default=90, metadata=toml(_integer(0, 36_500)))


@dataclasses.dataclass(frozen=True)
class KeysConfig:
    signing_key: Path | None = field(default=None, metadata=toml(_path))


@dataclasses.dataclass(frozen=True)
class HalConfig:
    backend: str = field(metadata=toml(_choice("real", "sim")))


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    interval_s: float = field(default=300.0, metadata=toml(_number(5, 86_400)))
    temp_high_c: float = field(default=70.0, metadata=toml(_number(20, 120)))


@dataclasses.dataclass(frozen=True)
class SerialDeviceConfig:
    enabled: bool = field(default=True, metadata=toml(_boolean))
    url: str | None = field(default=None, metadata=toml(_serial_url))
    baudrate: int | None = field(default=None, metadata=toml(_BAUDRATE))   # per device: see DevicesConfig
    poll_interval_s: float = field(default=2.0, metadata=toml(_POLL_INTERVAL))


@dataclasses.dataclass(frozen=True)
class CoprocConfig:
    """The RP2040 link and the host watchdog policy it enforces."""

    enabled: bool = field(default=True, metadata=toml(_boolean))
    url: str | None = field(default=None, metadata=toml(_serial_url))
    baudrate: int = field(default=115200, metadata=toml(_BAUDRATE))
    # heartbeat period (the link is declared offline after 3)
    poll_interval_s: float = field(default=2.0, metadata=toml(_POLL_INTERVAL))
    watchdog_enabled: bool = field(default=True, metadata=toml(_boolean))
    # no heartbeat this long: power-cycle the Pi
    watchdog_timeout_s: int = field(default=120, metadata=toml(_integer(10, 86_400)))
    # after a power-up, before the first heartbeat counts
    watchdog_grace_s: int = field(default=300, metadata=toml(_integer(0, 86_400)))
    watchdog_max_per_hour: int = field(default=3, metadata=toml(_integer(0, 60)))
    firmware_public_keys: tuple[bytes, ...] = field(default=(), metadata=toml(_key_list("Ed25519")))
    temp_high_c: float = field(default=50.0, metadata=toml(_number(0, 120)))     # enclosure


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    enabled: bool = field(default=True, metadata=toml(_boolean))
    width: int = field(default=1280, metadata=toml(_integer(64, 8192)))
    height: int = field(default=960, metadata=toml(_integer(64, 8192)))


@dataclasses.dataclass(frozen=True)
class GpioConfig:
    """BCM pin numbers; ``None`` means the input or output is not fitted."""

    enabled: bool = field(default=True, metadata=toml(_boolean))
    door: int | None = field(default=17, metadata=toml(_pin))
    tamper: int | None = field(default=27, metadata=toml(_pin))
    presence: int | None = field(default=22, metadata=toml(_pin))
    light_red: int | None = field(default=5, metadata=toml(_pin))
    light_amber: int | None = field(default=6, metadata=toml(_pin))
    light_green: int | None = field(default=13, metadata=toml(_pin))
    buzzer: int | None = field(default=19, metadata=toml(_pin))
    debounce_ms: int = field(default=50, metadata=toml(_integer(0, 5000)))
    door_open_high: bool = field(default=True, metadata=toml(_boolean))
    tamper_open_high: bool = field(default=True, metadata=toml(_boolean))


@dataclasses.dataclass(frozen=True)
class DevicesConfig:
    """Each table's default is the device's defaults: a file's keys are laid over it."""

    idcard: SerialDeviceConfig = field(default=SerialDeviceConfig(baudrate=115200, poll_interval_s=1.0),
                                       metadata=toml(_nested))
    printer: SerialDeviceConfig = field(default=SerialDeviceConfig(baudrate=9600), metadata=toml(_nested))
    scanner: SerialDeviceConfig = field(default=SerialDeviceConfig(baudrate=115200), metadata=toml(_nested))
    coproc: CoprocConfig = field(default=CoprocConfig(), metadata=toml(_nested))
    camera: CameraConfig = field(default=CameraConfig(), metadata=toml(_nested))
    gpio: GpioConfig = field(default=GpioConfig(), metadata=toml(_nested))


@dataclasses.dataclass(frozen=True)
class SimConfig:
    tx_per_minute: float = field(default=0.0, metadata=toml(_number(0, 60_000)))
    sessions_per_minute: float = field(default=0.0, metadata=toml(_number(0, 600)))


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = field(default="INFO", metadata=toml(_choice("DEBUG", "INFO", "WARNING", "ERROR")))


@dataclasses.dataclass(frozen=True)
class OperatorKey:
    """A fleet key the kiosk trusts for signed commands and configuration."""

    id: str = field(metadata=toml(_ID))
    public_key: bytes = field(metadata=toml(_key32("Ed25519")))    # raw 32-byte Ed25519 public key
    # backoffice: the ledger's key, allowed tx-resend only (agent.wire.signing.ROLE_COMMANDS)
    role: str = field(metadata=toml(_choice("operator", "admin", "backoffice")))


@dataclasses.dataclass(frozen=True)
class CommandsConfig:
    operators: tuple[OperatorKey, ...] = field(default=(), metadata=toml(_nested))   # [[commands.operators]]
    max_clock_skew_s: float = field(default=300.0, metadata=toml(_number(0, 86_400)))
    # a firmware-update carries the image (~70 KB of base64)
    max_size_bytes: int = field(default=262_144, metadata=toml(_integer(256, 1_048_576)))


@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
    # raw 32-byte X25519 key of the back office
    recipient_public_key: bytes | None = field(default=None, metadata=toml(_key32("X25519")))
    retention_days: float = field(default=30.0, metadata=toml(_number(0.01, 3650)))
    # raw Ed25519 keys that sign tx/ack (the back office)
    ack_public_keys: tuple[bytes, ...] = field(default=(), metadata=toml(_key_list("Ed25519")))


@dataclasses.dataclass(frozen=True)
class StepConfig:
    kind: str = field(metadata=toml(_choice(*STEP_KINDS)))
    timeout_s: float = field(metadata=toml(_number(1, 3600)))


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """One entry of the service catalogue."""

    id: str = field(metadata=toml(_ID))
    name_zh: str = field(metadata=toml(_string()))
    name_en: str = field(metadata=toml(_string()))
    steps: tuple[StepConfig, ...] = field(metadata=toml(_nested))       # [[services.steps]]
    offline: bool = field(default=False, metadata=toml(_boolean))
    mail_document: bool = field(default=False, metadata=toml(_boolean))
    # a recorded legal basis lets the face photo be sealed
    face_legal_basis: str | None = field(default=None, metadata=toml(_string()))
    # "purpose": the receipt is what the citizen came for, so the service is not
    # offered while the printer cannot print; "secondary": the service goes on.
    receipt: str | None = field(default=None, metadata=toml(_choice(*RECEIPT_ROLES)))


@dataclasses.dataclass(frozen=True)
class SessionsConfig:
    card_reminder_s: float = field(default=10.0, metadata=toml(_number(1, 600)))
    # "more time" presses per step, each adding the step's own timeout (elder-friendly: never a
    # countdown without a way to stretch it)
    more_time_limit: int = field(default=2, metadata=toml(_integer(0, 10)))
    # retakes of the face photo after the first capture
    photo_retakes: int = field(default=3, metadata=toml(_integer(0, 10)))
    # the language a session starts in when the screen names none (receipt, record)
    language: str = field(default="zh", metadata=toml(_choice("zh", "en")))


@dataclasses.dataclass(frozen=True)
class LocalApiConfig:
    """The kiosk screen's WebSocket API on 127.0.0.1 (agent.localapi; docs/local-api.yaml)."""

    enabled: bool = field(default=True, metadata=toml(_boolean))
    port: int = field(default=5846, metadata=toml(_integer(1024, 65535)))     # XFS4IoT's range starts here
    # a fresh token at every start, mode 0640; relative to the config file; unset: <storage.dir>/local-api.token
    token_file: Path | None = field(default=None, metadata=toml(_path))
    # the kiosk browser's group, given read access to the token file when it exists
    ui_group: str = field(default="kiosk-ui", metadata=toml(_string()))
    # bigger messages get an acknowledge "invalidMessage"; over 2 MiB the socket closes (1009)
    max_message_bytes: int = field(default=65_536, metadata=toml(_integer(1024, 1_048_576)))
    # commands of one connection acknowledged and not yet completed; beyond: "tooManyRequests"
    max_in_flight: int = field(default=16, metadata=toml(_integer(1, 1000)))


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole file; each ``toml`` field is a top-level table, required when it has no default."""

    kiosk: KioskConfig = field(metadata=toml(_nested))
    mqtt: MqttConfig = field(metadata=toml(_nested))
    storage: StorageConfig = field(metadata=toml(_nested))
    hal: HalConfig = field(metadata=toml(_nested))
    health: HealthConfig = field(default=HealthConfig(), metadata=toml(_nested))
    keys: KeysConfig = field(default=KeysConfig(), metadata=toml(_nested))
    devices: DevicesConfig = field(default=DevicesConfig(), metadata=toml(_nested))
    sim: SimConfig = field(default=SimConfig(), metadata=toml(_nested))
    logging: LoggingConfig = field(default=LoggingConfig(), metadata=toml(_nested))
    commands: CommandsConfig = field(default=CommandsConfig(), metadata=toml(_nested))
    evidence: EvidenceConfig = field(default=EvidenceConfig(), metadata=toml(_nested))
    sessions: SessionsConfig = field(default=SessionsConfig(), metadata=toml(_nested))
    services: tuple[ServiceConfig, ...] = field(default=(), metadata=toml(_nested))   # [[services]]
    local_api: LocalApiConfig = field(default=LocalApiConfig(), metadata=toml(_nested))
    source: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def prefix(self) -> str:
        return f"kiosk/v1/{self.kiosk.fleet}/{self.kiosk.id}/"


# -- the validator: reads the declarations above ---------------------------------

def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@functools.cache
def _keys(cls: type) -> dict[str, tuple[Check, bool]]:
    """``cls``'s TOML keys in declaration order: name -> (check, required)."""
    return {f.name: (f.metadata["toml"], _required(f)) for f in dataclasses.fields(cls) if "toml" in f.metadata}


def _table(raw: Any, key: str, cls: type) -> dict[str, Any]:
    """Check the TOML table ``raw`` (at ``key``) against ``cls``'s declared keys; the values by name."""
    spec = _keys(cls)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(key, raw, "a table")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in spec:
            raise ConfigError(f"{key}.{name}", value, "one of " + ", ".join(sorted(spec)),
                              problem="unknown key")
        out[name] = spec[name][0](f"{key}.{name}", value)
    for name, (_, required) in spec.items():
        if required and name not in out:
            raise ConfigError(f"{key}.{name}", None, "it to be set", problem="required key missing")
    return out


_T = TypeVar("_T")


def _read(raw: Any, key: str, cls: type[_T]) -> _T:
    return cls(**_table(raw, key, cls))


def _mqtt(raw: Any, kiosk_id: str, base: Path) -> MqttConfig:
    raw_dict = raw if isinstance(raw, dict) else {}
    tls_raw = raw_dict.get("tls") if isinstance(raw_dict, dict) else None
    fields = _table({k: v for k, v in raw_dict.items() if k != "tls"} if isinstance(raw, dict) else raw,
                    "mqtt", MqttConfig)
    tls = TlsConfig(**{name: base / path for name, path in _table(tls_raw, "mqtt.tls", TlsConfig).items()})
    url = fields["url"]
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") \
            or parts.username or parts.password:
        raise ConfigError("mqtt.url", url, "mqtt://host:port or mqtts://host:port (no credentials)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError("mqtt.url", url, "a port from 1 to 65535") from None
    tls_enabled = parts.scheme == "mqtts"
    if tls_enabled and bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("mqtt.tls.key_file" if tls.cert_file else "mqtt.tls.cert_file", None,
                          "cert_file and key_file to be set together")
    fields.setdefault("client_id", kiosk_id)
    mqtt = MqttConfig(host=parts.hostname, port=port, tls_enabled=tls_enabled, tls=tls, **fields)
    if mqtt.reconnect_max_s < mqtt.reconnect_min_s:
        raise ConfigError("mqtt.reconnect_max_s", mqtt.reconnect_max_s, "at least mqtt.reconnect_min_s")
    return mqtt


def _devices(raw: Any) -> DevicesConfig:
    tables = _table(raw, "devices", DevicesConfig)
    kwargs: dict[str, Any] = {}
    for name, defaults in vars(DevicesConfig()).items():
        kwargs[name] = dataclasses.replace(defaults, **_table(tables.get(name), f"devices.{name}", type(defaults)))
    return DevicesConfig(**kwargs)


def _array_of_tables(raw: Any, key: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(key, raw, "an array of tables ([[" + key + "]])")
    return raw


def _services(raw: Any) -> tuple[ServiceConfig, ...]:
    services = []
    seen: set[str] = set()
    for i, entry in enumerate(_array_of_tables(raw, "services")):
        fields = _table(entry, f"services[{i}]", ServiceConfig)
        steps_raw = fields.pop("steps")
        if not isinstance(steps_raw, list) or not steps_raw:
            raise ConfigError(f"services[{i}].steps", steps_raw, "a non-empty array of {kind, timeout_s} tables")
        steps = tuple(_read(step, f"services[{i}].steps[{j}]", StepConfig) for j, step in enumerate(steps_raw))
        if fields["id"] in seen:
            raise ConfigError(f"services[{i}].id", fields["id"], "an id not used by another service")
        seen.add(fields["id"])
        prints = any(step.kind == "print_receipt" for step in steps)
        if fields.get("receipt") is not None and not prints:
            raise ConfigError(f"services[{i}].receipt", fields["receipt"], "no receipt key: the service has no "
                              "print_receipt step")
        if prints:
            fields.setdefault("receipt", "secondary")
        services.append(ServiceConfig(steps=steps, **fields))
    return tuple(services)


def _commands(raw: Any) -> CommandsConfig:
    fields = _table(raw, "commands", CommandsConfig)
    operators = [_read(entry, f"commands.operators[{i}]", OperatorKey)
                 for i, entry in enumerate(_array_of_tables(fields.pop("operators", None), "commands.operators"))]
    ids = [op.id for op in operators]
    if len(ids) != len(set(ids)):
        raise ConfigError("commands.operators", ids, "unique key ids")
    return CommandsConfig(operators=tuple(operators), **fields)


def _local_api(raw: Any, base: Path) -> LocalApiConfig:
    fields = _table(raw, "local_api", LocalApiConfig)
    if "token_file" in fields:
        fields["token_file"] = base / fields["token_file"]
    return LocalApiConfig(**fields)


def parse_config(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first bad key."""
    tables = _keys(Config)
    for name, value in data.items():
        if name not in tables:
            raise ConfigError(name, value, "one of " + ", ".join(tables), problem="unknown table")
    for name, (_, required) in tables.items():
        if required and name not in data:
            raise ConfigError(name, None, f"a [{name}] table", problem="required table missing")
    kiosk = _read(data["kiosk"], "kiosk", KioskConfig)
    storage = _table(data["storage"], "storage", StorageConfig)
    base = source.parent if source else Path.cwd()
    storage["dir"] = (base / storage["dir"]).resolve()
    return Config(
        kiosk=kiosk,
        mqtt=_mqtt(data["mqtt"], kiosk.id, base),
        storage=StorageConfig(**storage),
        hal=_read(data["hal"], "hal", HalConfig),
        health=_read(data.get("health"), "health", HealthConfig),
        keys=_read(data.get("keys"), "keys", KeysConfig),
        devices=_devices(data.get("devices")),
        sim=_read(data.get("sim"), "sim", SimConfig),
        logging=_read(data.get("logging"), "logging", LoggingConfig),
        commands=_commands(data.get("commands")),
        evidence=_read(data.get("evidence"), "evidence", EvidenceConfig),
        sessions=_read(data.get("sessions"), "sessions", SessionsConfig),
        services=_services(data.get("services")),
        local_api=_local_api(data.get("local_api"), base),
        source=source,
        raw=data,
    )


def _cannot(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def tls_context(mqtt: MqttConfig) -> ssl.SSLContext:
    """The client TLS context for ``mqtt``; ConfigError naming the key and the file that cannot be loaded.

    Used by the uplink at every connect and by ``check-config``, so both
    read the files the same way.
    """
    tls = mqtt.tls
    for key, path in (("mqtt.tls.ca_file", tls.ca_file), ("mqtt.tls.cert_file", tls.cert_file),
                      ("mqtt.tls.key_file", tls.key_file)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(key, str(path), "a readable PEM file",
                                  problem=f"cannot read {path} ({_cannot(exc)})") from exc
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("mqtt.tls.ca_file", str(tls.ca_file), "a PEM file of CA certificates",
                          problem=f"cannot load {tls.ca_file} ({_cannot(exc)})") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file and tls.key_file:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("mqtt.tls.cert_file", str(tls.cert_file),
                              "a PEM certificate and the unencrypted PEM key that matches it",
                              problem=f"cannot load {tls.cert_file} with {tls.key_file} ({_cannot(exc)})") from exc
    return ctx


def deployment_warnings(cfg: Config) -> list[str]:
    """What is valid but unsafe on a production kiosk, one line each, naming the key."""
    if cfg.kiosk.mode != "production":
        return []
    if not cfg.mqtt.tls_enabled:
        return [("mqtt.url: plain mqtt:// on a production kiosk; the link is neither encrypted nor "
                 "authenticated (use mqtts:// with a client certificate)")]
    if cfg.mqtt.tls.cert_file is None:
        return [("mqtt.tls.cert_file: not set on a production kiosk; without a client certificate the "
                 "broker cannot tell this kiosk from another (mutual TLS)")]
    return []


def load_config(path: Path) -> Config:
    """Read and validate ``path``. Raises ConfigError (key ``<file>`` if unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"a readable UTF-8 file ({exc.__class__.__name__}: {exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"valid TOML ({exc})") from exc
    return parse_config(data, source=path.resolve())
