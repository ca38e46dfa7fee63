# SPDX-License-Identifier: Apache-2.0
"""Board preparation on Raspberry Pi OS bookworm: what docs/installing.md used to ask for by hand.

    report = prepare_board(Layout(Path("/")), dry_run=True)   # what would change, nothing changed
    for change in report.changes:
        print(change.what)
    report.reboot_needed     # True when config.txt or cmdline.txt changed

Each step reads the current state first and changes only what differs, so a
second run changes nothing. With a staging root (``--root``) the files under
it are edited and no command runs: enabling is the symlink ``systemctl
enable`` would make, and what only the kiosk can do (an apt install) is
listed as left to do there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from provisioning.errors import InstallError
from provisioning.layout import Layout

__all__ = ["WATCHDOG_DROPIN", "BoardReport", "Change", "prepare_board"]

CONFIG_TXT = "/boot/firmware/config.txt"
CMDLINE_TXT = "/boot/firmware/cmdline.txt"
MODEL = "/proc/device-tree/model"
# A drop-in, not an edit of system.conf: that file is systemd's conffile, and
# an edited conffile stops every later systemd upgrade with a dpkg question.
WATCHDOG_DROPIN = "/etc/systemd/system.conf.d/50-kiosk-watchdog.conf"
# The BCM2835 watchdog takes at most 15 s on kernels before 6.8 and silently
# stays off with more.
WATCHDOG_TEXT = ("# Written by kiosk-provision: systemd pets the board's hardware watchdog, so a hung\n"
                 "# kernel reboots the kiosk. 15 s is the most the BCM2835 accepts before Linux 6.8.\n"
                 "[Manager]\nRuntimeWatchdogSec=15s\n")
REBOOT_MARKER = "/run/kiosk-provision.reboot-required"
SCREEN_UNITS = ("kiosk-screen.service", "kiosk-screen-restart.path")
_SERIAL_CONSOLE = re.compile(r"^console=(serial\d|ttyAMA\d+|ttyS\d)(,.*)?$")

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


@dataclasses.dataclass(frozen=True)
class Change:
    """One thing that differs from what a kiosk needs; ``reboot`` when it takes effect only at boot."""

    step: str
    what: str
    reboot: bool = False
    applied: bool = False      # False in a dry run, and for what only the kiosk itself can do


@dataclasses.dataclass
class BoardReport:
    model: str | None
    changes: list[Change] = dataclasses.field(default_factory=list)
    ok: list[str] = dataclasses.field(default_factory=list)        # steps already as needed
    left: list[str] = dataclasses.field(default_factory=list)      # to do on the kiosk (staging root)
    pending: list[str] = dataclasses.field(default_factory=list)   # applied by an earlier run since the last boot

    @property
    def reboot_needed(self) -> bool:
        return bool(self.reboot_reasons())

    def reboot_reasons(self) -> list[str]:
        now = [c.what for c in self.changes if c.reboot and c.applied]
        return [*(r for r in self.pending if r not in now), *now]

    def changed(self, step: str) -> bool:
        return any(c.step == step for c in self.changes)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{' '.join(argv)}: {exc}") from None


def detect_model(lay: Layout) -> str | None:
    """The board's model from the device tree (``Raspberry Pi 5 Model B Rev 1.0``), or None."""
    try:
        return lay.p(MODEL).read_bytes().rstrip(b"\0").decode("ascii", "replace").strip() or None
    except OSError:
        return None


def is_pi5(model: str | None) -> bool:
    return bool(model and re.match(r"Raspberry Pi (5|500)\b", model))


def _has_bt_on_pl011(model: str | None) -> bool:
    # Boards whose full UART (PL011) is taken by Bluetooth: 3, 4, 400, Zero W / 2 W, CM4.
    return bool(model and re.match(r"Raspberry Pi (3|4|400|Zero W|Zero 2 W|Compute Module 4)\b", model))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    tmp = path.with_name(f".{path.name}.kiosk-tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def config_txt_with(text: str, setting: str) -> str:
    """``text`` with ``setting`` (``key=value``) in force for every board: replaced where the key is, else appended.

    Lines under a conditional section (``[pi4]``, ``[cm5]`` …) apply to some
    boards only and are left alone; what is added goes under ``[all]``.
    """
    key = setting.split("=", 1)[0]
    if key == "dtoverlay":
        # Several overlays co-exist: this one is there or not, never replacing another.
        key = setting
    elif key == "dtparam":
        key = setting.rsplit("=", 1)[0]        # dtparam=uart0=off is the same parameter as dtparam=uart0=on
    lines = text.splitlines()
    section = "all"
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
            continue
        if section != "all" or stripped.startswith("#"):
            continue
        if stripped == setting:
            return text
        if stripped.split("=", 1)[0] == key or stripped.startswith(key + "="):
            lines[i] = setting
            return "\n".join(lines) + "\n"
    if section != "all":
        lines += ["", "[all]"]
    lines.append(setting)
    return "\n".join(lines) + "\n"


def _setter(setting: str) -> Callable[[str], str]:
    return lambda text: config_txt_with(text, setting)


def cmdline_without_serial_console(text: str) -> str:
    """cmdline.txt (one line) without a console on a serial UART; the other words kept in order."""
    words = [w for w in text.split() if not _SERIAL_CONSOLE.match(w)]
    return text if words == text.split() else " ".join(words) + "\n"


def cmdline_without_blanking(text: str) -> str:
    """cmdline.txt with the console's blanking off (``consoleblank=0``, replacing any other value)."""
    if [w for w in text.split() if w.startswith("consoleblank=")] == ["consoleblank=0"]:
        return text
    return " ".join([*(w for w in text.split() if not w.startswith("consoleblank=")), "consoleblank=0"]) + "\n"


class _Board:
    def __init__(self, lay: Layout, dry_run: bool, run: Runner, live: bool) -> None:
        self.lay = lay
        self.dry_run = dry_run
        self.run = run
        self.live = live           # a running kiosk: commands may run (never for a staging root)
        self.report = BoardReport(model=detect_model(lay))

    def change(self, step: str, what: str, apply: Callable[[], None] | None, *, reboot: bool = False) -> None:
        """Record ``what``; apply it unless this is a dry run (``apply`` None: only the kiosk can)."""
        applied = False
        if apply is not None and not self.dry_run:
            apply()
            applied = True
        elif apply is None:
            self.report.left.append(what)
        self.report.changes.append(Change(step, what, reboot, applied))

    def edit(self, step: str, target: str, new: Callable[[str], str], what: str, *, reboot: bool) -> None:
        path = self.lay.p(target)
        try:
            old = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InstallError(f"{target}: {exc.strerror}") from None
        updated = new(old)
        if updated == old:
            self.report.ok.append(f"{step}: {target}: {what}: already")
            return
        self.change(step, f"{target}: {what}", lambda: _write(path, updated), reboot=reboot)

    def uart(self) -> None:
        model = self.report.model
        settings = ["enable_uart=1"]
        if is_pi5(model):
            settings.append("dtparam=uart0=on")         # GPIO14/15 is UART0 on the Pi 5 (RP1)
        elif _has_bt_on_pl011(model):
            settings.append("dtoverlay=disable-bt")     # give the header the full UART, not the mini one
        for setting in settings:
            self.edit("uart", CONFIG_TXT, _setter(setting), f"set {setting}", reboot=True)
        if _has_bt_on_pl011(model):
            self.disable_unit("uart", "hciuart.service", "Bluetooth no longer has the UART")

    def console(self) -> None:
        try:
            words = self.lay.p(CMDLINE_TXT).read_text(encoding="utf-8").split()
        except OSError as exc:
            raise InstallError(f"{CMDLINE_TXT}: {exc.strerror}") from None
        serial = " ".join(w for w in words if _SERIAL_CONSOLE.match(w))
        self.edit("serial-console", CMDLINE_TXT, cmdline_without_serial_console,
                  f"remove the serial console ({serial or 'none'})", reboot=True)
        self.edit("blanking", CMDLINE_TXT, cmdline_without_blanking, "screen blanking off (consoleblank=0)",
                  reboot=True)

    def watchdog(self) -> None:
        path = self.lay.p(WATCHDOG_DROPIN)
        if path.exists() and path.read_text(encoding="utf-8") == WATCHDOG_TEXT:
            self.report.ok.append(f"watchdog: {WATCHDOG_DROPIN} already in place")
            return

        def apply() -> None:
            _write(path, WATCHDOG_TEXT)
            if self.live:
                self.run(["systemctl", "daemon-reexec"])     # systemd re-reads it: no reboot for this one
        self.change("watchdog", f"{WATCHDOG_DROPIN}: RuntimeWatchdogSec=15s (hardware watchdog on)", apply)

    def screen(self) -> None:
        unit = self.lay.p(f"/lib/systemd/system/{SCREEN_UNITS[0]}")
        if not unit.exists():
            self.report.ok.append("screen: the kiosk-agent package's screen unit is not installed; skipped")
            return
        missing = [p for p in ("/usr/bin/cage", "/usr/bin/chromium") if not self.lay.p(p).exists()]
        if missing:
            self.report.ok.append(f"screen: {', '.join(missing)} not installed: a kiosk without a screen")
            return
        for name, target in ((SCREEN_UNITS[0], "multi-user.target"), (SCREEN_UNITS[1], "paths.target")):
            self.enable_unit("screen", name, target)
        dm = self.lay.p("/etc/systemd/system/display-manager.service")
        if dm.is_symlink():
            self.disable_unit("screen", Path(os.readlink(dm)).name, "the kiosk screen owns the display",
                              link=dm, reboot=True)

    def enable_unit(self, step: str, name: str, target: str) -> None:
        wants = self.lay.p(f"/etc/systemd/system/{target}.wants/{name}")
        dest = f"/lib/systemd/system/{name}"
        if wants.is_symlink() and os.readlink(wants) in (dest, f"/usr{dest}"):
            self.report.ok.append(f"{step}: {name} enabled already")
            return

        def apply() -> None:
            if self.live:
                r = self.run(["systemctl", "enable", name])
                if r.returncode != 0:
                    raise InstallError(f"systemctl enable {name}: {r.stderr.strip()}")
                return
            wants.parent.mkdir(parents=True, exist_ok=True)
            if wants.is_symlink():
                wants.unlink()
            wants.symlink_to(dest)
        self.change(step, f"enable {name}", apply)

    def disable_unit(self, step: str, name: str, why: str, *, link: Path | None = None,
                     reboot: bool = False) -> None:
        # Each *.wants directory by hand: glob skips a dangling symlink, and in a staged root
        # every link into /lib dangles.
        links = [link] if link else [d / name for d in self.lay.p("/etc/systemd/system").glob("*.wants")
                                     if (d / name).is_symlink()]
        if not links:
            self.report.ok.append(f"{step}: {name} not enabled")
            return

        def apply() -> None:
            if self.live:
                r = self.run(["systemctl", "disable", name])
                if r.returncode != 0:
                    raise InstallError(f"systemctl disable {name}: {r.stderr.strip()}")
                return
            for path in links:
                path.unlink()
        self.change(step, f"disable {name} ({why})", apply, reboot=reboot)

    def gpio(self) -> None:
        model = self.report.model
        # Both provide the module RPi.GPIO and conflict: rpi-lgpio works over /dev/gpiochip*,
        # which is all the Pi 5 (GPIO behind the RP1) offers.
        package = "python3-rpi-lgpio" if is_pi5(model) else "python3-rpi.gpio"
        if _dpkg_installed(self.lay, package):
            self.report.ok.append(f"gpio: {package} installed ({model})")
            return
        what = f"apt-get install {package} (the GPIO library for a {model})"
        if not self.live:
            self.change("gpio", what, None)
            return

        def apply() -> None:
            r = self.run(["apt-get", "install", "-y", "--no-install-recommends", package])
            if r.returncode != 0:
                raise InstallError(f"apt-get install {package}: {(r.stderr or r.stdout).strip()[-400:]}")
        self.change("gpio", what, apply)


def _dpkg_installed(lay: Layout, package: str) -> bool:
    try:
        status = lay.p("/var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M):
            return bool(re.search(r"^Status: install ok installed$", stanza, re.M))
    return False


def is_raspberry_pi(lay: Layout) -> bool:
    model = detect_model(lay)
    return bool(model and model.startswith("Raspberry Pi")) and lay.p(CONFIG_TXT).exists()


def prepare_board(lay: Layout, *, dry_run: bool = False, run: Runner | None = None,
                  reboot_marker: Path | None = None, live: bool | None = None) -> BoardReport:
    """Bring a Raspberry Pi's boot files and services to what a kiosk needs; report every change.

    Not a Raspberry Pi (no device-tree model, or no ``/boot/firmware/config.txt``
    under the root): nothing to do, and the report says so in ``ok``. ``reboot_marker``
    (default ``/run/kiosk-provision.reboot-required`` on a kiosk, none for a staging
    root) keeps the reasons for the reboot until it happens. ``live`` (default: a running
    systemd and no staging root) makes the steps use systemctl and apt-get through ``run``.
    """
    if live is None:
        live = not lay.staging and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None
    board = _Board(lay, dry_run, run or _run, live)
    if not is_raspberry_pi(lay):
        board.report.ok.append(f"not a Raspberry Pi with {CONFIG_TXT} ({board.report.model or 'no device-tree model'}):"
                               " board preparation skipped")
        return board.report
    # On a kiosk, what waits for a reboot is remembered in /run (cleared by the reboot itself), so a
    # run that failed after changing config.txt still leads the next run to the one reboot.
    marker = reboot_marker or (None if lay.staging else lay.p(REBOOT_MARKER))
    if marker is not None and marker.exists():
        board.report.pending = marker.read_text(encoding="utf-8").splitlines()
    board.uart()
    board.console()
    board.watchdog()
    board.screen()
    board.gpio()
    if marker is not None and not dry_run and board.report.reboot_needed:
        _write(marker, "".join(f"{r}\n" for r in board.report.reboot_reasons()))
    return board.report
