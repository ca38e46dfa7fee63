# SPDX-License-Identifier: Apache-2.0
"""The kiosk screen's launcher under the real cage and Debian's chromium, as an unprivileged user.

    .venv/bin/python -m pytest tests/packaging/test_screen.py

cage runs on wlroots' headless backend (no display here), Chromium under it
on Wayland with its own sandbox, exactly as ``kiosk-screen.service`` starts
them (``cage -d -- kiosk-screen``); a plain HTTP server on a free loopback
port stands where the agent's local API serves the page, and records what
the browser asked for. cage refuses to run as root, so as root the test runs
it as ``nobody``, as the unit runs it as ``kiosk-ui``.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kiosktest import AgentProcess, wait_until

from agent.sim.devbroker import DevBroker
from agent.sim.devrun import write_sim_config

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "systemd" / "kiosk-screen.sh"
UNIT = REPO / "systemd" / "kiosk-screen.service"
NEEDED = ("/usr/bin/cage", "/usr/bin/chromium", "/usr/bin/Xwayland")

pytestmark = pytest.mark.skipif(not all(Path(p).exists() for p in NEEDED),
                                reason="needs cage, chromium and xwayland (make system-deps)")


class PageServer:
    """Serves a blank page on 127.0.0.1 and records the paths asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                body = b"<!doctype html><title>kiosk</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[PageServer]:
    srv = PageServer()
    yield srv
    srv.close()


def _as_screen_user(home: Path) -> tuple[list[str], int | None]:
    """The argv prefix and uid to run cage as: ``nobody`` when we are root (cage refuses root)."""
    if os.geteuid() != 0:
        return [], None
    import pwd
    uid = pwd.getpwnam("nobody").pw_uid
    return ["runuser", "-u", "nobody", "--"], uid


@pytest.fixture
def screen_dir() -> Iterator[Path]:
    # The unprivileged user must reach the token and its own runtime and home directories,
    # which pytest's tmp_path (under a 0700 directory of root's) does not allow.
    path = Path(tempfile.mkdtemp(prefix="kiosk-screen-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(screen_dir: Path, token_file: Path, port: int, chromium: Path | None = None) -> subprocess.Popen[bytes]:
    runtime, home = screen_dir / "xdg", screen_dir / "home"
    prefix, uid = _as_screen_user(home)
    for d in (runtime, home):
        d.mkdir(mode=0o700)
        if uid is not None:
            os.chown(d, uid, -1)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR": str(runtime),
        # As kiosk-screen.service: the browser's profile in a directory of its own.
        "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home),
        # wlroots without a display or input devices; pixman renders in memory.
        "WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1", "WLR_RENDERER": "pixman",
        "KIOSK_TOKEN_FILE": str(token_file), "KIOSK_LOCAL_API_PORT": str(port),
        **({"KIOSK_CHROMIUM": str(chromium)} if chromium else {}),
    }
    argv = [*prefix, "env", *(f"{k}={v}" for k, v in env.items()), "/usr/bin/cage", "-d", "--", str(LAUNCHER)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(screen_dir / "cage.log").open("wb"),
                            start_new_session=True)


def _cmdlines_with(needle: bytes, session: int) -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if needle in cmdline and os.getsid(int(entry.name)) == session:
                    found.append(cmdline)
            except (OSError, ProcessLookupError):
                continue
    return found


def _launcher_running(session: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            # The shell running the script (cage's own argv names the launcher too).
            if argv[:2] == [b"/bin/sh", str(LAUNCHER).encode()] and os.getsid(int(entry.name)) == session:
                return True
        except (OSError, ProcessLookupError):
            continue
    return False


def _x_files() -> set[Path]:
    return {*Path("/tmp").glob(".X*-lock"), *Path("/tmp/.X11-unix").glob("X*")}


@pytest.fixture(autouse=True)
def no_xwayland_leftovers() -> Iterator[None]:
    """cage starts Xwayland, which leaves its display lock and socket behind when stopped with the
    session: remove the ones this test made, so runs do not pile up displays in /tmp."""
    before = _x_files()
    yield
    for path in _x_files() - before:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path("/tmp/.X11-unix").rmdir()        # only when empty, i.e. when it was only ours


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_screen_opens_the_kiosk_page_with_the_token_only_once_the_agent_wrote_it(
        screen_dir: Path, server: PageServer) -> None:
    token_dir = screen_dir / "run-kiosk-ui"
    token_dir.mkdir(mode=0o755)
    token_file = token_dir / "token"
    proc = _start(screen_dir, token_file, server.port)
    try:
        # The launcher is waiting for the token: its shell runs under cage (a launcher that did
        # not wait would have exec'd the browser, and no process would show the launcher's path).
        wait_until(lambda: _launcher_running(proc.pid), timeout=30, message="the launcher waiting for the token")
        token = secrets.token_urlsafe(32)
        tmp = token_dir / ".token.tmp"
        tmp.write_text(token + "\n")
        tmp.chmod(0o644)
        tmp.rename(token_file)                     # atomically, as the agent writes it
        wait_until(lambda: server.paths, timeout=60, message="the browser's first request")
        # The very first request carries the token: the browser was never started without one.
        assert server.paths[0] == f"/?token={token}", server.paths
        assert proc.poll() is None, (screen_dir / "cage.log").read_text()[-2000:]
        # No command line shows the token (ps shows them to every local user): the browser was
        # started on a private forwarding page instead.
        assert _cmdlines_with(token.encode(), proc.pid) == []
        assert _cmdlines_with(b"chromium", proc.pid), "the browser runs under cage"
        start = screen_dir / "home" / "start.html"
        assert start.stat().st_mode & 0o777 == 0o600
    finally:
        _stop(proc)
    # Chromium's state went where the unit puts it (HOME, a RuntimeDirectory in RAM), nowhere else.
    assert (screen_dir / "home").exists()


def test_the_screen_unit_is_valid_for_systemd(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    # Point ExecStart at the launcher in the checkout (the package installs it in /usr/libexec).
    unit = tmp_path / "kiosk-screen.service"
    unit.write_text(UNIT.read_text().replace("/usr/libexec/kiosk-agent/kiosk-screen", str(LAUNCHER)))
    for name in ("kiosk-screen-restart.path", "kiosk-screen-restart.service"):
        shutil.copyfile(REPO / "systemd" / name, tmp_path / name)
    result = subprocess.run(["systemd-analyze", "verify", str(unit), str(tmp_path / "kiosk-screen-restart.path"),
                             str(tmp_path / "kiosk-screen-restart.service")],
                            capture_output=True, text=True, timeout=120, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "kiosk-screen" in line and "getty@" not in line]
    assert problems == [] and result.returncode == 0, result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_screen_shows_the_real_agents_home_screen_through_its_token(screen_dir: Path, broker: DevBroker) -> None:
    """The agent (simulated devices) writes its token as on a kiosk; the screen, started as the unit
    starts it, reaches the home screen with the services, which only an authenticated WebSocket lists."""
    import grp

    from playwright.sync_api import expect, sync_playwright

    # As tmpfiles.d makes /run/kiosk-ui: setgid, group of the screen's user (nobody's here: nogroup).
    ui_group = grp.getgrgid(pwd_gid("nobody")).gr_name if os.geteuid() == 0 else grp.getgrgid(os.getgid()).gr_name
    token_dir = screen_dir / "run-kiosk-ui"
    token_dir.mkdir()
    os.chown(token_dir, -1, grp.getgrnam(ui_group).gr_gid)
    token_dir.chmod(0o2750)
    token_file = token_dir / "token"
    port = _free_port()
    extra = f'\n[local_api]\nenabled = true\nport = {port}\ntoken_file = "{token_file}"\nui_group = "{ui_group}"\n'
    config = write_sim_config(screen_dir / "agent" / "agent.toml", broker.url, screen_dir / "agent" / "state",
                              extra=extra)
    agent = AgentProcess(screen_dir / "agent", broker_url=broker.url, config_text=config.read_text()).start()
    # Only to look at the page from here: the screen's Chromium with a debugging port, otherwise as launched.
    debug_port = _free_port()
    wrapper = screen_dir / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/chromium --remote-debugging-port={debug_port} "$@"\n')
    wrapper.chmod(0o755)
    proc = None
    try:
        wait_until(lambda: token_file.exists(), timeout=60, message=f"the agent's token ({agent.log[-2000:]})")
        assert token_file.stat().st_mode & 0o7777 == 0o640 and token_file.stat().st_gid == token_dir.stat().st_gid
        proc = _start(screen_dir, token_file, port, chromium=wrapper)
        with sync_playwright() as playwright:
            browser = wait_until(lambda: _cdp(playwright, debug_port), timeout=60, message="the screen's browser")
            page = wait_until(lambda: [p for c in browser.contexts for p in c.pages if "127.0.0.1" in _href(p)],
                              timeout=60, message="the kiosk page")[0]
            expect(page.get_by_role("button", name="养老金发放记录打印")).to_be_visible(timeout=30_000)
            # The page dropped the token from its address (kept in memory only).
            assert "token" not in page.url, page.url
            browser.close()
    finally:
        if proc is not None:
            _stop(proc)
        agent.terminate()


def _href(page: Any) -> str:
    """Where the page is now, asked of the page: a page attached over CDP before the start page's
    refresh ran can keep reporting the start page's URL."""
    try:
        return str(page.evaluate("location.href"))
    except Exception:  # noqa: BLE001 - the page is between documents: ask again on the next poll
        return ""


def pwd_gid(user: str) -> int:
    import pwd
    return pwd.getpwnam(user).pw_gid


def _cdp(playwright: Any, port: int) -> Any:
    try:
        return playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
    except Exception:  # noqa: BLE001 - playwright's error while the port is not open yet: keep waiting
        return None
