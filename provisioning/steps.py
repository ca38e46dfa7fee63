# SPDX-License-Identifier: Apache-2.0
"""The provisioning steps, in order, each idempotent.

    answers = Answers(kiosk_id="k-0001", fleet="north", site="Outlet 37",
                      mqtt_url="mqtts://broker.example:8883", bundle=Path("k-0001.bundle.pem"))
    result = provision(answers, Layout(Path("/tmp/stage")), Reporter())
    result.exit_code        # 0 done, 1 failed, 3 waiting for the certificate

Re-running with the same answers changes nothing on disk but the timestamp
in the log: a file is written only when its content differs, and modes and
owners are set only when they differ.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from agent.errors import ConfigError
from provisioning import keys as kk
from provisioning.errors import (
    AnswerError,
    EnrolError,
    InstallError,
    SelftestFailed,
)
from provisioning.layout import (
    RENEW_SERVICE,
    RENEW_TIMER,
    SERVICE_USER,
    UNIT_NAME,
    Layout,
)

__all__ = [
    "SERVICE_GROUPS",
    "SHIPPED_EXEC",
    "TRUST_MARK",
    "Answers",
    "Owner",
    "Reporter",
    "Result",
    "config_text",
    "provision",
    "write_if_changed",
]

SHIPPED_EXEC = "/opt/kiosk-agent/bin/kiosk-agent"
PACKAGED_UNIT_DIR = "/lib/systemd/system"     # where the Debian package puts its units
SCREEN_TOKEN = "/run/kiosk-ui/token"           # the local API token where kiosk-screen.service reads it
SERVICE_GROUPS = ("dialout", "gpio", "video")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
RENEW_BEFORE_DAYS = 60
_FILES = ("bundle", "claim", "ca_dir", "broker_ca")      # fleet_trust: fleet_trust_text says why


@dataclasses.dataclass
class Answers:
    """Everything the installer decides; flags, an answer file or prompts fill it."""

    kiosk_id: str = ""
    fleet: str = ""
    site: str = ""
    mqtt_url: str = ""
    mode: str = "production"
    backend: str = "real"
    keepalive: int = 30
    health_interval_s: int = 60
    bundle: Path | None = None          # from `kioskctl ca sign` (offline enrolment)
    ca_dir: Path | None = None          # a fleet CA directory on this machine (rehearsals, tests)
    claim: Path | None = None           # a claim file from `kioskctl ca claim` (enrolment over MQTT)
    broker_ca: Path | None = None       # CA of the broker's server certificate, if not the fleet CA
    rotate_keys: bool = False
    staged_paths: bool = False          # agent.toml points inside --root, so the agent can run from it
    agent_bin: str | None = None
    selftest: bool = True
    print_slip: bool = True
    printer_url: str | None = None      # default /dev/kiosk/printer on a kiosk; staging prints only if given
    fleet_trust: Path | None = None     # the fleet office's keys: [[commands.operators]], [evidence]
    prepare_board: bool = True          # UART, serial console, watchdog, blanking, screen, GPIO (provisioning.board)
    reboot: bool = True                 # reboot at the end when the board preparation needs it
    kept_trust: str = ""                # without fleet_trust: the trust the current agent.toml holds, kept

    def problem(self, name: str) -> str | None:
        """What is wrong with one answer (the message names its flag), or None: asked at the question too."""
        value = getattr(self, name)
        if name in ("kiosk_id", "fleet"):
            flag = "--kiosk-id" if name == "kiosk_id" else "--fleet"
            if not _NAME.match(value or ""):
                return f"{flag}: got {value!r}, expected lower-case letters, digits or '-', 1 to 64"
            if name == "kiosk_id" and (value == "enrol" or value.startswith("claim-")):
                return f"--kiosk-id: {value!r} is reserved for enrolment"
        elif name == "site" and not (value or "").strip():
            return "--site: expected the outlet's name and address"
        elif name == "mqtt_url":
            if not re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", value or ""):
                return f"--mqtt-url: got {value!r}, expected mqtts://host:8883"
            if self.mode == "production" and not value.startswith("mqtts://"):
                return "--mqtt-url: production kiosks use mutual TLS (mqtts://)"
        elif name in _FILES and value is not None:
            # Checked before any step runs: a mistyped path must not surface after the keys are made.
            kind = "directory" if name == "ca_dir" else "file"
            if not (value.is_dir() if kind == "directory" else value.is_file()):
                return f"--{name.replace('_', '-')} {value}: no such {kind}"
        return None

    def validate(self) -> None:
        for name in ("kiosk_id", "fleet", "site", "mqtt_url", *_FILES):
            problem = self.problem(name)
            if problem:
                raise AnswerError(problem)
        if self.mode not in ("production", "development"):
            raise AnswerError(f"--mode: got {self.mode!r}, expected production or development")
        if self.backend not in ("real", "sim"):
            raise AnswerError(f"--backend: got {self.backend!r}, expected real or sim")
        if self.fleet_trust is not None:
            # Before any step runs: a bad key in it must not surface after enrolment.
            import tomllib

            from agent.config import parse_config
            try:
                parse_config(tomllib.loads(config_text(self, Layout())))
            except ConfigError as exc:
                raise AnswerError(f"--fleet-trust {self.fleet_trust}: {exc}") from None


class Reporter:
    """Progress on the terminal: ``[3/8] Keys ... created``."""

    def __init__(self, out: TextIO | None = None, total: int = 8) -> None:
        self.out = out or sys.stdout
        self.total = total
        self.n = 0

    def step(self, title: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {title}", file=self.out, flush=True)

    def line(self, text: str) -> None:
        print(f"      {text}", file=self.out, flush=True)


@dataclasses.dataclass
class Result:
    exit_code: int = 0
    state: list[str] = dataclasses.field(default_factory=list)    # the log's body (no timestamps)
    messages: list[str] = dataclasses.field(default_factory=list)
    reboot_reasons: list[str] = dataclasses.field(default_factory=list)   # board changes applied at boot


# --- small idempotent file operations ---------------------------------------

class Owner:
    """Sets mode and owner only when they differ; without the service user, records the intent."""

    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        try:
            pw = pwd.getpwnam(SERVICE_USER)
            self.uid: int | None = pw.pw_uid
            self.gid: int | None = pw.pw_gid
        except KeyError:
            self.uid = self.gid = None

    def apply(self, path: Path, mode: int, *, user: bool = True) -> str:
        st = path.stat()
        if st.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
        owner = f"{SERVICE_USER}:{SERVICE_USER}" if user else f"root:{SERVICE_USER}"
        if self.uid is not None and self.gid is not None:
            uid = self.uid if user else 0
            if (st.st_uid, st.st_gid) != (uid, self.gid):
                os.chown(path, uid, self.gid)
        else:
            owner += " (intended; user absent here)"
        return f"{self.lay.target(path)} mode={mode:04o} owner={owner}"


def write_if_changed(path: Path, data: bytes, mode: int, *, keep_prev: bool = False) -> str:
    """``created`` / ``updated`` / ``unchanged``; with ``keep_prev`` an update keeps ``<name>.prev``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if path.read_bytes() == data:
            return "unchanged"
        if keep_prev:
            shutil.copy2(path, path.with_name(path.name + ".prev"))
        status = "updated"
    else:
        status = "created"
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return status


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{' '.join(argv)}: {exc}") from None


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


# --- agent.toml -----------------------------------------------------------------

def _q(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def config_text(a: Answers, lay: Layout) -> str:
    """The agent.toml for these answers (paths on the kiosk, or inside the root with staged_paths)."""
    def path(p: Path) -> str:
        return _q(str(p if a.staged_paths else lay.target(p)))

    lines = [
        "# Written by kiosk-provision from its answers; re-running it rewrites this file",
        "# (the previous one is kept as agent.toml.prev). Checked by: kiosk-agent check-config",
        "[kiosk]",
        f"id = {_q(a.kiosk_id)}",
        f"fleet = {_q(a.fleet)}",
        f"site = {_q(a.site)}",
        f"mode = {_q(a.mode)}",
        "",
        "[mqtt]",
        f"url = {_q(a.mqtt_url)}",
        f"keepalive = {a.keepalive}",
    ]
    if a.mqtt_url.startswith("mqtts://"):
        lines += ["", "[mqtt.tls]", f"ca_file = {path(lay.ca)}", f"cert_file = {path(lay.tls_crt)}",
                  f"key_file = {path(lay.tls_key)}"]
    lines += ["", "[storage]", f"dir = {path(lay.storage)}", "", "[keys]",
              f"signing_key = {path(lay.signing_key)}", "", "[hal]", f"backend = {_q(a.backend)}", "",
              "[health]", f"interval_s = {a.health_interval_s}"]
    for device in ("idcard", "printer", "scanner", "coproc"):
        lines += ["", f"[devices.{device}]"]
        if a.backend == "real":
            # udev's stable names (systemd/99-kiosk.rules); the sim backend serves its own ptys.
            lines.append(f"url = {_q('/dev/kiosk/' + device)}")
    lines += ["", "[devices.camera]", "", "[devices.gpio]"]
    if lay.p(f"{PACKAGED_UNIT_DIR}/kiosk-screen.service").exists():
        # The package's kiosk screen reads the token there (kiosk-screen.tmpfiles: setgid kiosk-ui).
        lines += ["", "[local_api]", f"token_file = {_q(SCREEN_TOKEN)}"]
    text = "\n".join(lines) + "\n"
    if a.fleet_trust is not None:
        text += f"\n{TRUST_MARK}{a.fleet_trust.name}:\n" + fleet_trust_text(a.fleet_trust)
    elif a.kept_trust:
        text += f"\n{TRUST_MARK}{a.kept_trust}"
    return text


TRUST_MARK = "# From the fleet trust file "
TRUST_TABLES = ("commands", "evidence")


def fleet_trust_text(path: Path) -> str:
    """The fleet trust file's text, checked to hold only the tables it may set.

    The fleet office writes it once from ``kioskctl keys init`` (operators,
    ``--role backoffice``) and ``kioskctl evidence-keygen``; every kiosk gets
    it verbatim, so a provisioned kiosk trusts the fleet's keys from its first
    start (a signed ``config/desired`` can only come from a key it already trusts).
    """
    import tomllib
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AnswerError(f"--fleet-trust {path}: {exc}") from None
    extra = sorted(set(data) - set(TRUST_TABLES))
    if extra:
        raise AnswerError(f"--fleet-trust {path}: only {', '.join(TRUST_TABLES)} tables belong there, "
                          f"not {', '.join(extra)}")
    return text if text.endswith("\n") else text + "\n"


# --- the steps ------------------------------------------------------------------------

def _check_system(lay: Layout, rep: Reporter, res: Result) -> None:
    rep.step("Checking the system and preparing the board")
    # (Python >= 3.11 is a given: this module would not import on an older one.)
    os_name = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    rep.line(f"OS: {os_name}; Python {platform.python_version()}; machine {platform.machine()}")
    if "bookworm" not in os_name and "Debian" not in os_name:
        res.messages.append(f"warning: tested on Debian bookworm / Raspberry Pi OS, this is {os_name}")
    serial = sorted(str(p) for pattern in ("kiosk/*", "ttyUSB*", "ttyACM*", "ttyAMA0", "serial0")
                    for p in Path("/dev").glob(pattern))
    rep.line(f"serial devices: {', '.join(serial) if serial else 'none found'}")
    groups = [g for g in SERVICE_GROUPS if _group_exists(g)]
    rep.line(f"groups present: {', '.join(groups) or 'none'} (of {', '.join(SERVICE_GROUPS)})")
    if lay.staging:
        rep.line("staging root: the console and watchdog checks apply to the kiosk, skipped here")
        return
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    if re.search(r"console=(serial0|ttyAMA0|ttyS0)", cmdline):
        res.messages.append("warning: a login console runs on the serial UART (console=serial0 in "
                            "/boot/firmware/cmdline.txt); disable it: raspi-config > Interface > Serial")
    wd = Path("/sys/class/watchdog/watchdog0")
    if wd.exists():
        state = (wd / "state").read_text().strip() if (wd / "state").exists() else "unknown"
        timeout = (wd / "timeout").read_text().strip() if (wd / "timeout").exists() else "?"
        rep.line(f"hardware watchdog: {state}, timeout {timeout} s")
        if state != "active":
            res.messages.append("warning: the hardware watchdog is not active: set RuntimeWatchdogSec=15s in "
                                "/etc/systemd/system.conf (15 s at most on kernels before 6.8) and reboot")
    else:
        res.messages.append("warning: no hardware watchdog device (/sys/class/watchdog/watchdog0)")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _board(a: Answers, lay: Layout, rep: Reporter, res: Result) -> None:
    """Board preparation (provisioning.board), reported under step 1."""
    if not a.prepare_board:
        rep.line("board preparation: skipped (--no-board)")
        return
    from provisioning.board import prepare_board
    report = prepare_board(lay)
    for line in report.ok:
        rep.line(f"board: {line}")
    for reason in report.pending:
        rep.line(f"board: done by an earlier run, waiting for the reboot: {reason}")
    for change in report.changes:
        done = "done" if change.applied else "LEFT TO DO on the kiosk"
        rep.line(f"board: {change.what}: {done}" + (" (at the next boot)" if change.reboot else ""))
        res.state.append(f"board {change.step}: {change.what}" + ("" if change.applied else " (left to do)"))
    res.reboot_reasons = report.reboot_reasons()
    # The running kernel still has the old settings: its warnings are answered by the reboot.
    if report.changed("serial-console"):
        res.messages = [m for m in res.messages if "login console runs on the serial" not in m]
    if report.changed("watchdog"):
        res.messages = [m for m in res.messages if "hardware watchdog is not active" not in m]


def _service_user(lay: Layout, rep: Reporter, res: Result) -> None:
    rep.step(f"Service user {SERVICE_USER}")
    groups = [g for g in SERVICE_GROUPS if _group_exists(g)]
    if lay.staging:
        # Never touch the machine's users for a staging root; the kiosk gets them at install.
        exists = _user_exists()
        rep.line(f"staging root: not creating users; intended: {SERVICE_USER} in {', '.join(SERVICE_GROUPS)}"
                 + (" (the user exists here, so files are chowned to it)" if exists else ""))
        res.state.append(f"user {SERVICE_USER} groups={','.join(SERVICE_GROUPS)} (intended)")
        return
    if not _user_exists():
        r = _run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/kiosk-agent", "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", "kiosk-agent service", SERVICE_USER])
        if r.returncode != 0:
            raise InstallError(f"useradd {SERVICE_USER}: {r.stderr.strip()}")
        rep.line(f"created system user {SERVICE_USER}")
    member_of = {g.gr_name for g in grp.getgrall() if SERVICE_USER in g.gr_mem}
    for g in groups:
        if g not in member_of:
            r = _run(["usermod", "--append", "--groups", g, SERVICE_USER])
            if r.returncode != 0:
                raise InstallError(f"usermod -aG {g} {SERVICE_USER}: {r.stderr.strip()}")
            rep.line(f"added to group {g}")
    rep.line(f"{SERVICE_USER} in groups: {', '.join(groups)}")
    res.state.append(f"user {SERVICE_USER} groups={','.join(groups)}")


def _user_exists() -> bool:
    try:
        pwd.getpwnam(SERVICE_USER)
        return True
    except KeyError:
        return False


def _dirs(lay: Layout, own: Owner, res: Result) -> None:
    # storage 0700: the agent makes its state private at every start (agent/store/database.py), so
    # anything wider would be undone there and flipped back by every re-run here.
    for path, mode, user in ((lay.etc, 0o750, False), (lay.keys, 0o700, True), (lay.storage, 0o700, True)):
        path.mkdir(parents=True, exist_ok=True)
        res.state.append(own.apply(path, mode, user=user))


def _keys(a: Answers, lay: Layout, own: Owner, rep: Reporter, res: Result) -> tuple[object, object]:
    rep.step("Device keys (generated here, never leave the kiosk)")
    signing, new_s = kk.ensure_signing_key(lay.signing_key, rotate=a.rotate_keys)
    tls, new_t = kk.ensure_tls_key(lay.tls_key, rotate=a.rotate_keys)
    rep.line(f"signing key (Ed25519): {'created' if new_s else 'kept'}, fingerprint {kk.signing_fingerprint(signing)}")
    rep.line(f"TLS key (EC P-256): {'created' if new_t else 'kept'}")
    write_if_changed(lay.signing_pub, (kk.signing_public_b64(signing) + "\n").encode(), 0o644)
    if not (lay.tls_csr.exists() and kk.csr_matches(lay.tls_csr.read_bytes(), tls, a.kiosk_id)):
        # A CSR is re-made only for a new key or id: its ECDSA signature differs every time.
        write_if_changed(lay.tls_csr, kk.make_csr(tls, a.kiosk_id), 0o644)
        rep.line(f"CSR (CN={a.kiosk_id}) written: {lay.tls_csr}")
    for path, mode in ((lay.signing_key, 0o600), (lay.tls_key, 0o600), (lay.signing_pub, 0o644),
                       (lay.tls_csr, 0o644)):
        res.state.append(own.apply(path, mode) + f" sha256={_sha(path)}")
    res.state.append(f"signing public key {kk.signing_public_b64(signing)}")
    return signing, tls


def _enrol(a: Answers, lay: Layout, tls: object, own: Owner, rep: Reporter, res: Result) -> kk.Enrolled | None:
    rep.step("Enrolment (TLS client certificate)")
    if not a.mqtt_url.startswith("mqtts://"):
        rep.line("mqtt:// (development): no certificate used")
        return None
    pem: bytes | None = None
    if a.bundle is not None:
        try:
            pem = a.bundle.read_bytes()
        except OSError as exc:
            raise EnrolError(f"--bundle {a.bundle}: {exc}") from None
        source = f"the bundle {a.bundle}"
    elif a.claim is not None and _existing(lay, tls, a) is None:
        from provisioning.claim import enrol_over_mqtt
        try:
            claim_pem = a.claim.read_bytes()
        except OSError as exc:
            raise EnrolError(f"--claim {a.claim}: {exc}") from None
        rep.line(f"asking the fleet's enrolment service over {a.mqtt_url} …")
        pem = enrol_over_mqtt(a.mqtt_url, claim_pem, a.fleet, a.kiosk_id, lay.tls_csr.read_bytes())
        source = "the enrolment service (claim)"
    elif a.ca_dir is not None:
        enrolled_now = _existing(lay, tls, a)
        if enrolled_now is not None:
            pem = enrolled_now.cert_pem + enrolled_now.ca_pem
            source = "the certificate already installed"
        else:
            # A CA on this machine: rehearsals and tests. On a kiosk the CA key is never present.
            from fleet.ca import load_ca, sign_csr
            pem = sign_csr(load_ca(a.ca_dir), lay.tls_csr.read_bytes(), kiosk_id=a.kiosk_id).pem()
            source = f"the CA in {a.ca_dir}"
    else:
        enrolled_now = _existing(lay, tls, a)
        if enrolled_now is None:
            rep.line(f"waiting for the certificate: take {lay.target(lay.tls_csr)} to the fleet office "
                     f"(kioskctl ca sign tls.csr) and re-run with --bundle FILE")
            res.exit_code = max(res.exit_code, 3)
            res.state.append("certificate: pending")
            return None
        pem = enrolled_now.cert_pem + enrolled_now.ca_pem
        source = "the certificate already installed"
    enrolled = kk.check_bundle(pem, tls, a.kiosk_id)  # type: ignore[arg-type]
    status = write_if_changed(lay.tls_crt, enrolled.cert_pem, 0o644)
    write_if_changed(lay.fleet_ca, enrolled.ca_pem, 0o644)
    # The broker's server certificate is usually from the fleet CA too; --broker-ca when not.
    try:
        ca_pem = a.broker_ca.read_bytes() if a.broker_ca else enrolled.ca_pem
    except OSError as exc:
        raise EnrolError(f"--broker-ca {a.broker_ca}: {exc}") from None
    write_if_changed(lay.ca, ca_pem, 0o644)
    left = enrolled.cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    rep.line(f"certificate {status} from {source}: CN={a.kiosk_id}, valid until "
             f"{enrolled.cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days)")
    if left.days < RENEW_BEFORE_DAYS:
        res.messages.append(f"warning: the certificate expires in {left.days} days; renew it")
    for path in (lay.tls_crt, lay.fleet_ca, lay.ca):
        res.state.append(own.apply(path, 0o644) + f" sha256={_sha(path)}")
    res.state.append(f"certificate fingerprint {kk.cert_fingerprint(enrolled.cert)} "
                     f"until {enrolled.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    return enrolled


def _existing(lay: Layout, tls: object, a: Answers) -> kk.Enrolled | None:
    if not (lay.tls_crt.exists() and lay.fleet_ca.exists()):
        return None
    try:
        return kk.check_bundle(lay.tls_crt.read_bytes() + lay.fleet_ca.read_bytes(), tls, a.kiosk_id)  # type: ignore[arg-type]
    except EnrolError:
        return None     # other key / expired / broker CA differs: needs a new bundle


def _config(a: Answers, lay: Layout, own: Owner, rep: Reporter, res: Result) -> None:
    rep.step("Configuration (agent.toml)")
    text = config_text(a, lay)
    import tomllib

    from agent.config import parse_config
    parse_config(tomllib.loads(text), source=lay.config)   # the agent's own validation, before writing
    status = write_if_changed(lay.config, text.encode(), 0o640, keep_prev=True)
    rep.line(f"{lay.config}: {status}" + (" (previous kept as agent.toml.prev)" if status == "updated" else ""))
    if a.kept_trust and a.fleet_trust is None:
        rep.line("fleet trust: kept from the current agent.toml (give --fleet-trust to replace it)")
        res.state.append(f"fleet trust: {a.kept_trust.partition(':')[0]} (kept)")
    elif a.fleet_trust is None and a.mode == "production":
        rep.line("WARNING: no --fleet-trust file: this kiosk trusts no operator key, so it refuses every "
                 "fleet command and configuration, every ID-card service and every tx/ack until it is "
                 "provisioned again with one")
        res.state.append("fleet trust: none")
    elif a.fleet_trust is not None:
        res.state.append(f"fleet trust: {a.fleet_trust.name}")
    res.state.append(own.apply(lay.config, 0o640) + f" sha256={_sha(lay.config)}")


def _agent_bin(a: Answers, lay: Layout) -> str:
    if a.agent_bin:
        return a.agent_bin
    if lay.staging:
        return SHIPPED_EXEC
    here = Path(sys.executable).with_name("kiosk-agent")
    return str(here if here.exists() else (shutil.which("kiosk-agent") or SHIPPED_EXEC))


def _enable(lay: Layout, unit: Path, wants: Path, rep: Reporter, res: Result) -> None:
    # Enabling is this one symlink, as systemctl makes it; never systemctl for a staging root.
    wants.parent.mkdir(parents=True, exist_ok=True)
    target = str(lay.target(unit))
    if not (wants.is_symlink() and os.readlink(wants) == target):
        if wants.is_symlink() or wants.exists():
            wants.unlink()
        wants.symlink_to(target)
        rep.line(f"enabled: {lay.target(wants)} -> {target}")
    else:
        rep.line(f"enabled (already): {unit.name}")
    res.state.append(f"{lay.target(wants)} -> {target}")


def _install_packaged(lay: Layout, rep: Reporter, res: Result) -> None:
    """The Debian package put the units and rules in their places: enable, never copy to /etc."""
    rep.line(f"installed by the kiosk-agent package ({PACKAGED_UNIT_DIR}, /usr/lib/tmpfiles.d, /lib/udev/rules.d)")
    for copy in (lay.unit, lay.renew_service, lay.renew_timer, lay.tmpfiles, lay.udev, lay.polkit):
        if copy.exists():
            # An earlier provisioning without the package left it: it would shadow the package's file.
            res.messages.append(f"warning: {lay.target(copy)} overrides the package's file; remove it unless "
                                "that is intended")
    unit = lay.p(f"{PACKAGED_UNIT_DIR}/{UNIT_NAME}")
    timer = lay.p(f"{PACKAGED_UNIT_DIR}/{RENEW_TIMER}")
    if lay.staging or not _systemd_running():
        _enable(lay, unit, lay.wants, rep, res)
        _enable(lay, timer, lay.renew_wants, rep, res)
        return
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME, RENEW_TIMER],
                 ["systemd-tmpfiles", "--create", "kiosk-agent.conf"]):
        r = _run(argv)
        if r.returncode != 0:
            raise InstallError(f"{' '.join(argv)}: {r.stderr.strip()}")
    _run(["systemctl", "start", RENEW_TIMER])
    rep.line("enabled with systemctl; tmpfiles applied")
    res.state.append(f"{UNIT_NAME} and {RENEW_TIMER} enabled (packaged)")


def _install(a: Answers, lay: Layout, own: Owner, rep: Reporter, res: Result) -> None:
    rep.step("systemd units, tmpfiles entry, udev rules, polkit rule")
    if lay.p(f"{PACKAGED_UNIT_DIR}/{UNIT_NAME}").exists():
        _install_packaged(lay, rep, res)
        return
    try:
        unit = Layout.shipped(UNIT_NAME).read_text()
        renew_unit = Layout.shipped(RENEW_SERVICE).read_text()
        renew_timer = Layout.shipped(RENEW_TIMER).read_bytes()
        tmpfiles = Layout.shipped("kiosk-agent.conf").read_bytes()
        rules = Layout.shipped("99-kiosk.rules").read_bytes()
        polkit = Layout.shipped("kiosk-agent-polkit.rules").read_bytes()
    except OSError as exc:
        raise InstallError(f"the shipped systemd files are missing: {exc}") from None
    binary = _agent_bin(a, lay)
    unit = unit.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={binary} ")
    provision_bin = str(Path(binary).with_name("kiosk-provision"))
    renew_unit = renew_unit.replace(f"ExecStart={Path(SHIPPED_EXEC).with_name('kiosk-provision')} ",
                                    f"ExecStart={provision_bin} ")
    changed = False
    for path, data in ((lay.unit, unit.encode()), (lay.renew_service, renew_unit.encode()),
                       (lay.renew_timer, renew_timer), (lay.tmpfiles, tmpfiles), (lay.udev, rules),
                       (lay.polkit, polkit)):
        status = write_if_changed(path, data, 0o644)
        changed |= status != "unchanged"
        rep.line(f"{lay.target(path)}: {status}")
        res.state.append(f"{lay.target(path)} sha256={_sha(path)}")
    res.state.append(f"ExecStart binary {binary}")
    if lay.staging or not _systemd_running():
        _enable(lay, lay.unit, lay.wants, rep, res)
        _enable(lay, lay.renew_timer, lay.renew_wants, rep, res)
        return
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME, RENEW_TIMER],
                 ["systemd-tmpfiles", "--create", str(lay.tmpfiles)]):
        r = _run(argv)
        if r.returncode != 0:
            raise InstallError(f"{' '.join(argv)}: {r.stderr.strip()}")
    _run(["systemctl", "start", RENEW_TIMER])
    if changed and shutil.which("udevadm") and Path("/run/udev/control").exists():
        _run(["udevadm", "control", "--reload"])
        _run(["udevadm", "trigger", "--subsystem-match=tty", "--action=add"])
        _run(["udevadm", "settle", "--timeout=10"])
    rep.line("enabled with systemctl; tmpfiles applied" + ("; udev rules reloaded" if changed else ""))
    res.state.append(f"{UNIT_NAME} and {RENEW_TIMER} enabled")


def _selftest(a: Answers, lay: Layout, rep: Reporter, res: Result) -> None:
    rep.step("Self-test (kiosk-agent selftest)")
    if not a.selftest:
        rep.line("skipped (--no-selftest)")
        res.state.append("selftest: skipped by the installer")
        return
    if res.reboot_reasons and not lay.staging:
        # The header UART and console change only at boot: a co-processor there cannot answer yet.
        rep.line("deferred to after the reboot the board preparation needs: sudo kiosk-agent selftest")
        res.state.append("selftest: deferred (reboot pending)")
        return
    if lay.staging and not a.staged_paths:
        rep.line("skipped: agent.toml points at the kiosk's paths; rehearse it with --staged-paths")
        res.state.append("selftest: skipped (staging root)")
        return
    here = Path(sys.executable).with_name("kiosk-agent")
    binary = str(here) if here.exists() else shutil.which("kiosk-agent")
    if binary is None:
        rep.line("skipped: kiosk-agent is not installed on this machine")
        res.state.append("selftest: skipped (no kiosk-agent)")
        return
    probe = _run([binary, "--help"], timeout=60)
    if "selftest" not in probe.stdout:
        rep.line("skipped: this kiosk-agent has no selftest command yet")
        res.state.append("selftest: skipped (not available)")
        return
    r = _run([binary, "selftest", "--config", str(lay.config)], timeout=180)
    for line in (r.stdout + r.stderr).strip().splitlines():
        rep.line(line)
    if r.returncode != 0:
        res.state.append("selftest: FAILED")
        raise SelftestFailed(f"the self-test failed (exit {r.returncode}): fix the device named above and "
                             "re-run kiosk-provision (docs/installing.md, 'When the self-test fails')")
    res.state.append("selftest: passed")
    if not lay.staging and _systemd_running():
        r = _run(["systemctl", "restart", UNIT_NAME])
        rep.line("service started" if r.returncode == 0 else f"systemctl restart failed: {r.stderr.strip()}")


def _slip(a: Answers, lay: Layout, signing: object, enrolled: kk.Enrolled | None, rep: Reporter,
          res: Result) -> None:
    rep.step("Commissioning slip")
    from provisioning.slip import print_slip, render_slip
    text, qr = render_slip(a, signing, enrolled)   # type: ignore[arg-type]
    status = write_if_changed(lay.slip, text.encode(), 0o644)
    rep.line(f"{lay.slip}: {status}")
    res.state.append(f"{lay.target(lay.slip)} sha256={_sha(lay.slip)}")
    if not a.print_slip:
        rep.line("not printed (--no-print)")
    elif a.printer_url:
        rep.line(print_slip(text, qr, a.printer_url))
    elif lay.staging:
        rep.line("staging root: not printed (give --printer URL to print); the slip is the text file above")
    elif a.backend != "real":
        rep.line("not printed (hal.backend = sim); the slip is the text file above")
    else:
        rep.line(print_slip(text, qr))


def provision(a: Answers, lay: Layout, rep: Reporter, *, now: Callable[[], dt.datetime] | None = None) -> Result:
    """Run every step; raise a ProvisionError (with its code) on the first that cannot complete."""
    a.validate()
    res = Result()
    lay.root.mkdir(parents=True, exist_ok=True)
    _check_system(lay, rep, res)
    _board(a, lay, rep, res)
    _service_user(lay, rep, res)
    own = Owner(lay)
    _dirs(lay, own, res)
    signing, tls = _keys(a, lay, own, rep, res)
    enrolled = _enrol(a, lay, tls, own, rep, res)
    _config(a, lay, own, rep, res)
    _install(a, lay, own, rep, res)
    try:
        _selftest(a, lay, rep, res)
    finally:
        _write_log(lay, res, now)
    _slip(a, lay, signing, enrolled, rep, res)
    _write_log(lay, res, now)
    for message in res.messages:
        print(message, file=rep.out)
    return res


def _write_log(lay: Layout, res: Result, now: Callable[[], dt.datetime] | None) -> None:
    stamp = (now or (lambda: dt.datetime.now(dt.UTC)))().strftime("%Y-%m-%dT%H:%M:%SZ")
    body = "\n".join([f"kiosk-provision {stamp}", *res.state, *res.messages]) + "\n"
    lay.log.parent.mkdir(parents=True, exist_ok=True)
    # Rewritten in place, not appended: a re-run leaves it differing only in
    # the timestamp (and leaves the directory's own mtime alone).
    fd = os.open(lay.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
