# SPDX-License-Identifier: Apache-2.0
"""The Debian package: it builds, holds exactly the expected files and dependencies, and its scripts are clean.

    .venv/bin/python -m pytest tests/packaging/test_deb.py

What it does once installed (the venv built offline, remove, purge) is
tests/packaging/test_chroot_install.py, in a debootstrap root (long mode).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "build_deb.py"
SCRIPTS = [REPO / "packaging" / "debian" / name for name in ("postinst", "prerm", "postrm")]
VERSION = re.search(r'__version__ = "([^"]+)"', (REPO / "agent" / "__init__.py").read_text()).group(1)  # type: ignore[union-attr]
EXPECTED_FILES = {
    "etc/pam.d/kiosk-screen",
    "lib/systemd/system/kiosk-agent.service",
    "lib/systemd/system/kiosk-agent-renew.service",
    "lib/systemd/system/kiosk-agent-renew.timer",
    "lib/systemd/system/kiosk-screen.service",
    "lib/systemd/system/kiosk-screen-restart.path",
    "lib/systemd/system/kiosk-screen-restart.service",
    "lib/udev/rules.d/99-kiosk.rules",
    "usr/libexec/kiosk-agent/kiosk-screen",
    "usr/lib/sysusers.d/kiosk-agent.conf",
    "usr/lib/tmpfiles.d/kiosk-agent.conf",
    "usr/lib/tmpfiles.d/kiosk-screen.conf",
    "usr/share/doc/kiosk-agent/changelog.gz",
    "usr/share/doc/kiosk-agent/copyright",
    "usr/share/doc/kiosk-agent/installing.md",
    "usr/share/lintian/overrides/kiosk-agent",
    "usr/share/polkit-1/rules.d/50-kiosk-agent.rules",
}
EXPECTED_LINKS = {
    "usr/bin/kiosk-agent": "/opt/kiosk-agent/bin/kiosk-agent",
    "usr/sbin/kiosk-provision": "/opt/kiosk-agent/bin/kiosk-provision",
}
# One wheel per runtime distribution (setup.cfg install_requires and what they pull), plus the agent's.
EXPECTED_WHEELS = {"cffi", "cryptography", "kiosk_agent", "paho_mqtt", "psutil", "pycparser", "pynacl",
                   "pyserial", "rfc8785", "websockets"}


def _host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def _build(out: Path, *args: str) -> Path:
    result = subprocess.run([sys.executable, str(BUILD), "--out", str(out), *args], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    deb = Path(result.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.parent == out
    return deb


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("deb"))


def _contents(deb: Path) -> list[tuple[str, str, str]]:
    """(mode string, path without ./, link target or '') for every entry."""
    out = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split(None, 5)
        name, _, target = fields[5].partition(" -> ")
        rows.append((fields[0], name.removeprefix("./"), target))
    return rows


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_package_is_named_for_its_version_and_this_machines_architecture(deb: Path) -> None:
    assert deb.name == f"kiosk-agent_{VERSION}_{_host_arch()}.deb"
    assert _field(deb, "Package") == "kiosk-agent"
    assert _field(deb, "Version") == VERSION
    assert _field(deb, "Architecture") == _host_arch()


def test_it_holds_exactly_the_expected_files_owned_by_root(deb: Path) -> None:
    rows = _contents(deb)
    files = {name for mode, name, _ in rows if mode.startswith("-")}
    links = {name: target for mode, name, target in rows if mode.startswith("l")}
    wheels = {name for name in files if name.startswith("usr/lib/kiosk-agent/wheels/")}
    assert files - wheels == EXPECTED_FILES
    assert links == EXPECTED_LINKS
    names = {Path(w).name.split("-")[0].lower() for w in wheels}
    assert names == EXPECTED_WHEELS and len(wheels) == len(EXPECTED_WHEELS), sorted(wheels)
    # Nothing under /opt: the venv is built by postinst (Debian policy keeps packages out of /opt).
    assert not [name for _, name, _ in rows if name.startswith("opt")]
    out = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    assert all(" root/root " in line for line in out.splitlines())
    modes = {name: mode for mode, name, _ in rows}
    assert modes["usr/libexec/kiosk-agent/kiosk-screen"] == "-rwxr-xr-x"
    assert modes["lib/systemd/system/kiosk-agent.service"] == "-rw-r--r--"


def test_the_wheels_are_for_this_architecture_and_cpython_3_11(deb: Path) -> None:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[_host_arch()]
    for _, name, _ in _contents(deb):
        if name.endswith(".whl") and "-none-any" not in name:
            tags = Path(name).stem.split("-")[2:]
            assert tags[0] in ("cp311", "cp38", "cp36", "cp37", "cp39") and machine in tags[2], name


def test_dependencies_are_what_the_agent_and_the_screen_need(deb: Path) -> None:
    assert _field(deb, "Depends") == "python3 (>= 3.11), python3 (<< 3.12), python3-venv, systemd, udev"
    # cage 0.1.4 will not start without Xwayland, and does not depend on it (tests/packaging/test_screen.py).
    assert _field(deb, "Recommends") == "cage, xwayland, chromium, fonts-noto-cjk | fonts-wqy-microhei, polkitd"
    assert _field(deb, "Suggests") == "python3-picamera2"


def test_control_files_conffiles_and_md5sums(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "--control", str(deb), str(tmp_path)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conffiles", "control", "md5sums", "postinst", "postrm",
                                                          "prerm"]
    assert (tmp_path / "conffiles").read_text() == "/etc/pam.d/kiosk-screen\n"
    for script in ("postinst", "prerm", "postrm"):
        assert (tmp_path / script).stat().st_mode & 0o777 == 0o755
        assert (tmp_path / script).read_bytes() == (REPO / "packaging/debian" / script).read_bytes()
    summed = {line.split("  ", 1)[1] for line in (tmp_path / "md5sums").read_text().splitlines()}
    assert EXPECTED_FILES <= summed


def test_the_agent_unit_waits_for_provisioning(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "--extract", str(deb), str(tmp_path)], check=True)
    for unit in ("kiosk-agent.service", "kiosk-agent-renew.service", "kiosk-screen.service",
                 "kiosk-screen-restart.path"):
        text = (tmp_path / "lib/systemd/system" / unit).read_text()
        assert "ConditionPathExists=/etc/kiosk-agent/agent.toml" in text, unit
    agent_unit = (tmp_path / "lib/systemd/system/kiosk-agent.service").read_text()
    assert "ExecStart=/opt/kiosk-agent/bin/kiosk-agent run" in agent_unit


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make system-deps)")
@pytest.mark.parametrize("script", [*SCRIPTS, REPO / "systemd" / "kiosk-screen.sh"], ids=lambda p: p.name)
def test_maintainer_scripts_and_the_launcher_pass_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", "--shell=sh", "--severity=style", str(script)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make system-deps)")
def test_shellcheck_does_find_what_it_should(tmp_path: Path) -> None:
    # The check above must be able to fail: an unquoted variable in a copy of postinst.
    broken = tmp_path / "postinst"
    broken.write_text(SCRIPTS[0].read_text().replace('rm -rf "$VENV.old"', "rm -rf $2", 1))
    result = subprocess.run(["shellcheck", "--shell=sh", str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "SC2086" in result.stdout


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian not installed (make system-deps)")
def test_lintian_is_clean_with_only_the_justified_overrides(deb: Path) -> None:
    result = subprocess.run(["lintian", "--info", "--pedantic", "--display-experimental", str(deb)],
                            capture_output=True, text=True, timeout=300, check=False)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert tags == [], "\n".join(tags)
    overrides = (REPO / "packaging/debian/lintian-overrides").read_text()
    # Each override carries its reason on the comment lines above it.
    blocks = overrides.strip().split("\n\n")
    assert all(block.lstrip().startswith("#") for block in blocks)


def test_an_unknown_architecture_is_refused_with_its_code(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path), "--arch", "mips"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "--arch mips: expected one of amd64, arm64 [packaging.build]" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_raspberry_pi_package_builds_on_any_machine(tmp_path: Path) -> None:
    deb = _build(tmp_path, "--arch", "arm64")
    assert deb.name == f"kiosk-agent_{VERSION}_arm64.deb"
    wheels = [name for _, name, _ in _contents(deb) if name.endswith(".whl") and "-none-any" not in name]
    assert wheels and all("aarch64" in w for w in wheels)


def test_a_version_dpkg_would_misread_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path), "--version", "1.0 beta"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "--version 1.0 beta: not a Debian version of a native package" in result.stderr
    assert "[packaging.build]" in result.stderr and list(tmp_path.iterdir()) == []
