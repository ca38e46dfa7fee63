# SPDX-License-Identifier: Apache-2.0
"""The firmware builds: mpy-cross compiles it, mypy checks it against the RP2 stubs,
the image holds what the device needs and nothing of the test rig."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from hal.coproc import FIRMWARE_DIR, build_image, image_files, image_version

SOURCES = sorted(p for p in FIRMWARE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
DEVICE_FILES = [p for p in SOURCES if p.name != "__init__.py"]


def _tool(name: str) -> str:
    exe = Path(sys.prefix) / "bin" / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.relative_to(FIRMWARE_DIR).as_posix())
def test_mpy_cross_compiles(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run([_tool("mpy-cross"), "-march=armv6m", "-o", str(out), str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def _stub_dirs(tmp: Path) -> tuple[Path, Path]:
    """The RP2 stubs as mypy wants them: board stubs on MYPYPATH, the
    MicroPython stdlib stubs as the typeshed. Both packages install their
    files straight into site-packages (``machine.pyi``, ``rp2/``, ``stdlib/``)."""
    site = Path(sysconfig.get_paths()["purelib"])
    if not (site / "machine.pyi").exists() or not (site / "stdlib" / "VERSIONS").exists():
        pytest.skip("micropython-rp2-rpi-pico-stubs are not installed (pip install -e '.[dev]')")
    record = next(site.glob("micropython_rp2_rpi_pico_stubs-*.dist-info")) / "RECORD"
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    stubs = tmp / "stubs"
    stubs.mkdir()
    for top in sorted(tops | {"_mpy_shed"}):
        wanted = top.endswith((".pyi", ".py")) or (
            (site / top).is_dir() and not top.endswith(".dist-info")
            and top not in ("stdlib", "stubs", "__pycache__"))
        if wanted and (site / top).exists():
            os.symlink(site / top, stubs / top)
    return site, stubs


def test_mypy_against_rp2_stubs(tmp_path: Path) -> None:
    typeshed, stubs = _stub_dirs(tmp_path)
    # The device's layout: the slot directory flat, the codec under lib/.
    dev = tmp_path / "device"
    (dev / "lib").mkdir(parents=True)
    names = []
    for path in DEVICE_FILES:
        rel = path.relative_to(FIRMWARE_DIR).as_posix()
        shutil.copy(path, dev / rel)
        names.append(rel)
    env = dict(os.environ, MYPYPATH=f"{stubs}{os.pathsep}{dev / 'lib'}")
    proc = subprocess.run(
        [_tool("mypy"), "--custom-typeshed-dir", str(typeshed), "--no-site-packages",
         "--follow-imports=silent", "--check-untyped-defs", "--python-version", "3.11",
         "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", *names],
        cwd=dev, env=env, capture_output=True, text=True, timeout=240, check=False)
    # The stubs have errors of their own that mypy reports; ours must have none.
    ours = [line for line in proc.stdout.splitlines() if line.split(":")[0] in names]
    assert ours == [], "\n".join(ours)
    assert proc.returncode in (0, 1), proc.stderr


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_board_layer_touches_machine() -> None:
    users = [p.name for p in SOURCES if "machine" in _imports(p)]
    assert users == ["board.py"]


def test_image_holds_the_firmware_and_not_the_rig() -> None:
    image = build_image()
    files = image_files(image)
    assert set(files) == {p.relative_to(FIRMWARE_DIR).as_posix() for p in DEVICE_FILES if p.name != "main.py"} \
        | {"manifest.json"}
    assert "machine.py" not in files and "neopixel.py" not in files and "main.py" not in files
    manifest = (FIRMWARE_DIR / "manifest.json").read_text()
    assert image_version(image) == __import__("json").loads(manifest)["version"]
    assert build_image() == image        # deterministic: the same bytes sign the same
