# SPDX-License-Identifier: Apache-2.0
"""Configuration: typed, validated, errors that name the key; exit 78."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.config import DEFAULT_SIM_CONFIG, load_config, parse_config
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
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and str(path) in lines[0], proc.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL)
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout


def test_real_backend_that_cannot_load_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL.replace('backend = "sim"', 'backend = "real"'))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "hal.backend" in proc.stderr and "RPi.GPIO" in proc.stderr
