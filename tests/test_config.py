# SPDX-License-Identifier: Apache-2.0
"""Configuration: typed, validated, errors that name the key; exit 78."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import (
    DEFAULT_SIM_CONFIG,
    Config,
    DevicesConfig,
    HealthConfig,
    SessionsConfig,
    StorageConfig,
    load_config,
    parse_config,
)
from agent.errors import ConfigError

MINIMAL = """
[kiosk]
id = "k-0001"
fleet = "north"
site = "Outlet 37"
[mqtt]
url = "mqtt://127.0.0.1:1883"
keepalive = 30
[storage]
dir = "state"
[hal]
backend = "sim"
[health]
interval_s = 60
[devices.idcard]
[devices.printer]
[devices.scanner]
[devices.camera]
[devices.coproc]
[devices.gpio]
"""


def parse(text: str) -> object:
    return parse_config(tomllib.loads(text))


def test_minimal_config_has_every_device_simulated() -> None:
    cfg = parse_config(tomllib.loads(MINIMAL))
    assert cfg.kiosk.id == "k-0001" and cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883
    assert cfg.hal.backend == "sim"
    for name in ("idcard", "printer", "scanner", "coproc"):
        assert getattr(cfg.devices, name).url is None and getattr(cfg.devices, name).enabled
    assert cfg.prefix == "kiosk/v1/north/k-0001/"


def test_shipped_simulation_config_is_valid() -> None:
    cfg = load_config(DEFAULT_SIM_CONFIG)
    assert cfg.hal.backend == "sim"


@pytest.mark.parametrize("change, key, words", [
    (('keepalive = 30', 'keepalive = "abc"'), "mqtt.keepalive", "an integer from 5 to 3600"),
    (('keepalive = 30', 'keepalvie = 30'), "mqtt.keepalvie", "unknown key"),
    (('dir = "state"', 'dir = "state"\njournal_keep_days = -1'), "storage.journal_keep_days", "from 0 to 36500"),
    (('site = "Outlet 37"\n', ''), "kiosk.site", "required key missing"),
    (('backend = "sim"', 'backend = "fake"'), "hal.backend", "'real', 'sim'"),
    (('url = "mqtt://127.0.0.1:1883"', 'url = "http://127.0.0.1:1883"'), "mqtt.url", "mqtt://host:port"),
    (('url = "mqtt://127.0.0.1:1883"', 'url = "mqtt://127.0.0.1:99999"'), "mqtt.url", "port"),
    (('id = "k-0001"', 'id = "k/0001"'), "kiosk.id", "lower-case"),
    (('fleet = "north"', 'fleet = "+"'), "kiosk.fleet", "lower-case"),
    (('interval_s = 60', 'interval_s = true'), "health.interval_s", "a number"),
    (('[devices.printer]', '[devices.printer]\nurl = 5'), "devices.printer.url", "serial URL"),
    (('[devices.printer]', '[devices.printer]\nbaud = 9600'), "devices.printer.baud", "unknown key"),
    (('[devices.gpio]', '[devices.gpio]\ndoor = 99'), "devices.gpio.door", "from 0 to 53"),
    (('[devices.camera]', '[devices.lidar]'), "devices.lidar", "unknown key"),
    (('[health]', '[healthz]'), "healthz", "unknown table"),
])
def test_errors_name_the_key(change: tuple[str, str], key: str, words: str) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.key == key
    assert str(info.value).startswith(key + ":")
    assert words in str(info.value)


def test_relative_storage_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL)
    assert load_config(path).storage.dir == tmp_path / "state"


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kiosk\nid=")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("change, key", [
    (('keepalive = 30', 'keepalive = "abc"'), "mqtt.keepalive"),
    (('keepalive = 30', 'keepalvie = 30'), "mqtt.keepalvie"),
    (('fleet = "north"\n', ''), "kiosk.fleet"),
])
def test_cli_exits_78_with_one_line(tmp_path: Path, command: str, change: tuple[str, str], key: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL.replace(*change))
    args = [path] if command == "check-config" else ["--config", path]
    proc = subprocess.run([sys.executable, "-m", "agent", command, *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and str(path) in lines[0], proc.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL)
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout


def test_real_backend_that_cannot_load_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL.replace('backend = "sim"', 'backend = "real"'))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "hal.backend" in proc.stderr and "RPi.GPIO" in proc.stderr


# -- check-config: the file run uses, TLS files, warnings ---------------------------------

def _check_config(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "check-config", *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=60)


def test_check_config_without_a_file_checks_the_installed_one() -> None:
    """Issue 13 #3: it used to check the bundled simulation config and say OK."""
    proc = _check_config()
    assert "/etc/kiosk-agent/agent.toml" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    assert str(DEFAULT_SIM_CONFIG) not in proc.stdout + proc.stderr


def test_check_config_takes_config_like_the_other_commands(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL)
    proc = _check_config("--config", path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{path}: OK"), (proc.stdout, proc.stderr)


TLS_MINIMAL = MINIMAL.replace('url = "mqtt://127.0.0.1:1883"', 'url = "mqtts://127.0.0.1:8883"')


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from system.mtlskit import Pki
    return Pki(tmp_path_factory.mktemp("pki"))


def _tls_file(tmp_path: Path, pki, ca: str = "", cert: str = "", key: str = "") -> Path:  # type: ignore[no-untyped-def]
    crt, key_path = pki.client("k-0001")
    files = {"ca_file": ca or pki.ca_file, "cert_file": cert or crt, "key_file": key or key_path}
    path = tmp_path / "agent.toml"
    path.write_text(TLS_MINIMAL + "[mqtt.tls]\n" + "".join(f'{k} = "{v}"\n' for k, v in files.items()))
    return path


@pytest.mark.parametrize("broken, key", [("missing_ca", "mqtt.tls.ca_file"), ("garbage_ca", "mqtt.tls.ca_file"),
                                         ("missing_key", "mqtt.tls.key_file"),
                                         ("garbage_cert", "mqtt.tls.cert_file"),
                                         ("key_of_another_cert", "mqtt.tls.cert_file")])
def test_check_config_refuses_tls_files_that_do_not_load(tmp_path: Path, pki, broken: str,  # type: ignore[no-untyped-def]
                                                         key: str) -> None:
    """Issue 12 #8: a wrong ca_file passed check-config, then the uplink died silently."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "nowhere" / "file.pem"
    _other_cert, other_key = pki.client("k-0002")
    change = {"missing_ca": {"ca": missing}, "garbage_ca": {"ca": garbage}, "missing_key": {"key": missing},
              "garbage_cert": {"cert": garbage}, "key_of_another_cert": {"key": other_key}}[broken]
    path = _tls_file(tmp_path, pki, **{k: str(v) for k, v in change.items()})
    proc = _check_config(path)
    assert proc.returncode == 78, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    named = str(change.get("ca") or change.get("cert") or change.get("key"))
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {key}:") and named in lines[0], proc.stderr


def test_check_config_passes_loadable_tls_files_and_relative_paths_follow_the_file(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    path = _tls_file(tmp_path, pki)
    proc = _check_config(path)
    assert proc.returncode == 0 and "OK" in proc.stdout and proc.stderr == "", (proc.stdout, proc.stderr)
    (tmp_path / "ca.pem").write_bytes(pki.ca_file.read_bytes())
    path.write_text(path.read_text().replace(f'ca_file = "{pki.ca_file}"', 'ca_file = "ca.pem"'))
    assert load_config(path).mqtt.tls.ca_file == tmp_path / "ca.pem"
    assert _check_config(path).returncode == 0


@pytest.mark.parametrize("text, warned", [
    (MINIMAL, "mqtt.url: plain mqtt:// on a production kiosk"),
    (TLS_MINIMAL, "mqtt.tls.cert_file: not set on a production kiosk"),
    (MINIMAL.replace('site = "Outlet 37"', 'site = "Outlet 37"\nmode = "development"'), None),
])
def test_check_config_warns_on_an_unprotected_production_link(tmp_path: Path, text: str, warned: str | None) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    proc = _check_config(path)
    assert proc.returncode == 0 and "OK" in proc.stdout, (proc.stdout, proc.stderr)
    if warned is None:
        assert proc.stderr == ""
    else:
        assert proc.stderr.startswith(f"{path}: warning: {warned}"), proc.stderr


# -- configuration defined once (issue 14 #8) ----------------------------------------------

def _declared(cls: type, defaults: object = None, key: str = "") -> Iterator[tuple[str, object, Any]]:
    """(key, default, check) of every TOML key declared under ``cls``, nested tables included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "toml" not in f.metadata:
            continue
        default = f.default if defaults is None else getattr(defaults, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            nested = default if dataclasses.is_dataclass(default) else None
            yield from _declared(hints[f.name], nested, f"{key}{f.name}.")
        else:
            yield key + f.name, default, f.metadata["toml"]


def test_every_scalar_default_passes_the_check_declared_beside_it() -> None:
    """A default outside its own bounds would be a value no file could write."""
    declared = list(_declared(Config))
    keys = [key for key, _, _ in declared]
    assert "mqtt.keepalive" in keys and "devices.gpio.door" in keys and "kiosk.id" in keys, keys
    checked = 0
    for key, default, check in declared:
        if isinstance(default, (bool, int, float, str)) and default != "":
            assert check(key, default) == default, key
            checked += 1
    assert checked >= 40


def test_tables_left_empty_take_the_declared_defaults() -> None:
    """The validator has no defaults of its own: an empty table is the dataclass default."""
    cfg = parse_config(tomllib.loads(MINIMAL.replace("interval_s = 60", "")))
    assert cfg.devices == DevicesConfig()
    assert cfg.devices.idcard.poll_interval_s == 1.0 and cfg.devices.printer.baudrate == 9600
    assert cfg.health == HealthConfig() and cfg.sessions == SessionsConfig()
    assert cfg.storage == StorageConfig(dir=cfg.storage.dir)
    assert cfg.mqtt.client_id == "k-0001" and cfg.mqtt.reconnect_max_s == 120.0


def test_a_key_is_checked_by_its_declaration() -> None:
    """Bounds come from the field: the error quotes them."""
    with pytest.raises(ConfigError, match=r"devices\.coproc\.watchdog_max_per_hour: got 61, expected an integer "
                                          r"from 0 to 60"):
        parse(MINIMAL.replace("[devices.coproc]", "[devices.coproc]\nwatchdog_max_per_hour = 61"))
    with pytest.raises(ConfigError, match=r"mqtt\.reconnect_max_s: got 2\.0, expected at least"):
        parse(MINIMAL.replace("keepalive = 30", "keepalive = 30\nreconnect_min_s = 5\nreconnect_max_s = 2"))
