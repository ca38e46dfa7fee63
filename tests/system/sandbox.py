# SPDX-License-Identifier: Apache-2.0
"""Run a command under the kernel rules the shipped unit asks systemd for, without systemd.

There is no systemd as PID 1 here, so the unit cannot be started; instead
this applies the same kernel mechanisms systemd uses, read from the unit file:

- ``SystemCallFilter=`` / ``SystemCallErrorNumber=``: a seccomp allow-list
  built from ``systemd-analyze syscall-filter`` (systemd's own group tables),
  loaded through libseccomp (the library systemd uses);
- ``RestrictAddressFamilies=``: ``socket()`` allowed only for those families;
- ``NoNewPrivileges=yes``: ``PR_SET_NO_NEW_PRIVS``;
- ``MemoryDenyWriteExecute=yes``: ``PR_SET_MDWE`` (kernel >= 6.3).

Not covered: the mount namespace (ProtectSystem=, ReadWritePaths=), the
device cgroup (DevicePolicy=) and the user switch (User=). Those need systemd.

    argv = sandbox_argv(UNIT, tmp_path, [sys.executable, "-m", "agent", "run", "--config", cfg])
    subprocess.Popen(argv)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["SANDBOX_CHILD", "address_families", "allowed_syscalls", "sandbox_argv", "unit_settings"]


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    for name in names:
        if name.startswith("@"):
            result |= _expand(groups[name], groups)
        else:
            result.add(name)
    return result


def allowed_syscalls(unit: Path) -> tuple[set[str], int]:
    """The allow-list systemd would build from the unit's SystemCallFilter= lines, and the errno."""
    settings = unit_settings(unit)
    groups = _groups()
    allowed: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if deny:
            allowed -= _expand(names, groups)
        else:
            allowed |= _expand(names, groups)
    allowed |= _expand(["@default"], groups)   # systemd always permits these
    errno_name = settings.get("SystemCallErrorNumber", ["EPERM"])[-1]
    import errno as errno_mod
    return allowed, int(getattr(errno_mod, errno_name))


def address_families(unit: Path) -> list[int]:
    values = unit_settings(unit).get("RestrictAddressFamilies", [])
    return [int(getattr(socket, name)) for name in values[-1].split()] if values else []


# Runs in the child: applies the rules, then execs argv[2:]. Kept to ctypes so
# it needs nothing but libseccomp.so.2 (a dependency of systemd itself).
SANDBOX_CHILD = r'''
import ctypes, ctypes.util, json, os, sys
spec = json.load(open(sys.argv[1]))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) != 0:                      # PR_SET_NO_NEW_PRIVS
    sys.exit("PR_SET_NO_NEW_PRIVS failed")
mdwe = libc.prctl(65, 1, 0, 0, 0) == 0                    # PR_SET_MDWE, MDWE_REFUSE_EXEC_GAIN
seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
seccomp.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Cmp)]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
ctx = seccomp.seccomp_init(ERRNO | spec["errno"])
added = 0
for name in spec["allowed"]:
    nr = seccomp.seccomp_syscall_resolve_name(name.encode())
    if nr == -1 or (name == "socket" and spec["families"]):
        continue
    if seccomp.seccomp_rule_add_array(ctx, ALLOW, nr, 0, None) == 0:
        added += 1
if spec["families"] and "socket" in spec["allowed"]:
    nr = seccomp.seccomp_syscall_resolve_name(b"socket")
    for family in spec["families"]:                       # socket(family, …): a0 == family
        cmp = Cmp(0, 4, family, 0)                        # SCMP_CMP_EQ
        assert seccomp.seccomp_rule_add_array(ctx, ALLOW, nr, 1, ctypes.byref(cmp)) == 0
if seccomp.seccomp_load(ctx) != 0:
    sys.exit("seccomp_load failed")
print(f"SANDBOX on: {added} system calls, families {spec['families']}, MDWE {'on' if mdwe else 'unsupported'}",
      file=sys.stderr, flush=True)
os.execv(sys.argv[2], sys.argv[2:])
'''


def sandbox_argv(unit: Path, workdir: Path, argv: list[str]) -> list[str]:
    """``argv`` wrapped so it runs under the unit's seccomp, address-family, NNP and MDWE rules."""
    allowed, errno = allowed_syscalls(unit)
    spec = workdir / "sandbox.json"
    spec.write_text(json.dumps({"allowed": sorted(allowed), "errno": errno, "families": address_families(unit)}))
    child = workdir / "sandbox_child.py"
    child.write_text(SANDBOX_CHILD)
    return [sys.executable, str(child), str(spec), *argv]
