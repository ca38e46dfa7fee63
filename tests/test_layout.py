# SPDX-License-Identifier: Apache-2.0
"""House rules that code review would otherwise have to catch."""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def imports_of(package: str) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[path] = names
    return found


def test_one_direction_of_dependency() -> None:
    for path, names in imports_of("hal").items():
        assert "agent" not in names and "fleet" not in names, f"{path} imports the agent"
    for path, names in imports_of("firmware").items():
        assert not names & {"agent", "hal", "fleet", "provisioning"}, f"{path} imports the host side"


def test_only_hal_serial_opens_ports() -> None:
    offenders = [p for pkg in ("agent", "hal", "fleet", "provisioning")
                 for p in (ROOT / pkg).rglob("*.py")
                 if re.search(r"serial_for_url\(|serial\.Serial\(", p.read_text(encoding="utf-8"))
                 and p != ROOT / "hal" / "serial.py"]
    assert offenders == []


def _requirement_names(dist: str) -> set[str]:
    """What ``dist`` pulls in on this interpreter (>= 3.11): markers evaluated, extras left out."""
    names = set()
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.add(req.name.lower().replace("_", "-"))
    return names


def test_runtime_dependencies_within_budget() -> None:
    seen: set[str] = set()
    todo = list(_requirement_names("kiosk-agent"))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(_requirement_names(name))
        except metadata.PackageNotFoundError:
            pytest.fail(f"runtime dependency {name} is not installed")
    assert len(seen) <= 8, sorted(seen)
    assert {"paho-mqtt", "pyserial", "cryptography", "pynacl", "cffi"} <= seen
    assert "typing-extensions" not in seen      # cryptography needs it only before 3.11


def test_console_scripts_exist_and_print_help() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = [line.split("=")[0].strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines()
               if line.strip()]
    assert set(scripts) == {"kiosk-agent", "kiosk-provision", "kioskctl"}
    bindir = Path(sys.executable).parent
    for script in scripts:
        proc = subprocess.run([str(bindir / script), "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (script, proc.stderr)


def test_api_document_covers_every_schema() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "mqtt-api.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    text = (ROOT / "docs" / "mqtt-api.yaml").read_text(encoding="utf-8")
    refs = set(re.findall(r"agent/wire/schemas/([a-z0-9-]+)\.json", text))
    shipped = {p.stem for p in (ROOT / "agent" / "wire" / "schemas").glob("*.json")}
    assert shipped <= refs, f"schemas missing from docs/mqtt-api.yaml: {sorted(shipped - refs)}"
    assert refs <= shipped, f"docs/mqtt-api.yaml names missing schemas: {sorted(refs - shipped)}"


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
