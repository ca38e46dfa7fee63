# SPDX-License-Identifier: Apache-2.0
"""Build ``kiosk-agent_<version>_<arch>.deb`` from a staged tree with ``dpkg-deb`` (no debhelper).

    .venv/bin/python packaging/build_deb.py                 # this machine's arch, into build/
    .venv/bin/python packaging/build_deb.py --arch arm64    # a Raspberry Pi's, from any machine

The package carries wheels, not a virtual environment: postinst builds
``/opt/kiosk-agent`` on the kiosk against its own ``python3``, offline
(``pip --no-index --find-links``). The wheels of the dependencies are the
target's (``pip download --platform``, CPython 3.11 as on bookworm), so an
arm64 package builds on an amd64 machine; they are cached in
``~/.cache/kiosk-agent/wheels/<arch>``. Only the first build needs PyPI.
"""

from __future__ import annotations

import argparse
import configparser
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = "3.11"          # bookworm's python3; control's Depends says the same
# Debian architecture -> the manylinux platform tags pip may pick for it.
PLATFORMS = {
    "amd64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "arm64": ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
}
UNIT_DIR = "lib/systemd/system"        # bookworm: units stay under /lib (the usrmerge moratorium)
# (source under the repository, destination in the package, mode)
FILES = [
    ("systemd/kiosk-agent.service", f"{UNIT_DIR}/kiosk-agent.service", 0o644),
    ("systemd/kiosk-agent-renew.service", f"{UNIT_DIR}/kiosk-agent-renew.service", 0o644),
    ("systemd/kiosk-agent-renew.timer", f"{UNIT_DIR}/kiosk-agent-renew.timer", 0o644),
    ("systemd/kiosk-screen.service", f"{UNIT_DIR}/kiosk-screen.service", 0o644),
    ("systemd/kiosk-screen-restart.path", f"{UNIT_DIR}/kiosk-screen-restart.path", 0o644),
    ("systemd/kiosk-screen-restart.service", f"{UNIT_DIR}/kiosk-screen-restart.service", 0o644),
    ("systemd/kiosk-agent.conf", "usr/lib/tmpfiles.d/kiosk-agent.conf", 0o644),
    ("systemd/kiosk-screen.tmpfiles", "usr/lib/tmpfiles.d/kiosk-screen.conf", 0o644),
    ("systemd/kiosk-agent.sysusers", "usr/lib/sysusers.d/kiosk-agent.conf", 0o644),
    ("systemd/99-kiosk.rules", "lib/udev/rules.d/99-kiosk.rules", 0o644),
    ("systemd/kiosk-agent-polkit.rules", "usr/share/polkit-1/rules.d/50-kiosk-agent.rules", 0o644),
    ("systemd/kiosk-screen.pam", "etc/pam.d/kiosk-screen", 0o644),
    ("systemd/kiosk-screen.sh", "usr/libexec/kiosk-agent/kiosk-screen", 0o755),
    ("docs/installing.md", "usr/share/doc/kiosk-agent/installing.md", 0o644),
    ("packaging/debian/copyright", "usr/share/doc/kiosk-agent/copyright", 0o644),
    ("packaging/debian/lintian-overrides", "usr/share/lintian/overrides/kiosk-agent", 0o644),
]
# Programs on PATH; their targets appear when postinst has built the venv.
LINKS = {
    "usr/bin/kiosk-agent": "/opt/kiosk-agent/bin/kiosk-agent",
    "usr/sbin/kiosk-provision": "/opt/kiosk-agent/bin/kiosk-provision",
}
SCRIPTS = ("postinst", "prerm", "postrm")


class BuildError(Exception):
    """A build step failed; the message says which and why."""

    code = "packaging.build"


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (REPO / "agent" / "__init__.py").read_text(), re.M)
    if not match:
        raise BuildError("agent/__init__.py: no __version__")
    return match.group(1)


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(argv[:4])} …: exit {result.returncode}\n{result.stdout}{result.stderr}")


def dependency_wheels(arch: str, cache: Path) -> list[Path]:
    """The runtime dependencies as wheels for ``arch`` (binary only: the kiosk builds nothing)."""
    cache.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
            "--abi", "cp" + PYTHON.replace(".", ""), "--abi", "abi3", "--abi", "none", "--dest", str(cache)]
    for platform in PLATFORMS[arch]:
        argv += ["--platform", platform]
    _run(argv + requirements())
    return _newest(cache.glob("*.whl"))


def _newest(wheels: Iterable[Path]) -> list[Path]:
    """One wheel per distribution, its newest version (the cache keeps older downloads)."""
    best: dict[str, tuple[tuple[int, ...], Path]] = {}
    for wheel in wheels:
        name, ver = wheel.name.split("-")[:2]
        key = tuple(int(part) if part.isdigit() else -1 for part in ver.split("."))
        if name.lower() not in best or key > best[name.lower()][0]:
            best[name.lower()] = (key, wheel)
    return sorted(path for _, path in best.values())


def project_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # A copy of the tree: the in-tree build would leave build/lib behind in the checkout.
        src = Path(tmp) / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", ".run", "*.egg-info", "__pycache__", "node_modules", ".mypy_cache",
            ".ruff_cache", "tests", "bench"))
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--wheel-dir", str(dest), str(src)])
    wheels = sorted(dest.glob("kiosk_agent-*.whl"))
    if not wheels:
        raise BuildError("pip wheel made no kiosk_agent wheel")
    return wheels[-1]


def _changelog(ver: str) -> bytes:
    text = (f"kiosk-agent ({ver}) unstable; urgency=medium\n\n"
            "  * Release built from the kiosk-agent repository (see its git history).\n\n"
            " -- kiosk-agent maintainers <kiosk-agent@example.org>  Mon, 30 Nov 2026 00:00:00 +0000\n")
    # mtime 0 and no name: the same bytes at every build.
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def stage(root: Path, arch: str, wheels: list[Path], ver: str) -> None:
    """Lay out the package's files under ``root`` (``root/DEBIAN`` included)."""
    for src, dst, mode in FILES:
        target = root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / src, target)
        target.chmod(mode)
    for link, to in LINKS.items():
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(to)
    wheel_dir = root / "usr/lib/kiosk-agent/wheels"
    wheel_dir.mkdir(parents=True)
    for wheel in wheels:
        shutil.copyfile(wheel, wheel_dir / wheel.name)
        (wheel_dir / wheel.name).chmod(0o644)
    doc = root / "usr/share/doc/kiosk-agent"
    (doc / "changelog.gz").write_bytes(_changelog(ver))
    (doc / "changelog.gz").chmod(0o644)
    debian = root / "DEBIAN"
    debian.mkdir()
    for script in SCRIPTS:
        shutil.copyfile(HERE / "debian" / script, debian / script)
        (debian / script).chmod(0o755)
    sums = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and debian not in p.parents)
    (debian / "md5sums").write_text("".join(
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n" for p in sums))
    conffiles = sorted("/" + dst for _, dst, _ in FILES if dst.startswith("etc/"))
    (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    size_kib = sum((p.lstat().st_size + 1023) // 1024 for p in root.rglob("*")
                   if not p.is_dir() and debian not in p.parents)
    control = (HERE / "debian" / "control.in").read_text()
    control = control.replace("@VERSION@", ver).replace("@ARCH@", arch).replace("@SIZE@", str(size_kib))
    (debian / "control").write_text(control)
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


def build(out: Path, arch: str, cache: Path, ver: str | None = None) -> Path:
    if arch not in PLATFORMS:
        raise BuildError(f"--arch {arch}: expected one of {', '.join(PLATFORMS)}")
    ver = ver or version()
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*", ver):
        raise BuildError(f"--version {ver}: not a Debian version of a native package (digits first; . + ~)")
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"kiosk-agent_{ver}_{arch}.deb"
    with tempfile.TemporaryDirectory(prefix="kiosk-deb-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        wheels = [*dependency_wheels(arch, cache), project_wheel(Path(tmp) / "wheel")]
        stage(root, arch, wheels, ver)
        env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "1798675200"))
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)], env=env)
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--arch", default=None, help="Debian architecture: amd64 or arm64 (default: this machine's)")
    parser.add_argument("--out", type=Path, default=REPO / "build", help="directory for the .deb")
    parser.add_argument("--version", default=None,
                        help="package version (default: agent.__version__); e.g. 0.1.0+1 to rehearse an upgrade")
    parser.add_argument("--wheel-cache", type=Path, default=None,
                        help="dependency wheels (default ~/.cache/kiosk-agent/wheels/<arch>)")
    args = parser.parse_args(argv)
    arch = args.arch or host_arch()
    cache = args.wheel_cache or Path.home() / ".cache" / "kiosk-agent" / "wheels" / arch
    try:
        deb = build(args.out, arch, cache, args.version)
    except BuildError as exc:
        print(f"build_deb: {exc} [{exc.code}]", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
