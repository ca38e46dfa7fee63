# SPDX-License-Identifier: Apache-2.0
"""kiosk-provision end to end, in staging roots, with the real tools.

    .venv/bin/python -m pytest tests/system/test_provision.py

The acceptance case: provision non-interactively into a staging root, start
the agent from that root against a mutual-TLS mosquitto, see its birth and
health; re-run the provisioning and find nothing changed but the timestamp
in its log. Plus: bundles that do not fit are refused (another kiosk's names
both ids), keys are kept unless rotated, the answer file works, a repeat
visit at the prompts is Enter everywhere, a bad answer is refused at its
question, wrong usage exits 2 before any step, decommission erases keys and
citizen data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mtlskit import Pki
from paho.mqtt.enums import CallbackAPIVersion
from sandbox import sandbox_argv

from agent.config import load_config
from agent.sim.devbroker import DevBroker
from fleet import ca as fca
from provisioning.keys import make_csr

WAIT = 60.0
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "kiosk-agent.service"
PROVISION = str(Path(sys.executable).with_name("kiosk-provision"))


def _user_exists() -> bool:
    import pwd

    try:
        pwd.getpwnam("kiosk-agent")
        return True
    except KeyError:
        return False


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _provision(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PROVISION, "--root", str(root), "--non-interactive", *args],
                            capture_output=True, text=True, timeout=240, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _basic(kiosk: str, url: str, ca_dir: Path | None = None) -> list[str]:
    args = ["--kiosk-id", kiosk, "--fleet", "north", "--site", "Outlet 37, Main St Post Office",
            "--mqtt-url", url]
    return args + (["--ca-dir", str(ca_dir)] if ca_dir else [])


def _snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under root: type, mode, owner, mtime, content hash or link target."""
    snap: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            snap[rel] = ("link", os.readlink(path))
        elif path.is_file():
            snap[rel] = ("file", st.st_mode, st.st_uid, st.st_mtime_ns, path.read_bytes())
        else:
            snap[rel] = ("dir", st.st_mode, st.st_uid, st.st_mtime_ns)
    return snap


class Monitor:
    """The fleet's view: an MQTT 5 client with the fleet-monitor certificate, reading kiosk/v1/north/#."""

    def __init__(self, broker: DevBroker, pki: Pki) -> None:
        cert, key = pki.client("fleet-monitor")
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="fleet-monitor", protocol=paho.MQTTv5)
        self.c.tls_set(ca_certs=str(pki.ca_file), certfile=str(cert), keyfile=str(key))
        self.c.on_connect = lambda c, _u, _f, rc, _p: c.subscribe("kiosk/v1/north/#", qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait_for(self, topic: str, what: str) -> dict[str, Any]:
        def found() -> bool:
            return any(t == topic and p for t, p in self.messages)
        with self.cond:
            assert self.cond.wait_for(found, timeout=WAIT), f"no {what} on {topic}; got {[t for t, _ in self.messages]}"
            payload = next(p for t, p in reversed(self.messages) if t == topic and p)
        doc: dict[str, Any] = json.loads(payload)
        return doc

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@contextlib.contextmanager
def _running_agent(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The agent in its own process; an assertion failing inside shows its log; SIGTERM at the end."""
    with open(log, "wb") as out:
        agent = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield agent
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- agent log ---\n{log.read_text(errors='replace')[-3000:]}") from None
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def test_provision_start_agent_over_mtls_and_rerun(mtls_broker: DevBroker, pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    url = f"mqtts://127.0.0.1:{mtls_broker.port}"
    first = _provision(root, *_basic("k-0001", url, pki.base / "ca"), "--backend", "sim", "--staged-paths")
    assert "[8/8]" in first.stdout and "provisioned" in first.stdout
    cfg = load_config(root / "etc/kiosk-agent/agent.toml")          # the agent's own validation
    assert cfg.kiosk.id == "k-0001" and cfg.mqtt.tls_enabled
    assert "self-test passed" in first.stdout, first.stdout

    monitor = Monitor(mtls_broker, pki)
    log = tmp_path / "agent.log"
    # The agent runs under the unit's seccomp filter, address families,
    # NoNewPrivileges and W^X (tests/system/sandbox.py): TLS, sqlite, asyncio
    # and the simulators with them.
    argv = sandbox_argv(UNIT, tmp_path, [sys.executable, "-m", "agent", "run", "--config",
                                         str(root / "etc/kiosk-agent/agent.toml")])
    try:
        with _running_agent(argv, log):
            birth = monitor.wait_for("kiosk/v1/north/k-0001/state", "birth")
            assert birth["online"] is True and birth["kiosk"] == "k-0001", birth
            health = monitor.wait_for("kiosk/v1/north/k-0001/health", "health")
            assert health["kiosk"] == "k-0001"
            started = log.read_text(errors="replace")
            assert "SANDBOX on" in started, started
            if _kernel() >= (6, 3):
                assert "MDWE on" in started
    finally:
        monitor.close()

    # Re-run: the agent's own state (agent.db) is not the installer's; compare the rest.
    before = {k: v for k, v in _snapshot(root).items() if not k.startswith("var/lib/kiosk-agent/")}
    log_before = (root / "var/log/kiosk-provision.log").read_text()
    time.sleep(1.1)                        # so a rewritten log would show a new second
    second = _provision(root, *_basic("k-0001", url, pki.base / "ca"), "--backend", "sim", "--staged-paths")
    after = {k: v for k, v in _snapshot(root).items() if not k.startswith("var/lib/kiosk-agent/")}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == ["var/log/kiosk-provision.log"], changed
    log_after = (root / "var/log/kiosk-provision.log").read_text()
    assert log_before.splitlines()[1:] == log_after.splitlines()[1:]
    assert log_before.splitlines()[0] != log_after.splitlines()[0]       # the timestamp
    assert "kept" in second.stdout and "unchanged" in second.stdout


def test_staged_install_files_and_modes(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    result = _provision(root, *_basic("k-0007", "mqtts://broker.example:8883", pki.base / "ca"))
    assert "skipped" in result.stdout                    # selftest: paths point at the kiosk's /etc
    etc = root / "etc/kiosk-agent"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (etc / "keys").iterdir()}
    assert modes["signing.key"] == modes["tls.key"] == 0o600
    assert (etc / "keys").stat().st_mode & 0o777 == 0o700
    assert (etc / "agent.toml").stat().st_mode & 0o777 == 0o640
    text = (etc / "agent.toml").read_text()
    assert 'cert_file = "/etc/kiosk-agent/keys/tls.crt"' in text and 'url = "/dev/kiosk/printer"' in text
    unit = (root / "etc/systemd/system/kiosk-agent.service").read_text()
    assert "ExecStart=/opt/kiosk-agent/bin/kiosk-agent run --config /etc/kiosk-agent/agent.toml" in unit
    wants = root / "etc/systemd/system/multi-user.target.wants/kiosk-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/kiosk-agent.service"
    timer = root / "etc/systemd/system/timers.target.wants/kiosk-agent-renew.timer"
    assert os.readlink(timer) == "/etc/systemd/system/kiosk-agent-renew.timer"
    renew_unit = (root / "etc/systemd/system/kiosk-agent-renew.service").read_text()
    assert "ExecStart=/opt/kiosk-agent/bin/kiosk-provision renew" in renew_unit
    assert (root / "etc/udev/rules.d/99-kiosk.rules").exists() and (root / "etc/tmpfiles.d/kiosk-agent.conf").exists()
    polkit = root / "etc/polkit-1/rules.d/50-kiosk-agent.rules"       # the reboot command as the service user
    assert "org.freedesktop.login1.reboot" in polkit.read_text() and polkit.stat().st_mode & 0o777 == 0o644
    slip = (etc / "commissioning-slip.txt").read_text()
    assert "k-0007" in slip and "Outlet 37" in slip and '"kiosk":"k-0007"' in slip
    # No key material outside the kiosk's keys directory, and none shared with another kiosk.
    other = tmp_path / "other"
    _provision(other, *_basic("k-0008", "mqtts://broker.example:8883", pki.base / "ca"))
    for name in ("signing.key", "tls.key", "tls.crt"):
        assert (etc / "keys" / name).read_bytes() != (other / "etc/kiosk-agent/keys" / name).read_bytes()


def test_offline_enrolment_with_a_bundle(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    url = "mqtts://broker.example:8883"
    pending = _provision(root, *_basic("k-0009", url), check=False)
    assert pending.returncode == 3 and "waiting for the certificate" in pending.stdout, pending.stdout
    csr = (root / "etc/kiosk-agent/keys/tls.csr").read_bytes()
    bundle = tmp_path / "k-0009.bundle.pem"
    bundle.write_bytes(fca.sign_csr(fca.load_ca(pki.base / "ca"), csr, kiosk_id="k-0009").pem())
    done = _provision(root, *_basic("k-0009", url), "--bundle", str(bundle))
    assert "certificate created" in done.stdout
    # A bundle for another key (another kiosk's CSR) is refused with its code.
    other_key = ec.generate_private_key(ec.SECP256R1())
    from provisioning.keys import make_csr
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(fca.sign_csr(fca.load_ca(pki.base / "ca"), make_csr(other_key, "k-0009")).pem())
    refused = _provision(root, *_basic("k-0009", url), "--bundle", str(wrong), check=False)
    assert refused.returncode == 1 and "[provision.enrol]" in refused.stderr and "another key" in refused.stderr


def test_answer_file_keys_kept_and_rotation(pki: Pki, tmp_path: Path) -> None:
    answers = tmp_path / "answers.toml"
    answers.write_text('kiosk_id = "k-0010"\nfleet = "north"\nsite = "Outlet 9"\n'
                       'mqtt_url = "mqtts://broker.example:8883"\nca_dir = "pki/ca"\n')
    (tmp_path / "pki").symlink_to(pki.base)
    root = tmp_path / "kiosk"
    _provision(root, "--answers", str(answers))
    key_file = root / "etc/kiosk-agent/keys/signing.key"
    first = key_file.read_bytes()
    _provision(root, "--answers", str(answers))
    assert key_file.read_bytes() == first                      # kept
    _provision(root, "--answers", str(answers), "--rotate-keys")
    assert key_file.read_bytes() != first                      # rotated, old one kept aside
    assert list((root / "etc/kiosk-agent/keys").glob("signing.key.old-*"))
    bad = tmp_path / "bad.toml"
    bad.write_text('kiosk_id = "K 1"\n')
    result = _provision(root, "--answers", str(bad), check=False)
    assert result.returncode == 2 and "--kiosk-id" in result.stderr and "[provision.answer]" in result.stderr


def test_decommission_erases_keys_and_citizen_data(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    _provision(root, *_basic("k-0011", "mqtts://broker.example:8883", pki.base / "ca"))
    storage = root / "var/lib/kiosk-agent"
    (storage / "agent.db").write_bytes(b"SQLite format 3\0 citizen")
    (storage / "agent.db-wal").write_bytes(b"wal")
    (storage / "evidence").mkdir()
    (storage / "evidence" / "tx-1.bin").write_bytes(b"sealed")
    result = subprocess.run([PROVISION, "--root", str(root), "decommission", "--yes"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for gone in ("etc/kiosk-agent/keys/signing.key", "etc/kiosk-agent/keys/tls.key",
                 "var/lib/kiosk-agent/agent.db", "var/lib/kiosk-agent/evidence",
                 "etc/systemd/system/multi-user.target.wants/kiosk-agent.service"):
        assert not (root / gone).exists(), gone
        assert f"removed /{gone}" in result.stdout, result.stdout
    assert list((root / "etc/kiosk-agent/keys").iterdir()) == [] and list(storage.iterdir()) == []
    again = subprocess.run([PROVISION, "--root", str(root), "decommission", "--yes"], capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_ca_refuses_reserved_and_foreign_ids(pki: Pki) -> None:
    ca = fca.load_ca(pki.base / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    from provisioning.keys import make_csr
    for reserved in ("enrol", "claim-k-1", "fleet-ca"):
        with pytest.raises(fca.CaError):
            fca.sign_csr(ca, make_csr(key, reserved))
    csr = make_csr(key, "k-0012")
    with pytest.raises(fca.CaError, match="not the kiosk"):
        fca.answer_enrolment(ca, "claim-k-0013", csr)
    assert fca.answer_enrolment(ca, "claim-k-0012", csr).common_name == "k-0012"    # first enrolment
    assert fca.answer_enrolment(ca, "k-0012", csr).common_name == "k-0012"          # renewal
    bundle = fca.parse_bundle(fca.sign_csr(ca, csr).pem())
    assert bundle.cert.public_key() == key.public_key()
    assert (pki.base / "ca" / fca.CA_KEY).stat().st_mode & 0o777 == 0o600
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert b"PRIVATE KEY" not in fca.sign_csr(ca, csr).pem() and pem


def test_commissioning_slip_on_the_printer_simulator(pki: Pki, tmp_path: Path) -> None:
    """The slip goes through the real ESC/POS driver to the printer simulator on a pty."""
    from hal.sim.printer import PrinterSim

    sim = PrinterSim(dev_dir=tmp_path / "dev")
    url = sim.start()
    try:
        root = tmp_path / "kiosk"
        result = _provision(root, *_basic("k-0014", "mqtts://broker.example:8883", pki.base / "ca"),
                            "--printer", url)
        assert f"printed on {url}" in result.stdout, result.stdout
        deadline = time.monotonic() + WAIT
        while "[CUT" not in sim.transcript_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        printed = sim.transcript_text()
        assert "Kiosk:  k-0014" in printed and "Outlet 37" in printed, printed
        assert '[QR] {"fleet":"north","kiosk":"k-0014"' in printed and "[CUT" in printed, printed
        # Out of paper: provisioning says so and still succeeds (the text file is the record).
        sim.set_state(paper_out=True)
        again = _provision(root, *_basic("k-0014", "mqtts://broker.example:8883", pki.base / "ca"),
                           "--printer", url)
        assert "not printed: the printer reports" in again.stdout and "paper_out" in again.stdout, again.stdout
    finally:
        sim.stop()


def test_ca_commands_offline_flow(tmp_path: Path) -> None:
    """``kioskctl ca init / sign / claim / acl`` (run as ``python -m fleet.ca_cli`` until kioskctl registers it)."""
    def ca(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fleet.ca_cli", "ca", *args], capture_output=True, text=True,
                              timeout=120, check=False, cwd=tmp_path)

    cadir = str(tmp_path / "ca")
    assert ca("init", "--dir", cadir).returncode == 0
    again = ca("init", "--dir", cadir)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    root = tmp_path / "kiosk"
    pending = _provision(root, *_basic("k-0015", "mqtts://broker.example:8883"), check=False)
    assert pending.returncode == 3
    csr = str(root / "etc/kiosk-agent/keys/tls.csr")
    wrong = ca("sign", csr, "--dir", cadir, "--kiosk", "k-0016")
    assert wrong.returncode == 1 and "not the kiosk" in wrong.stderr
    signed = ca("sign", csr, "--dir", cadir, "--kiosk", "k-0015", "--days", "30")
    assert signed.returncode == 0 and (tmp_path / "k-0015.bundle.pem").exists(), signed.stderr
    done = _provision(root, *_basic("k-0015", "mqtts://broker.example:8883"), "--bundle",
                      str(tmp_path / "k-0015.bundle.pem"))
    assert "certificate created" in done.stdout
    assert "(29 days)" in done.stdout or "(30 days)" in done.stdout, done.stdout
    assert "warning: the certificate expires in" in done.stdout                 # < 60 days: renew
    claim = ca("claim", "k-0015", "--dir", cadir, "--hours", "2")
    assert claim.returncode == 0 and ((tmp_path / "claim-k-0015.pem").stat().st_mode & 0o777) == 0o600
    acl = ca("acl", "--fleet", "north")
    assert "pattern readwrite kiosk/v1/north/%u/#" in acl.stdout and "+/%u" not in acl.stdout


def _interactive(root: Path, *args: str, typed: bytes) -> subprocess.CompletedProcess[str]:
    """kiosk-provision on a terminal (a pty as stdin), answering its questions with ``typed``."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([PROVISION, "--root", str(root), *args], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    os.close(slave)
    os.write(master, typed)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_interactive_prompts_with_defaults(pki: Pki, tmp_path: Path) -> None:
    """On a terminal it asks for what the flags did not give; Enter keeps the value shown."""
    root = tmp_path / "kiosk"
    # kiosk id, fleet (Enter keeps "north"), site, broker URL, bundle (Enter: none; --ca-dir signs)
    result = _interactive(root, "--fleet", "north", "--ca-dir", str(pki.base / "ca"),
                          typed=b"k-0017\n\nOutlet 17\nmqtts://broker.example:8883\n\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Fleet [north]:" in result.stdout
    cfg = load_config(root / "etc/kiosk-agent/agent.toml")
    assert (cfg.kiosk.id, cfg.kiosk.fleet, cfg.kiosk.site) == ("k-0017", "north", "Outlet 17")


def test_reprovisioning_prefills_every_answer_from_agent_toml(pki: Pki, tmp_path: Path) -> None:
    """A repeat visit: Enter at every question keeps what the kiosk was provisioned with."""
    root = tmp_path / "kiosk"
    trust, _keys = _fleet_trust(tmp_path / "fleet-trust.toml")
    _provision(root, *_basic("k-0050", "mqtts://broker.example:8883", pki.base / "ca"), "--backend", "sim",
               "--mode", "development", "--keepalive", "45", "--health-interval", "20",
               "--fleet-trust", str(trust))
    config = root / "etc/kiosk-agent/agent.toml"
    before = config.read_bytes()
    again = _interactive(root, typed=b"\n" * 5)
    assert again.returncode == 0, again.stdout + again.stderr
    for prompt in ("Kiosk id (e.g. k-0001) [k-0050]:", "Fleet [north]:",
                   "Site (outlet name and address) [Outlet 37, Main St Post Office]:",
                   "Broker URL [mqtts://broker.example:8883]:", "(empty: keep the installed certificate) []:"):
        assert prompt in again.stdout, again.stdout
    assert config.read_bytes() == before, "re-provisioning with Enter everywhere changed agent.toml"
    assert "agent.toml: unchanged" in again.stdout and "WARNING" not in again.stdout, again.stdout
    cfg = load_config(config)
    assert (cfg.kiosk.mode, cfg.hal.backend, cfg.mqtt.keepalive) == ("development", "sim", 45)
    assert [o.id for o in cfg.commands.operators] == ["ops-1"]
    # A script re-running it without --fleet-trust does not strip the kiosk's trust either.
    scripted = _provision(root, *_basic("k-0050", "mqtts://broker.example:8883"), "--backend", "sim")
    assert "fleet trust: kept" in scripted.stdout, scripted.stdout
    assert [o.id for o in load_config(config).commands.operators] == ["ops-1"]


def test_blank_or_bad_required_answer_is_refused_at_the_question(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    # kiosk id "K 1" (refused, asked again), fleet, site blank (refused, asked again), URL, bundle
    result = _interactive(root, "--fleet", "north", "--ca-dir", str(pki.base / "ca"),
                          typed=b"K 1\nk-0051\n\n\nOutlet 51\nmqtts://broker.example:8883\n\n")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.count("Kiosk id (e.g. k-0001)") == 2 and out.count("Site (outlet name and address)") == 2, out
    bad_id = out.index("got 'K 1'")
    assert out.index("Kiosk id") < bad_id < out.index("Fleet [north]:"), out
    first_site = out.index("Site (outlet name and address)")
    refusal = out.index("an answer is required", first_site)
    assert refusal < out.index("Site (outlet name and address)", first_site + 1) < out.index("Broker URL"), out
    cfg = load_config(root / "etc/kiosk-agent/agent.toml")
    assert (cfg.kiosk.id, cfg.kiosk.site) == ("k-0051", "Outlet 51")


def test_wrong_usage_exits_2_before_any_step(tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    missing = _provision(root, "--kiosk-id", "k-0052", check=False)        # no fleet, site, URL
    assert missing.returncode == 2 and "[provision.answer]" in missing.stderr, missing.stdout + missing.stderr
    assert "--fleet" in missing.stderr and "[1/8]" not in missing.stdout
    unknown = _provision(root, "--kiosk-id", "k-0052", "--colour=red", check=False)
    assert unknown.returncode == 2 and "--colour" in unknown.stderr
    assert not (root / "etc/kiosk-agent/keys/signing.key").exists()


def test_wrong_bundle_path_is_reported_before_any_step(tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    absent = tmp_path / "usb" / "k-0053.bundle.pem"
    result = _provision(root, *_basic("k-0053", "mqtts://broker.example:8883"), "--bundle", str(absent),
                        check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--bundle {absent}: no such file" in result.stderr and "[provision.answer]" in result.stderr
    assert "[1/8]" not in result.stdout and not (root / "etc/kiosk-agent/keys/signing.key").exists()


def test_bundle_for_another_kiosk_names_both_kiosk_ids(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    url = "mqtts://broker.example:8883"
    assert _provision(root, *_basic("k-0054", url), check=False).returncode == 3
    others = tmp_path / "k-0055.bundle.pem"          # the next kiosk's bundle, picked up by mistake
    others.write_bytes(fca.sign_csr(pki.ca, make_csr(ec.generate_private_key(ec.SECP256R1()), "k-0055")).pem())
    refused = _provision(root, *_basic("k-0054", url), "--bundle", str(others), check=False)
    assert refused.returncode == 1 and "[provision.enrol]" in refused.stderr, refused.stdout + refused.stderr
    assert "k-0055" in refused.stderr and "k-0054" in refused.stderr, refused.stderr


def test_real_root_in_a_private_namespace(pki: Pki, tmp_path: Path) -> None:
    """The path an installer takes (root ``/``): useradd, groups, chown, selftest, decommission.

    /etc and /var are overlay mounts inside a private mount namespace, so
    the real user database and file system of this machine are never touched.
    """
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    host_before = (_user_exists(), Path("/etc/kiosk-agent").exists())
    for d in ("ue", "we", "uv", "wv"):
        (tmp_path / d).mkdir()
    script = f"""
set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path}/ue,workdir={tmp_path}/we /etc
mount -t overlay overlay -o lowerdir=/var,upperdir={tmp_path}/uv,workdir={tmp_path}/wv /var
{PROVISION} --non-interactive --kiosk-id k-0030 --fleet north --site "Real root" \\
    --mqtt-url mqtts://broker.example:8883 --ca-dir {pki.base / 'ca'} --backend sim --no-print
echo "USER $(id -nG kiosk-agent)"
stat -c 'OWNER %U %a %n' /etc/kiosk-agent/keys/signing.key /etc/kiosk-agent/agent.toml /var/lib/kiosk-agent
readlink /etc/systemd/system/multi-user.target.wants/kiosk-agent.service | sed 's/^/WANTS /'
{PROVISION} decommission --yes
test ! -e /etc/kiosk-agent/keys/signing.key && echo ERASED
"""
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=240, check=False)
    if "overlay" in result.stderr and "permission denied" in result.stderr.lower():
        pytest.skip("overlay mounts are not permitted here")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "created system user kiosk-agent" in out and "self-test passed" in out, out
    groups = next(line for line in out.splitlines() if line.startswith("USER ")).split()[1:]
    assert "dialout" in groups and "video" in groups
    assert "OWNER kiosk-agent 600 /etc/kiosk-agent/keys/signing.key" in out
    assert "OWNER kiosk-agent 640 /etc/kiosk-agent/agent.toml" in out
    assert "OWNER kiosk-agent 700 /var/lib/kiosk-agent" in out
    assert "WANTS /etc/systemd/system/kiosk-agent.service" in out
    assert "removed /etc/kiosk-agent/keys/tls.key" in out and "ERASED" in out
    # And this machine was not changed.
    assert (_user_exists(), Path("/etc/kiosk-agent").exists()) == host_before


def test_separate_broker_ca_is_kept_apart_from_the_fleet_ca(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    broker_ca = pki.base / "other" / fca.CA_CERT
    url = "mqtts://broker.example:8883"
    _provision(root, *_basic("k-0018", url, pki.base / "ca"), "--broker-ca", str(broker_ca))
    keys = root / "etc/kiosk-agent/keys"
    assert (keys / "ca.pem").read_bytes() == broker_ca.read_bytes()
    assert (keys / "fleet-ca.pem").read_bytes() == (pki.base / "ca" / fca.CA_CERT).read_bytes()
    again = _provision(root, *_basic("k-0018", url), "--broker-ca", str(broker_ca))   # no CA, no bundle
    assert "certificate unchanged from the certificate already installed" in again.stdout, again.stdout


def test_agent_raises_cert_expiring_before_its_certificate_ends(mtls_broker: DevBroker, pki: Pki,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    url = f"mqtts://127.0.0.1:{mtls_broker.port}"
    _provision(root, *_basic("k-0031", url, pki.base / "ca"), "--backend", "sim", "--staged-paths")
    cfg = load_config(root / "etc/kiosk-agent/agent.toml")
    assert cfg.mqtt.tls.cert_file is not None and cfg.mqtt.tls.key_file is not None
    # Renewal has been failing: the CA's certificate for the same key now has 10 days left.
    key = serialization.load_pem_private_key(cfg.mqtt.tls.key_file.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = make_csr(key, "k-0031")
    cfg.mqtt.tls.cert_file.write_bytes(fca.sign_csr(pki.ca, csr, days=10).pem())

    monitor = Monitor(mtls_broker, pki)
    try:
        with _running_agent([sys.executable, "-m", "agent", "run", "--config",
                             str(root / "etc/kiosk-agent/agent.toml")], tmp_path / "agent.log"):
            alarm = monitor.wait_for("kiosk/v1/north/k-0031/alarm/cert_expiring", "cert_expiring alarm")
            assert alarm["active"] is True and alarm["severity"] == "warning", alarm
            assert "in 9.9 days" in alarm["detail"] or "in 10.0 days" in alarm["detail"], alarm
    finally:
        monitor.close()



def _fleet_trust(path: Path) -> tuple[Path, dict[str, str]]:
    """What the fleet office hands installers: operator, back-office ack and evidence keys."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    def raw(key: Any) -> str:
        return base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                              serialization.PublicFormat.Raw)).decode()
    keys = {"admin": raw(Ed25519PrivateKey.generate()), "ack": raw(Ed25519PrivateKey.generate()),
            "evidence": raw(X25519PrivateKey.generate())}
    path.write_text(f'[[commands.operators]]\nid = "ops-1"\npublic_key = "{keys["admin"]}"\nrole = "admin"\n\n'
                    f'[evidence]\nrecipient_public_key = "{keys["evidence"]}"\n'
                    f'ack_public_keys = ["{keys["ack"]}"]\n')
    return path, keys


def test_fleet_trust_file_makes_a_manageable_kiosk(pki: Pki, tmp_path: Path) -> None:
    import base64

    trust, keys = _fleet_trust(tmp_path / "fleet-trust.toml")
    root = tmp_path / "kiosk"
    result = _provision(root, *_basic("k-0040", "mqtts://broker.example:8883", pki.base / "ca"),
                        "--fleet-trust", str(trust))
    assert "WARNING" not in result.stdout
    cfg = load_config(root / "etc/kiosk-agent/agent.toml")
    assert [(o.id, o.role, base64.b64encode(o.public_key).decode()) for o in cfg.commands.operators] == \
        [("ops-1", "admin", keys["admin"])]
    assert cfg.evidence.recipient_public_key == base64.b64decode(keys["evidence"])
    assert cfg.evidence.ack_public_keys == (base64.b64decode(keys["ack"]),)
    assert "fleet trust: fleet-trust.toml" in (root / "var/log/kiosk-provision.log").read_text()

    # Without one, a production kiosk is provisioned but the installer is told what it will refuse.
    bare = _provision(tmp_path / "bare", *_basic("k-0041", "mqtts://broker.example:8883", pki.base / "ca"))
    assert "WARNING: no --fleet-trust file" in bare.stdout


@pytest.mark.parametrize("content, words", [
    ('[kiosk]\nid = "k-9"\n', "only commands, evidence tables belong there, not kiosk"),
    ('[evidence]\nack_public_keys = ["c2hvcnQ="]\n', "evidence.ack_public_keys[0]"),
    ("[evidence\n", "--fleet-trust"),
])
def test_bad_fleet_trust_file_is_refused_before_anything_changes(pki: Pki, tmp_path: Path, content: str,
                                                                 words: str) -> None:
    trust = tmp_path / "fleet-trust.toml"
    trust.write_text(content)
    root = tmp_path / "kiosk"
    result = _provision(root, *_basic("k-0042", "mqtts://broker.example:8883", pki.base / "ca"),
                        "--fleet-trust", str(trust), check=False)
    assert result.returncode != 0 and words in result.stdout + result.stderr, result.stdout + result.stderr
    assert not (root / "etc/kiosk-agent/keys/signing.key").exists()          # refused before the first step
