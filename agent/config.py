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

import dataclasses
import re
import ssl
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from agent.errors import ConfigError

__all__ = ["Config", "load_config", "parse_config", "SERIAL_DEVICES", "DEFAULT_SIM_CONFIG", "DEFAULT_CONFIG",
           "tls_context", "deployment_warnings"]

SERIAL_DEVICES = ("idcard", "printer", "scanner", "coproc")
MODES = ("in_service", "maintenance", "out_of_service")
DEFAULT_SIM_CONFIG = Path(__file__).with_name("data") / "sim.toml"
DEFAULT_CONFIG = Path("/etc/kiosk-agent/agent.toml")      # what the service runs with

# MQTT topic levels and client ids: no wildcards, no separators (CVE-2017-7650).
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class KioskConfig:
    id: str
    fleet: str
    site: str
    mode: str = "production"          # production | development
    initial_service_mode: str = "in_service"


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    url: str
    host: str
    port: int
    tls_enabled: bool
    keepalive: int = 60
    client_id: str = ""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 120.0
    max_inflight: int = 50
    tls: TlsConfig = TlsConfig()


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    dir: Path
    outbox_max_mb: int = 256
    min_free_mb: int = 100
    journal_keep_days: int = 90      # acknowledged records older than this are pruned; 0 keeps all


@dataclasses.dataclass(frozen=True)
class KeysConfig:
    signing_key: Path | None = None


@dataclasses.dataclass(frozen=True)
class HalConfig:
    backend: str


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 300.0
    temp_high_c: float = 70.0


@dataclasses.dataclass(frozen=True)
class SerialDeviceConfig:
    enabled: bool = True
    url: str | None = None
    baudrate: int | None = None
    poll_interval_s: float = 2.0


@dataclasses.dataclass(frozen=True)
class CoprocConfig:
    """The RP2040 link and the host watchdog policy it enforces."""

    enabled: bool = True
    url: str | None = None
    baudrate: int = 115200
    poll_interval_s: float = 2.0            # heartbeat period (the link is declared offline after 3)
    watchdog_enabled: bool = True
    watchdog_timeout_s: int = 120           # no heartbeat this long: power-cycle the Pi
    watchdog_grace_s: int = 300             # after a power-up, before the first heartbeat counts
    watchdog_max_per_hour: int = 3
    firmware_public_keys: tuple[bytes, ...] = ()
    temp_high_c: float = 50.0               # enclosure


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    enabled: bool = True
    width: int = 1280
    height: int = 960


@dataclasses.dataclass(frozen=True)
class GpioConfig:
    """BCM pin numbers; ``None`` means the input or output is not fitted."""

    enabled: bool = True
    door: int | None = 17
    tamper: int | None = 27
    presence: int | None = 22
    light_red: int | None = 5
    light_amber: int | None = 6
    light_green: int | None = 13
    buzzer: int | None = 19
    debounce_ms: int = 50
    door_open_high: bool = True
    tamper_open_high: bool = True


@dataclasses.dataclass(frozen=True)
class DevicesConfig:
    idcard: SerialDeviceConfig = SerialDeviceConfig(baudrate=115200, poll_interval_s=1.0)
    printer: SerialDeviceConfig = SerialDeviceConfig(baudrate=9600)
    scanner: SerialDeviceConfig = SerialDeviceConfig(baudrate=115200)
    coproc: CoprocConfig = CoprocConfig()
    camera: CameraConfig = CameraConfig()
    gpio: GpioConfig = GpioConfig()


@dataclasses.dataclass(frozen=True)
class SimConfig:
    tx_per_minute: float = 0.0
    sessions_per_minute: float = 0.0


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclasses.dataclass(frozen=True)
class OperatorKey:
    """A fleet key the kiosk trusts for signed commands and configuration."""

    id: str
    public_key: bytes          # raw 32-byte Ed25519 public key
    role: str                  # operator | admin


@dataclasses.dataclass(frozen=True)
class CommandsConfig:
    operators: tuple[OperatorKey, ...] = ()
    max_clock_skew_s: float = 300.0
    max_size_bytes: int = 262_144     # a firmware-update carries the image (~70 KB of base64)


@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
    recipient_public_key: bytes | None = None   # raw 32-byte X25519 key of the back office
    retention_days: float = 30.0
    ack_public_keys: tuple[bytes, ...] = ()     # raw Ed25519 keys that sign tx/ack (the back office)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    kind: str
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """One entry of the service catalogue."""

    id: str
    name_zh: str
    name_en: str
    steps: tuple[StepConfig, ...]
    offline: bool = False
    mail_document: bool = False
    face_legal_basis: str | None = None   # a recorded legal basis lets the face photo be sealed
    # "purpose": the receipt is what the citizen came for, so the service is not
    # offered while the printer cannot print; "secondary": the service goes on.
    receipt: str | None = None


@dataclasses.dataclass(frozen=True)
class SessionsConfig:
    card_reminder_s: float = 10.0


@dataclasses.dataclass(frozen=True)
class Config:
    kiosk: KioskConfig
    mqtt: MqttConfig
    storage: StorageConfig
    hal: HalConfig
    health: HealthConfig = HealthConfig()
    keys: KeysConfig = KeysConfig()
    devices: DevicesConfig = DevicesConfig()
    sim: SimConfig = SimConfig()
    logging: LoggingConfig = LoggingConfig()
    commands: CommandsConfig = CommandsConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    sessions: SessionsConfig = SessionsConfig()
    services: tuple[ServiceConfig, ...] = ()
    source: Path | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def prefix(self) -> str:
        return f"kiosk/v1/{self.kiosk.fleet}/{self.kiosk.id}/"


# -- field checks --------------------------------------------------------------

Check = Callable[[str, Any], Any]


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
    return _integer(0, 53)(key, value)


def _serial_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(key, value, "a serial URL (/dev/ttyUSB0, socket://host:port, loop://)")
    return value


_KIOSK = {"id": (_string(_NAME, "lower-case letters, digits, '-' or '_', 1 to 64 characters"), True),
          "fleet": (_string(_NAME, "lower-case letters, digits, '-' or '_', 1 to 64 characters"), True),
          "site": (_string(), True),
          "mode": (_choice("production", "development"), False),
          "initial_service_mode": (_choice(*MODES), False)}
_TLS = {"ca_file": (_path, False), "cert_file": (_path, False), "key_file": (_path, False)}
_MQTT = {"url": (_string(), True), "keepalive": (_integer(5, 3600), False),
         "client_id": (_string(_NAME, "lower-case letters, digits, '-' or '_'"), False),
         "reconnect_min_s": (_number(0.1, 60), False), "reconnect_max_s": (_number(1, 3600), False),
         "max_inflight": (_integer(20, 100), False)}
_STORAGE = {"dir": (_path, True), "outbox_max_mb": (_integer(1, 100_000), False),
            "min_free_mb": (_integer(0, 100_000_000), False), "journal_keep_days": (_integer(0, 36_500), False)}
_KEYS = {"signing_key": (_path, False)}
_HAL = {"backend": (_choice("real", "sim"), True)}
_HEALTH = {"interval_s": (_number(5, 86_400), False), "temp_high_c": (_number(20, 120), False)}
_SERIAL = {"enabled": (_boolean, False), "url": (_serial_url, False),
           "baudrate": (_integer(1200, 4_000_000), False), "poll_interval_s": (_number(0.2, 600), False)}
_COPROC = {**_SERIAL, "watchdog_enabled": (_boolean, False), "watchdog_timeout_s": (_integer(10, 86_400), False),
           "watchdog_grace_s": (_integer(0, 86_400), False), "watchdog_max_per_hour": (_integer(0, 60), False),
           "firmware_public_keys": (lambda k, v: _key_list(k, v, "Ed25519"), False),
           "temp_high_c": (_number(0, 120), False)}


def _list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, value, "an array")
    return value


_CAMERA = {"enabled": (_boolean, False), "width": (_integer(64, 8192), False),
           "height": (_integer(64, 8192), False)}
_GPIO: dict[str, tuple[Check, bool]] = {
    "enabled": (_boolean, False), "debounce_ms": (_integer(0, 5000), False),
    "door_open_high": (_boolean, False), "tamper_open_high": (_boolean, False),
    **{name: (_pin, False) for name in ("door", "tamper", "presence", "light_red", "light_amber",
                                         "light_green", "buzzer")}}
_SIM = {"tx_per_minute": (_number(0, 60_000), False), "sessions_per_minute": (_number(0, 600), False)}
_LOGGING = {"level": (_choice("DEBUG", "INFO", "WARNING", "ERROR"), False)}


def _table(raw: Any, key: str, spec: Mapping[str, tuple[Check, bool]]) -> dict[str, Any]:
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


def _mqtt(raw: Any, kiosk_id: str, base: Path) -> MqttConfig:
    raw_dict = raw if isinstance(raw, dict) else {}
    tls_raw = raw_dict.get("tls") if isinstance(raw_dict, dict) else None
    fields = _table({k: v for k, v in raw_dict.items() if k != "tls"} if isinstance(raw, dict) else raw,
                    "mqtt", _MQTT)
    tls = TlsConfig(**{name: base / path for name, path in _table(tls_raw, "mqtt.tls", _TLS).items()})
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
    if fields.get("reconnect_max_s", 120.0) < fields.get("reconnect_min_s", 1.0):
        raise ConfigError("mqtt.reconnect_max_s", fields["reconnect_max_s"], "at least mqtt.reconnect_min_s")
    fields.setdefault("client_id", kiosk_id)
    return MqttConfig(host=parts.hostname, port=port, tls_enabled=tls_enabled, tls=tls, **fields)


_DEVICE_DEFAULTS = {"idcard": (115200, 1.0), "printer": (9600, 2.0), "scanner": (115200, 2.0)}


def _devices(raw: Any) -> DevicesConfig:
    tables = _table(raw, "devices", {name: (lambda _k, v: v, False)
                                     for name in (*SERIAL_DEVICES, "camera", "gpio")})
    kwargs: dict[str, Any] = {}
    for name, (baudrate, poll) in _DEVICE_DEFAULTS.items():
        fields = _table(tables.get(name), f"devices.{name}", _SERIAL)
        fields.setdefault("baudrate", baudrate)
        fields.setdefault("poll_interval_s", poll)
        kwargs[name] = SerialDeviceConfig(**fields)
    kwargs["coproc"] = CoprocConfig(**_table(tables.get("coproc"), "devices.coproc", _COPROC))
    kwargs["camera"] = CameraConfig(**_table(tables.get("camera"), "devices.camera", _CAMERA))
    kwargs["gpio"] = GpioConfig(**_table(tables.get("gpio"), "devices.gpio", _GPIO))
    return DevicesConfig(**kwargs)


STEP_KINDS = ("read_id", "capture_photo", "confirm", "print_receipt", "scan_payment", "capture_address")
RECEIPT_ROLES = ("purpose", "secondary")
_SERVICE = {"id": (_string(_NAME, "lower-case letters, digits, '-' or '_'"), True),
            "name_zh": (_string(), True), "name_en": (_string(), True),
            "steps": (lambda _k, v: v, True), "offline": (_boolean, False),
            "mail_document": (_boolean, False), "face_legal_basis": (_string(), False),
            "receipt": (_choice(*RECEIPT_ROLES), False)}
_STEP = {"kind": (_choice(*STEP_KINDS), True), "timeout_s": (_number(1, 3600), True)}
_OPERATOR = {"id": (_string(_NAME, "lower-case letters, digits, '-' or '_'"), True),
             "public_key": (lambda k, v: _key32(k, v, "Ed25519"), True),
             "role": (_choice("operator", "admin"), True)}
_COMMANDS = {"operators": (lambda _k, v: v, False), "max_clock_skew_s": (_number(0, 86_400), False),
             "max_size_bytes": (_integer(256, 1_048_576), False)}
_EVIDENCE = {"recipient_public_key": (lambda k, v: _key32(k, v, "X25519"), False),
             "retention_days": (_number(0.01, 3650), False),
             "ack_public_keys": (lambda k, v: _key_list(k, v, "Ed25519"), False)}
_SESSIONS = {"card_reminder_s": (_number(1, 600), False)}


def _key32(key: str, value: Any, kind: str) -> bytes:
    import base64
    import binascii

    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(key, value, f"a base64 raw 32-byte {kind} public key")
    return raw


def _key_list(key: str, value: Any, kind: str) -> tuple[bytes, ...]:
    return tuple(_key32(f"{key}[{i}]", item, kind) for i, item in enumerate(_list(key, value)))


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
        fields = _table(entry, f"services[{i}]", _SERVICE)
        steps_raw = fields.pop("steps")
        if not isinstance(steps_raw, list) or not steps_raw:
            raise ConfigError(f"services[{i}].steps", steps_raw, "a non-empty array of {kind, timeout_s} tables")
        steps = tuple(StepConfig(**_table(step, f"services[{i}].steps[{j}]", _STEP))
                      for j, step in enumerate(steps_raw))
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
    fields = _table(raw, "commands", _COMMANDS)
    operators = []
    for i, entry in enumerate(_array_of_tables(fields.pop("operators", None), "commands.operators")):
        operators.append(OperatorKey(**_table(entry, f"commands.operators[{i}]", _OPERATOR)))
    ids = [op.id for op in operators]
    if len(ids) != len(set(ids)):
        raise ConfigError("commands.operators", ids, "unique key ids")
    return CommandsConfig(operators=tuple(operators), **fields)


_TOP = ("kiosk", "mqtt", "storage", "hal", "health", "keys", "devices", "sim", "logging",
        "commands", "evidence", "sessions", "services")


def parse_config(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first bad key."""
    for name, value in data.items():
        if name not in _TOP:
            raise ConfigError(name, value, "one of " + ", ".join(_TOP), problem="unknown table")
    for name in ("kiosk", "mqtt", "storage", "hal"):
        if name not in data:
            raise ConfigError(name, None, f"a [{name}] table", problem="required table missing")
    kiosk = KioskConfig(**_table(data["kiosk"], "kiosk", _KIOSK))
    storage = _table(data["storage"], "storage", _STORAGE)
    base = source.parent if source else Path.cwd()
    storage["dir"] = (base / storage["dir"]).resolve()
    return Config(
        kiosk=kiosk,
        mqtt=_mqtt(data["mqtt"], kiosk.id, base),
        storage=StorageConfig(**storage),
        hal=HalConfig(**_table(data["hal"], "hal", _HAL)),
        health=HealthConfig(**_table(data.get("health"), "health", _HEALTH)),
        keys=KeysConfig(**_table(data.get("keys"), "keys", _KEYS)),
        devices=_devices(data.get("devices")),
        sim=SimConfig(**_table(data.get("sim"), "sim", _SIM)),
        logging=LoggingConfig(**_table(data.get("logging"), "logging", _LOGGING)),
        commands=_commands(data.get("commands")),
        evidence=EvidenceConfig(**_table(data.get("evidence"), "evidence", _EVIDENCE)),
        sessions=SessionsConfig(**_table(data.get("sessions"), "sessions", _SESSIONS)),
        services=_services(data.get("services")),
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
