# SPDX-License-Identifier: Apache-2.0
"""The shipped unit, tmpfiles entry and udev rules, checked by systemd's own tools.

    .venv/bin/python -m pytest tests/system/test_systemd.py

- ``systemd-analyze verify`` on a copy of the unit whose ExecStart points at
  this checkout's real ``kiosk-agent`` script (verify refuses a missing
  binary; the copy differs from the shipped file in that one path only, which
  the test asserts);
- ``systemd-analyze security --offline=true``: exposure <= 1.5;
- the udev rules run through udev's own parser and rule engine (``udevadm
  test`` in a private mount namespace, with a fake rule standing in for the
  ``usb_id`` builtin's USB ids, since there is no USB device here);
- the agent's imports and cryptography under ``prctl(PR_SET_MDWE)``, the
  kernel rule behind ``MemoryDenyWriteExecute=yes``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "kiosk-agent.service"
TMPFILES = ROOT / "systemd" / "kiosk-agent.conf"
RULES = ROOT / "systemd" / "99-kiosk.rules"
SHIPPED_EXEC = "/opt/kiosk-agent/bin/kiosk-agent"
TIMEOUT = 120


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package: {'udev' if name == 'udevadm' else 'systemd'})")
    return path


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kw)  # type: ignore[call-overload]


# --- unit ------------------------------------------------------------------

def test_unit_verify_is_clean(tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("kiosk-agent")
    assert binary.exists(), f"{binary}: install the checkout (pip install -e .) first"
    shipped = UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} " in shipped
    copy = tmp_path / UNIT.name
    copy.write_text(shipped.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={binary} "))
    # The copy differs from the shipped unit in the ExecStart path only.
    diff = [(a, b) for a, b in zip(shipped.splitlines(), copy.read_text().splitlines()) if a != b]
    assert len(diff) == 1 and diff[0][0].startswith("ExecStart=")
    result = _run([_tool("systemd-analyze"), "verify", str(copy)])
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and out == "", out


def test_renewal_units_verify_cleanly(tmp_path: Path) -> None:
    provision = Path(sys.executable).with_name("kiosk-provision")
    shipped = (ROOT / "systemd" / "kiosk-agent-renew.service").read_text()
    assert "ExecStart=/opt/kiosk-agent/bin/kiosk-provision renew" in shipped
    service = tmp_path / "kiosk-agent-renew.service"
    service.write_text(shipped.replace("ExecStart=/opt/kiosk-agent/bin/kiosk-provision ",
                                       f"ExecStart={provision} "))
    timer = tmp_path / "kiosk-agent-renew.timer"
    shutil.copy(ROOT / "systemd" / "kiosk-agent-renew.timer", timer)
    result = _run([_tool("systemd-analyze"), "verify", str(service), str(timer)])
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and out == "", out


def test_unit_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # Proves the check above can fail: a misspelt key is reported.
    binary = Path(sys.executable).with_name("kiosk-agent")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={binary} ")
                    .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = _run([_tool("systemd-analyze"), "verify", str(copy)])
    assert "NoNewPrivilege" in result.stdout + result.stderr


def test_unit_security_exposure_at_most_1_5() -> None:
    result = _run([_tool("systemd-analyze"), "security", "--offline=true", "--threshold=15", str(UNIT)])
    match = re.search(r"Overall exposure level for kiosk-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security --offline=true: exposure {exposure}")
    assert exposure <= 1.5, result.stdout
    assert result.returncode == 0, f"--threshold=15 failed at exposure {exposure}"


def test_unit_keeps_the_settings_the_agent_relies_on() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    one = {k: v[-1] for k, v in settings.items()}
    assert one["Type"] == "notify" and one["Restart"] == "always"
    assert one["RestartPreventExitStatus"] == "78"       # agent.cli EX_CONFIG
    assert one["User"] == "kiosk-agent" and one["MemoryDenyWriteExecute"] == "yes"
    assert one["ProtectSystem"] == "strict"
    # The local API token's directory for the kiosk screen ('-': absent on a kiosk without one).
    assert settings["ReadWritePaths"] == ["/var/lib/kiosk-agent /etc/kiosk-agent", "-/run/kiosk-ui"]
    assert one["CapabilityBoundingSet"] == "" and one["DevicePolicy"] == "closed"
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    allowed = {v.split()[0] for v in settings["DeviceAllow"]}
    for needed in ("char-ttyUSB", "char-ttyACM", "/dev/ttyAMA0", "/dev/serial0", "/dev/gpiomem",
                   *(f"/dev/gpiomem{i}" for i in range(5)), "char-gpiochip", "char-video4linux"):
        assert needed in allowed, needed
    from agent.cli import EX_CONFIG
    assert EX_CONFIG == 78


def test_tmpfiles_entry_is_accepted(tmp_path: Path) -> None:
    # systemd-tmpfiles resolves users inside --root, so the staged root gets
    # the service user the way kiosk-provision creates it on a kiosk.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nkiosk-agent:x:990:990::/var/lib/kiosk-agent:/usr/sbin/nologin\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nkiosk-agent:x:990:\n")
    result = _run([_tool("systemd-tmpfiles"), "--create", f"--root={tmp_path}", str(TMPFILES)])
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    keys = tmp_path / "etc" / "kiosk-agent" / "keys"
    assert keys.is_dir() and (keys.stat().st_mode & 0o777) == 0o700 and keys.stat().st_uid == 990
    assert ((tmp_path / "etc" / "kiosk-agent").stat().st_mode & 0o777) == 0o750


# --- udev rules --------------------------------------------------------------

def _udev_links(tmp_path: Path, vendor: str | None, model: str | None, *, extra: str = "") -> str:
    """Run udev's rule engine on tty0 with our rules and fake USB ids; return udevadm's output.

    Everything udev writes (/dev links, /run/udev) goes to tmpfs mounts that
    exist only inside the private mount namespace.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    _tool("udevadm")        # fail clearly when the udev package is missing
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES, rules / RULES.name)
    fake = 'SUBSYSTEM=="tty", KERNEL=="tty0"'
    if vendor:
        fake += f', ENV{{ID_VENDOR_ID}}="{vendor}", ENV{{ID_MODEL_ID}}="{model}"'
    (rules / "50-fake-usb-id.rules").write_text(fake + extra + "\n")
    script = textwrap.dedent(f"""\
        set -e
        mkdir -p /etc/udev/rules.d
        mount --bind {rules} /etc/udev/rules.d
        mount -t tmpfs tmpfs /dev
        mount -t tmpfs tmpfs /run
        udevadm test --action=add /sys/class/tty/tty0 2>&1
        ls /dev/kiosk 2>/dev/null | sed 's/^/KIOSKLINK /' || true
        """)
    result = _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    if result.returncode != 0 and "Operation not permitted" in result.stdout + result.stderr:
        pytest.skip("mount namespaces are not permitted here")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def test_udev_rules_parse_cleanly(tmp_path: Path) -> None:
    out = _udev_links(tmp_path, None, None)
    ours = [line for line in out.splitlines() if "99-kiosk.rules" in line]
    assert any("Reading rules file" in line for line in ours), out[-2000:]
    problems = [line for line in ours if "Reading rules file" not in line]
    assert problems == [], problems
    assert "KIOSKLINK" not in out          # an unknown device gets no kiosk name


def test_udev_parser_check_can_fail(tmp_path: Path) -> None:
    # The same harness reports a bad key in a rules file: the check above is real.
    out = _udev_links(tmp_path, None, None, extra=', FOO=="bar"')
    assert "Invalid key 'FOO'" in out


@pytest.mark.parametrize(("vendor", "model", "role"), [
    ("2e8a", "0005", "coproc"),     # RP2040 running MicroPython
    ("2e8a", "000a", "coproc"),     # RP2040, Pico SDK stdio
    ("10c4", "ea60", "idcard"),     # CP210x
    ("0403", "6001", "idcard"),     # FT232R
    ("067b", "2303", "printer"),    # PL2303
    ("1a86", "7523", "scanner"),    # CH340
    ("1a86", "55d4", "scanner"),    # CH9102
])
def test_udev_rules_name_each_role(tmp_path: Path, vendor: str, model: str, role: str) -> None:
    out = _udev_links(tmp_path, vendor, model)
    assert f"KIOSKLINK {role}" in out.splitlines(), out[-2000:]
    assert len([line for line in out.splitlines() if line.startswith("KIOSKLINK")]) == 1


def test_udev_rules_follow_the_pi_serial0_uart(tmp_path: Path) -> None:
    # Raspberry Pi OS's 99-com.rules names the header UART serial0; ours follows it.
    out = _udev_links(tmp_path, None, None, extra=', SYMLINK+="serial0"')
    assert "KIOSKLINK coproc" in out.splitlines(), out[-2000:]


# --- W^X: the agent under the kernel rule of MemoryDenyWriteExecute=yes ---------

MDWE_CHILD = r'''
import ctypes, importlib, mmap, pkgutil, sys
PR_SET_MDWE, PR_GET_MDWE, MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("MDWE-UNSUPPORTED", ctypes.get_errno()); sys.exit(3)
assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) & MDWE_REFUSE_EXEC_GAIN
try:   # the rule is really on: a writable+executable mapping is refused
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("W+X mapping allowed: MDWE is not in force"); sys.exit(4)
except OSError:
    pass

imported = []
for top in ("agent", "hal", "fleet", "provisioning"):
    pkg = importlib.import_module(top)
    imported.append(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + "."):
        if info.name.endswith(".__main__"):   # runs the CLI when imported
            continue
        importlib.import_module(info.name)
        imported.append(info.name)

import sqlite3, ssl, serial, paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography import x509

sk = Ed25519PrivateKey.generate()
sk.public_key().verify(sk.sign(b"tx"), b"tx")
a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
shared = a.exchange(b.public_key())
assert shared == b.exchange(a.public_key())
key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"kiosk").derive(shared)
nonce = b"\0" * 12
assert AESGCM(key).decrypt(nonce, AESGCM(key).encrypt(nonce, b"card", b"ad"), b"ad") == b"card"
tls = ec.generate_private_key(ec.SECP256R1())
csr = (x509.CertificateSigningRequestBuilder()
       .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "k-0001")]))
       .sign(tls, hashes.SHA256()))
assert csr.is_signature_valid

db = sqlite3.connect(":memory:")
db.execute("PRAGMA journal_mode=WAL"); db.execute("create table t(x)")
db.execute("insert into t values (1)"); db.commit()
ctx = ssl.create_default_context(); ctx.minimum_version = ssl.TLSVersion.TLSv1_2
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mdwe", protocol=mqtt.MQTTv5)
client.tls_set_context(ctx)
port = serial.serial_for_url("loop://", timeout=1)
port.write(b"\x1b@"); assert port.read(2) == b"\x1b@"
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)   # libffi trampolines
assert cb(1) == 2
print("MDWE-OK", len(imported), " ".join(imported))
'''


def _kernel_at_least(major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def test_agent_imports_and_crypto_under_mdwe() -> None:
    if not _kernel_at_least(6, 3):
        pytest.skip(f"PR_SET_MDWE needs Linux >= 6.3; this is {os.uname().release}")
    result = _run([sys.executable, "-c", MDWE_CHILD], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("MDWE-OK"), result.stdout
    names = last.split()[2:]
    for needed in ("agent", "agent.config", "agent.runtime.daemon", "hal", "fleet", "provisioning",
                   "fleet.ca", "provisioning.cli"):
        assert needed in names, f"{needed} was not imported under MDWE"


SANDBOX_PROBE = r"""
import errno, mmap, os, socket, ssl, sqlite3
def attempt(name, call):
    try:
        call()
        print(name, "allowed")
    except OSError as exc:
        print(name, errno.errorcode[exc.errno])
attempt("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))       # @resources: denied
attempt("AF_PACKET", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
attempt("AF_NETLINK", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close())
attempt("AF_INET", lambda: socket.socket(socket.AF_INET).close())
attempt("AF_UNIX", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close())   # sd_notify
attempt("WX", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
"""


def test_unit_sandbox_emulation_is_in_force(tmp_path: Path) -> None:
    """The rules tests/system/sandbox.py derives from the unit really bite (so the agent test means something)."""
    from sandbox import sandbox_argv

    result = _run(sandbox_argv(UNIT, tmp_path, [sys.executable, "-c", SANDBOX_PROBE]))
    assert result.returncode == 0, result.stdout + result.stderr
    seen = dict(line.split() for line in result.stdout.splitlines())
    assert seen["setpriority"] == "EPERM" and seen["AF_PACKET"] == "EPERM" and seen["AF_NETLINK"] == "EPERM"
    assert seen["AF_INET"] == "allowed" and seen["AF_UNIX"] == "allowed"
    if _kernel_at_least(6, 3):
        assert seen["WX"] == "EACCES"


def test_agent_imports_and_crypto_under_the_unit_sandbox(tmp_path: Path) -> None:
    """The same imports and crypto as above, under the unit's seccomp filter and address families too."""
    from sandbox import sandbox_argv

    result = _run(sandbox_argv(UNIT, tmp_path, [sys.executable, "-c", MDWE_CHILD]), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("MDWE-OK")


POLKIT_RULES = ROOT / "systemd" / "kiosk-agent-polkit.rules"
LOGIN1_POLICY = Path("/usr/share/polkit-1/actions/org.freedesktop.login1.policy")

# polkitd's rule API, enough to run our file: addRule, Result, and the
# (action, subject) pairs it would ask about.
_POLKIT_HARNESS = r"""
const fs = require("fs");
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no", AUTH_ADMIN: "auth_admin"},
                addRule: (fn) => rules.push(fn), log: () => {}};
new Function("polkit", fs.readFileSync(process.argv[2], "utf8"))(polkit);
const asks = JSON.parse(process.argv[3]);
console.log(JSON.stringify(asks.map(([action, user]) => {
  for (const rule of rules) {
    const r = rule({id: action}, {user: user, active: false, local: false});
    if (r !== undefined) return r;
  }
  return null;
})));
"""


def test_polkit_rule_lets_the_service_user_reboot_and_nothing_else(tmp_path: Path) -> None:
    import json
    node = shutil.which("node")
    assert node, "node is needed to evaluate the polkit rule (make test installs nodejs)"
    asks = [("org.freedesktop.login1.reboot", "kiosk-agent"),
            ("org.freedesktop.login1.reboot-multiple-sessions", "kiosk-agent"),
            ("org.freedesktop.login1.reboot-ignore-inhibit", "kiosk-agent"),
            ("org.freedesktop.login1.power-off", "kiosk-agent"),
            ("org.freedesktop.systemd1.manage-units", "kiosk-agent"),
            ("org.freedesktop.login1.reboot", "www-data")]
    harness = tmp_path / "harness.js"
    harness.write_text(_POLKIT_HARNESS)
    out = subprocess.run([node, str(harness), str(POLKIT_RULES), json.dumps(asks)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["yes", "yes", None, None, None, None]
    # The action ids are the ones systemd-logind really asks about.
    if LOGIN1_POLICY.exists():
        policy = LOGIN1_POLICY.read_text()
        for action, _user in asks[:2]:
            assert f'<action id="{action}">' in policy, action
