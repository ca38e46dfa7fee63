# SPDX-License-Identifier: Apache-2.0
"""kiosk-provision's board preparation on staged Raspberry Pi OS roots: what changes, once, and the dry run.

    .venv/bin/python -m pytest tests/packaging/test_board.py
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.board import WATCHDOG_DROPIN, config_txt_with, prepare_board
from provisioning.errors import InstallError
from provisioning.layout import Layout

PROVISION = str(Path(sys.executable).with_name("kiosk-provision"))
# What Raspberry Pi OS bookworm ships (trimmed): conditional sections, and [all] last.
CONFIG_TXT = """# For more options and information see
# http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2

[cm4]
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
"""
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait "
           "quiet splash plymouth.ignore-serial-consoles\n")
DPKG_STATUS = "Package: {name}\nStatus: install ok installed\nVersion: 1\n\n"


def pi_root(root: Path, model: str, *, screen: bool = True, installed: tuple[str, ...] = ()) -> Path:
    """A staged Raspberry Pi OS root as the image leaves it, with the kiosk-agent package's files."""
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(CONFIG_TXT)
    (root / "boot/firmware/cmdline.txt").write_text(CMDLINE)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "lib/systemd/system/kiosk-screen.service").write_text("[Unit]\n")
    (root / "lib/systemd/system/kiosk-screen-restart.path").write_text("[Unit]\n")
    if screen:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/cage").touch()
        (root / "usr/bin/chromium").touch()
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("".join(DPKG_STATUS.format(name=n) for n in installed))
    return root


def snapshot(root: Path) -> dict[str, str]:
    snap = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            snap[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            snap[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            snap[rel] = "dir"
    return snap


def test_a_pi5_gets_its_uart_no_serial_console_no_blanking_the_watchdog_and_the_screen(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0")
    report = prepare_board(Layout(root))
    config = (root / "boot/firmware/config.txt").read_text()
    assert config == CONFIG_TXT + "enable_uart=1\ndtparam=uart0=on\n"     # under [all], the rest untouched
    assert (root / "boot/firmware/cmdline.txt").read_text() == (
        "console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet splash "
        "plymouth.ignore-serial-consoles consoleblank=0\n")
    assert (root / WATCHDOG_DROPIN.lstrip("/")).read_text().endswith("[Manager]\nRuntimeWatchdogSec=15s\n")
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/kiosk-screen.service") == \
        "/lib/systemd/system/kiosk-screen.service"
    assert os.readlink(root / "etc/systemd/system/paths.target.wants/kiosk-screen-restart.path") == \
        "/lib/systemd/system/kiosk-screen-restart.path"
    assert report.reboot_needed
    # The GPIO library comes from apt, which a staging root cannot run: left to do on the kiosk.
    assert report.left == ["apt-get install python3-rpi-lgpio (the GPIO library for a Raspberry Pi 5 Model B Rev 1.0)"]
    assert not (root / "boot/firmware/.config.txt.kiosk-tmp").exists()


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", installed=("python3-rpi-lgpio",))
    first = prepare_board(Layout(root))
    assert len(first.changes) == 7 and first.left == []
    before = snapshot(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    second = prepare_board(Layout(root))
    assert second.changes == [] and not second.reboot_needed
    assert snapshot(root) == before
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes


def test_the_dry_run_lists_every_change_and_makes_none(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 4 Model B Rev 1.5")
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/systemd/system/multi-user.target.wants/hciuart.service").symlink_to(
        "/lib/systemd/system/hciuart.service")
    before = snapshot(root)
    result = subprocess.run([PROVISION, "--root", str(root), "--dry-run"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == before
    lines = [line for line in result.stdout.splitlines() if line.startswith("would change: ")]
    assert lines == [
        "would change: /boot/firmware/config.txt: set enable_uart=1 (needs a reboot)",
        "would change: /boot/firmware/config.txt: set dtoverlay=disable-bt (needs a reboot)",
        "would change: disable hciuart.service (Bluetooth no longer has the UART)",
        "would change: /boot/firmware/cmdline.txt: remove the serial console (console=serial0,115200) (needs a reboot)",
        "would change: /boot/firmware/cmdline.txt: screen blanking off (consoleblank=0) (needs a reboot)",
        f"would change: {WATCHDOG_DROPIN}: RuntimeWatchdogSec=15s (hardware watchdog on)",
        "would change: enable kiosk-screen.service",
        "would change: enable kiosk-screen-restart.path",
        "would change: apt-get install python3-rpi.gpio (the GPIO library for a Raspberry Pi 4 Model B Rev 1.5)",
    ]
    assert "dry run: nothing changed (9 change(s) listed; a reboot would follow)" in result.stdout
    # And done for real: Bluetooth's UART service disabled, RPi.GPIO (not rpi-lgpio) for a Pi 4.
    done = subprocess.run([PROVISION, "--root", str(root), "board"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and "not rebooting" in done.stdout
    assert not (root / "etc/systemd/system/multi-user.target.wants/hciuart.service").exists()
    assert "dtoverlay=disable-bt" in (root / "boot/firmware/config.txt").read_text()


def test_a_setting_for_every_board_is_replaced_where_it_is_and_conditional_sections_are_left_alone() -> None:
    text = "enable_uart=0\n[pi4]\nenable_uart=0\n[all]\narm_boost=1\n"
    assert config_txt_with(text, "enable_uart=1") == "enable_uart=1\n[pi4]\nenable_uart=0\n[all]\narm_boost=1\n"
    # Last section conditional: what is added goes under a new [all].
    assert config_txt_with("[pi4]\nx=1\n", "enable_uart=1") == "[pi4]\nx=1\n\n[all]\nenable_uart=1\n"
    # A commented-out line is not the setting.
    assert config_txt_with("#enable_uart=1\n", "enable_uart=1") == "#enable_uart=1\nenable_uart=1\n"
    # A device-tree parameter is replaced by name, an overlay never replaces another.
    assert config_txt_with("dtparam=uart0=off\ndtparam=audio=on\n", "dtparam=uart0=on") == \
        "dtparam=uart0=on\ndtparam=audio=on\n"
    assert config_txt_with("dtoverlay=vc4-kms-v3d\n", "dtoverlay=disable-bt") == \
        "dtoverlay=vc4-kms-v3d\ndtoverlay=disable-bt\n"
    # Overlays add up; one already there is kept once.
    assert config_txt_with("dtoverlay=disable-bt\n", "dtoverlay=disable-bt") == "dtoverlay=disable-bt\n"


def test_cmdline_words_are_kept_in_order_and_an_already_right_file_is_not_rewritten(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", installed=("python3-rpi-lgpio",))
    # No trailing newline, blanking already off in the middle, no serial console: nothing to do.
    (root / "boot/firmware/cmdline.txt").write_text("console=tty1 consoleblank=0 root=PARTUUID=x rootwait")
    report = prepare_board(Layout(root))
    assert [c.step for c in report.changes if c.step in ("serial-console", "blanking")] == []
    assert (root / "boot/firmware/cmdline.txt").read_text() == "console=tty1 consoleblank=0 root=PARTUUID=x rootwait"
    # Another blanking value and a Pi 5's debug-UART console: both fixed, the rest in order.
    (root / "boot/firmware/cmdline.txt").write_text("console=ttyAMA10,115200 consoleblank=600 root=x rootwait\n")
    prepare_board(Layout(root))
    assert (root / "boot/firmware/cmdline.txt").read_text() == "root=x rootwait consoleblank=0\n"


def test_a_reboot_owed_by_a_run_that_failed_later_is_still_owed_until_the_reboot(tmp_path: Path) -> None:
    root = pi_root(tmp_path / "root", "Raspberry Pi 5 Model B Rev 1.0", installed=("python3-rpi-lgpio",))
    marker = tmp_path / "run" / "kiosk-provision.reboot-required"     # /run on a kiosk: gone after a boot
    first = prepare_board(Layout(root), reboot_marker=marker)
    assert first.reboot_needed and marker.exists()
    # Say provisioning then failed (no certificate, a device): the re-run finds the board done, yet owes the reboot.
    second = prepare_board(Layout(root), reboot_marker=marker)
    assert second.changes == []
    assert second.reboot_reasons() == first.reboot_reasons()
    marker.unlink()                                # what the reboot does to /run
    assert not prepare_board(Layout(root), reboot_marker=marker).reboot_needed


def test_on_a_running_kiosk_the_steps_use_systemctl_and_apt(tmp_path: Path) -> None:
    """What a live kiosk runs, recorded: systemctl and apt-get cannot run against this machine."""
    root = pi_root(tmp_path / "root", "Raspberry Pi 5 Model B Rev 1.0")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/display-manager.service").symlink_to("/lib/systemd/system/lightdm.service")
    ran: list[list[str]] = []

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    report = prepare_board(Layout(root), run=run, live=True)
    assert ran == [["systemctl", "daemon-reexec"], ["systemctl", "enable", "kiosk-screen.service"],
                   ["systemctl", "enable", "kiosk-screen-restart.path"], ["systemctl", "disable", "lightdm.service"],
                   ["apt-get", "install", "-y", "--no-install-recommends", "python3-rpi-lgpio"]]
    assert report.left == [] and all(c.applied for c in report.changes)
    # A command that fails stops the preparation with the tool's own words and a code.

    def failing(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 100, "", "E: Unable to locate package python3-rpi.gpio")

    old = pi_root(tmp_path / "old", "Raspberry Pi 4 Model B Rev 1.5", screen=False)
    with pytest.raises(InstallError, match=re.escape("apt-get install python3-rpi.gpio: E: Unable to locate")) as exc:
        prepare_board(Layout(old), run=failing, live=True)
    assert exc.value.code == "provision.install"


def test_a_desktop_image_loses_its_display_manager_to_the_kiosk_screen(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/display-manager.service").symlink_to("/lib/systemd/system/lightdm.service")
    report = prepare_board(Layout(root))
    assert "disable lightdm.service (the kiosk screen owns the display)" in [c.what for c in report.changes]
    assert not os.path.lexists(root / "etc/systemd/system/display-manager.service")


def test_a_kiosk_without_a_screen_gets_no_screen_unit(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 4 Model B Rev 1.5", screen=False)
    report = prepare_board(Layout(root))
    assert not (root / "etc/systemd/system/multi-user.target.wants/kiosk-screen.service").exists()
    assert any("a kiosk without a screen" in line for line in report.ok)


def test_a_machine_that_is_not_a_raspberry_pi_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    report = prepare_board(Layout(tmp_path))
    assert report.changes == [] and not report.reboot_needed
    assert "board preparation skipped" in report.ok[0]
    assert snapshot(tmp_path) == {"etc": "dir"}


def test_a_missing_cmdline_is_a_clear_error_with_its_code(tmp_path: Path) -> None:
    root = pi_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0")
    (root / "boot/firmware/cmdline.txt").unlink()
    result = subprocess.run([PROVISION, "--root", str(root), "board"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1
    assert "/boot/firmware/cmdline.txt: No such file or directory [provision.install]" in result.stderr


@pytest.mark.parametrize("packaged", [True, False], ids=["packaged", "from-a-wheel"])
def test_provisioning_prepares_the_board_in_step_1_and_never_reboots_a_staging_root(tmp_path: Path,
                                                                                     packaged: bool) -> None:
    root = pi_root(tmp_path / "root", "Raspberry Pi 5 Model B Rev 1.0", installed=("python3-rpi-lgpio",))
    if packaged:
        (root / "lib/systemd/system/kiosk-agent.service").write_text("[Unit]\n")
        (root / "lib/systemd/system/kiosk-agent-renew.timer").write_text("[Unit]\n")
    result = subprocess.run(
        [PROVISION, "--root", str(root), "--non-interactive", "--kiosk-id", "k-0001", "--fleet", "north",
         "--site", "Outlet 37", "--mqtt-url", "mqtts://broker.example:8883", "--no-print"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3, result.stdout + result.stderr        # no certificate yet
    assert "[1/8] Checking the system and preparing the board" in result.stdout
    assert ("board: /boot/firmware/cmdline.txt: remove the serial console (console=serial0,115200): done"
            in result.stdout)
    assert "a reboot applies: " in result.stdout and "not rebooting" in result.stdout
    wants = root / "etc/systemd/system/multi-user.target.wants/kiosk-agent.service"
    if packaged:
        # The package's units are enabled where they are, never copied to /etc (they would shadow upgrades).
        assert os.readlink(wants) == "/lib/systemd/system/kiosk-agent.service"
        assert not (root / "etc/systemd/system/kiosk-agent.service").exists()
        assert "installed by the kiosk-agent package" in result.stdout
        # The agent writes the screen's token where the packaged screen unit reads it.
        config = (root / "etc/kiosk-agent/agent.toml").read_text()
        assert '[local_api]\ntoken_file = "/run/kiosk-ui/token"\n' in config
    else:
        assert os.readlink(wants) == "/etc/systemd/system/kiosk-agent.service"
        assert (root / "etc/systemd/system/kiosk-agent.service").exists()
    log = (root / "var/log/kiosk-provision.log").read_text()
    assert "board serial-console: /boot/firmware/cmdline.txt: remove the serial console" in log
    again = subprocess.run(
        [PROVISION, "--root", str(root), "--non-interactive", "--kiosk-id", "k-0001", "--fleet", "north",
         "--site", "Outlet 37", "--mqtt-url", "mqtts://broker.example:8883", "--no-print"],
        capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 3 and "a reboot applies" not in again.stdout and ": done" not in again.stdout


def test_no_board_skips_it(tmp_path: Path) -> None:
    root = pi_root(tmp_path / "root", "Raspberry Pi 5 Model B Rev 1.0")
    result = subprocess.run(
        [PROVISION, "--root", str(root), "--non-interactive", "--kiosk-id", "k-0001", "--fleet", "north",
         "--site", "Outlet 37", "--mqtt-url", "mqtts://broker.example:8883", "--no-print", "--no-board"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3 and "board preparation: skipped (--no-board)" in result.stdout
    assert (root / "boot/firmware/cmdline.txt").read_text() == CMDLINE
