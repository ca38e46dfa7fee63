# SPDX-License-Identifier: Apache-2.0
"""The package in a real Debian bookworm root: apt install, provision, remove, purge (long mode).

    KIOSK_LONG=1 .venv/bin/python -m pytest tests/packaging/test_chroot_install.py -m long

The root is made once with debootstrap and cached in
``~/.cache/kiosk-agent/debootstrap/bookworm-base`` (a few minutes the first
time, from the mirror apt uses); each run works on a copy. apt inside the
chroot fetches what the package depends on (systemd, udev) from the same
mirror; the downloaded .debs are cached beside the base. Needs root (chroot,
mount).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.long

REPO = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "kiosk-agent" / "debootstrap"
BASE = CACHE / "bookworm-base"
ARCHIVES = CACHE / "apt-archives"
MIRROR = "http://deb.debian.org/debian"


def _base() -> Path:
    if not (BASE / "usr/bin/python3").exists():
        partial = CACHE / "bookworm-base.partial"
        shutil.rmtree(partial, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                        "bookworm", str(partial), MIRROR], check=True, capture_output=True, timeout=3600)
        partial.rename(BASE)
    return BASE


class Chroot:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *argv: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
        result = subprocess.run(["chroot", str(self.root), *argv], capture_output=True, text=True, env=env,
                                timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def apt(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.run("apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", *argv)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([sys.executable, str(REPO / "packaging/build_deb.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def next_deb(deb: Path) -> Path:
    """The same package one release later (version +1), to upgrade to."""
    version = deb.name.split("_")[1] + "+1"
    result = subprocess.run([sys.executable, str(REPO / "packaging/build_deb.py"), "--out", str(deb.parent),
                             "--version", version], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("needs root and debootstrap (make system-deps)")
    root = tmp_path_factory.mktemp("chroot") / "root"
    subprocess.run(["cp", "-a", str(_base()), str(root)], check=True)
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    # No daemons start in the chroot (there is no running systemd anyway).
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    archives = root / "var/cache/apt/archives"
    if ARCHIVES.is_dir():
        for cached in ARCHIVES.glob("*.deb"):
            shutil.copyfile(cached, archives / cached.name)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        box = Chroot(root)
        box.apt("update")
        yield box
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        ARCHIVES.mkdir(parents=True, exist_ok=True)
        for fetched in archives.glob("*.deb"):
            if not (ARCHIVES / fetched.name).exists():
                shutil.copyfile(fetched, ARCHIVES / fetched.name)
        shutil.rmtree(root, ignore_errors=True)


PROVISION = ("kiosk-provision", "--non-interactive", "--kiosk-id", "k-0001", "--fleet", "north",
             "--site", "Outlet 37, Main St Post Office", "--mqtt-url", "mqtts://broker.example:8883",
             "--no-print", "--no-selftest")


def _install(box: Chroot, deb: Path) -> subprocess.CompletedProcess[str]:
    shutil.copyfile(deb, box.p(f"/tmp/{deb.name}"))
    return box.apt("install", "--no-install-recommends", f"/tmp/{deb.name}")


def test_install_provision_upgrade_remove_purge_in_a_bookworm_root(chroot: Chroot, deb: Path,
                                                                   next_deb: Path) -> None:
    box = chroot
    box.run("groupadd", "--system", "gpio")          # as on Raspberry Pi OS
    _install(box, deb)
    # The venv was built by postinst from the package's wheels, against the root's python3.
    cfg = box.p("/opt/kiosk-agent/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    assert box.run("kiosk-agent", "--help").returncode == 0
    assert "renew" in box.run("kiosk-provision", "--help").stdout
    assert box.run("/opt/kiosk-agent/bin/python3", "-c", "import agent, paho.mqtt, nacl, websockets").returncode == 0
    for user in ("kiosk-agent", "kiosk-ui"):
        assert box.run("getent", "passwd", user).stdout.startswith(f"{user}:")
    assert {"dialout", "video", "gpio"} <= set(box.run("id", "-nG", "kiosk-agent").stdout.split())
    assert {"video", "render", "input"} <= set(box.run("id", "-nG", "kiosk-ui").stdout.split())
    # The token's directory: setgid, group kiosk-ui, nobody else (tmpfiles.d, applied by postinst).
    token_dir = box.run("stat", "-c", "%a %U %G", "/run/kiosk-ui").stdout.split()
    assert token_dir == ["2750", "kiosk-agent", "kiosk-ui"]
    # Configuring again (a reinstall, as an upgrade does) rebuilds the venv and keeps everything else.
    box.apt("install", "--reinstall", "--no-install-recommends", f"/tmp/{deb.name}")
    assert box.run("kiosk-agent", "--help").returncode == 0
    assert not box.p("/opt/kiosk-agent.old").exists()
    # Enabled the debhelper way, but nothing runs until provisioned (ConditionPathExists).
    assert box.p("/etc/systemd/system/multi-user.target.wants/kiosk-agent.service").is_symlink()
    assert not box.p("/etc/kiosk-agent/agent.toml").exists()

    # Board preparation of a staged Raspberry Pi 5 image, inside the root: listed, then done once.
    stage = box.p("/stage")
    (stage / "boot/firmware").mkdir(parents=True)
    (stage / "proc/device-tree").mkdir(parents=True)
    (stage / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    (stage / "boot/firmware/config.txt").write_text("dtparam=audio=on\n[all]\n")
    (stage / "boot/firmware/cmdline.txt").write_text("console=serial0,115200 console=tty1 root=PARTUUID=x rootwait\n")
    dry = box.run("kiosk-provision", "--root", "/stage", "--dry-run")
    assert "would change: /boot/firmware/cmdline.txt: remove the serial console" in dry.stdout
    assert (stage / "boot/firmware/cmdline.txt").read_text().startswith("console=serial0")
    first = box.run("kiosk-provision", "--root", "/stage", "board")
    assert "not rebooting" in first.stdout
    assert "enable_uart=1" in (stage / "boot/firmware/config.txt").read_text()
    second = box.run("kiosk-provision", "--root", "/stage", "board")
    assert "changed:" not in second.stdout and "would change" not in second.stdout

    # Provisioning the root itself (no certificate yet: exit 3) enables the packaged units, copies none.
    result = box.run(*PROVISION, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "installed by the kiosk-agent package" in result.stdout
    assert box.p("/etc/kiosk-agent/agent.toml").exists() and box.p("/etc/kiosk-agent/keys/signing.key").exists()
    assert not box.p("/etc/systemd/system/kiosk-agent.service").exists()
    assert 'token_file = "/run/kiosk-ui/token"' in box.p("/etc/kiosk-agent/agent.toml").read_text()
    checked = box.run("kiosk-agent", "check-config", "/etc/kiosk-agent/agent.toml", check=False)
    assert "local_api" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    assert os.readlink(box.p("/etc/systemd/system/multi-user.target.wants/kiosk-agent.service")) == \
        "/lib/systemd/system/kiosk-agent.service"

    # An upgrade: the venv is rebuilt, the provisioned kiosk is left as it was.
    config, key = box.p("/etc/kiosk-agent/agent.toml").read_bytes(), box.p("/etc/kiosk-agent/keys/signing.key")
    key_bytes = key.read_bytes()
    _install(box, next_deb)
    assert box.run("dpkg-query", "-W", "-f=${Version}", "kiosk-agent").stdout == next_deb.name.split("_")[1]
    assert box.run("kiosk-agent", "--help").returncode == 0
    assert box.p("/etc/kiosk-agent/agent.toml").read_bytes() == config and key.read_bytes() == key_bytes
    assert os.readlink(box.p("/etc/systemd/system/multi-user.target.wants/kiosk-agent.service")) == \
        "/lib/systemd/system/kiosk-agent.service"

    # A used kiosk: its journal. remove keeps configuration, keys and journal; the venv goes.
    box.p("/var/lib/kiosk-agent/agent.db").write_bytes(b"journal")
    box.apt("remove", "kiosk-agent")
    assert not box.p("/opt/kiosk-agent").exists()
    assert not box.p("/lib/systemd/system/kiosk-agent.service").exists()
    assert box.p("/etc/kiosk-agent/agent.toml").exists() and box.p("/var/lib/kiosk-agent/agent.db").exists()
    # purge of a used kiosk: the journal, keys and configuration stay, and it says why.
    purged = box.apt("purge", "kiosk-agent")
    assert "this kiosk was used" in purged.stdout + purged.stderr
    assert box.p("/var/lib/kiosk-agent/agent.db").read_bytes() == b"journal"
    assert box.p("/etc/kiosk-agent/keys/signing.key").exists()
    assert not box.p("/etc/pam.d/kiosk-screen").exists()
    assert not box.p("/etc/systemd/system/multi-user.target.wants/kiosk-agent.service").exists()

    # Decommission (the package again, to run it), then purge: nothing of the kiosk is left.
    _install(box, deb)
    box.run("kiosk-provision", "decommission", "--yes")
    assert not box.p("/var/lib/kiosk-agent/agent.db").exists()
    box.apt("purge", "kiosk-agent")
    for gone in ("/etc/kiosk-agent", "/var/lib/kiosk-agent", "/opt/kiosk-agent", "/usr/bin/kiosk-agent",
                 "/usr/sbin/kiosk-provision", "/usr/lib/kiosk-agent", "/usr/libexec/kiosk-agent",
                 "/var/log/kiosk-provision.log", "/run/kiosk-ui", "/etc/pam.d/kiosk-screen",
                 "/etc/systemd/system/timers.target.wants/kiosk-agent-renew.timer"):
        assert not os.path.lexists(box.p(gone)), gone
    # Debian keeps system users after a purge (files may still carry their ids).
    assert box.run("getent", "passwd", "kiosk-agent").returncode == 0


def test_with_its_recommends_the_screen_unit_and_the_agent_unit_verify_in_the_root(chroot: Chroot, deb: Path) -> None:
    box = chroot
    shutil.copyfile(deb, box.p(f"/tmp/{deb.name}"))
    box.apt("install", f"/tmp/{deb.name}")          # with Recommends: cage, xwayland, chromium, polkitd
    for path in ("/usr/bin/cage", "/usr/bin/Xwayland", "/usr/bin/chromium", "/usr/libexec/kiosk-agent/kiosk-screen"):
        assert box.p(path).exists(), path
    # systemd's own check of the installed units, against the root's real paths and users.
    result = box.run("systemd-analyze", "verify", "kiosk-screen.service", "kiosk-screen-restart.path",
                     "kiosk-agent.service", "kiosk-agent-renew.timer", check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "kiosk" in line]
    assert problems == [] and result.returncode == 0, result.stdout + result.stderr
    box.apt("purge", "kiosk-agent")
