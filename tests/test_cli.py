# SPDX-License-Identifier: Apache-2.0
"""``kiosk-agent`` as an installer meets it: --version, --help, usage errors, ``keys show``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent import __version__
from agent.cli import build_parser
from agent.config import DEFAULT_SIM_CONFIG
from agent.runtime.keys import key_id, load_or_create
from agent.sim.devrun import write_sim_config


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=60)


def _parsers(parser: argparse.ArgumentParser, path: str = "kiosk-agent") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, f"{path} {name}")
    return found


def test_version() -> None:
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"kiosk-agent {__version__}"


def test_every_option_has_help_and_no_help_shows_markup() -> None:
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{path}: {'/'.join(action.option_strings) or action.dest} has no help"
        shown = _cli(*path.split()[1:], "--help")
        assert shown.returncode == 0, shown.stderr
        assert "``" not in shown.stdout and ":class:" not in shown.stdout, f"{path} --help:\n{shown.stdout}"


def test_sim_with_a_missing_action_does_not_call_args_required(tmp_path: Path) -> None:
    proc = _cli("sim", "--config", tmp_path / "agent.toml", "door")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("the following arguments are required: action"), proc.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_sim_config(tmp_path / "agent.toml", "mqtt://127.0.0.1:1883", tmp_path / "state", DEFAULT_SIM_CONFIG)


def test_keys_show_prints_the_device_public_key(config: Path, tmp_path: Path) -> None:
    key = load_or_create(None, tmp_path / "state", production=False)     # what the agent's first start makes
    proc = _cli("keys", "show", "--config", config)
    assert proc.returncode == 0, proc.stderr
    public = serialization.load_pem_public_key(proc.stdout.encode("ascii"))
    assert public.public_bytes_raw() == key.public_key().public_bytes_raw()     # type: ignore[union-attr]
    assert "PRIVATE" not in proc.stdout and key_id(key.public_key()) in proc.stdout.splitlines()[0]
    as_json = json.loads(_cli("keys", "show", "--config", config, "--json").stdout)
    assert as_json["key_id"] == key_id(key.public_key()) and as_json["kiosk"] == "sim-0001"


def test_keys_show_before_any_key_exists_says_so(config: Path, tmp_path: Path) -> None:
    proc = _cli("keys", "show", "--config", config)
    assert proc.returncode == 1 and proc.stdout == ""
    assert str(tmp_path / "state" / "device-ed25519.pem") in proc.stderr and "no device key yet" in proc.stderr
    assert not (tmp_path / "state" / "device-ed25519.pem").exists()      # showing never makes one
