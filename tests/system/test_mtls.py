# SPDX-License-Identifier: Apache-2.0
"""Mutual TLS and the ACL against a real mosquitto, with certificates from fleet.ca.

    .venv/bin/python -m pytest tests/system/test_mtls.py

The broker (agent.devbroker.DevBroker) runs with ``require_certificate``,
``use_identity_as_username`` and an ACL from ``fleet.ca``; kiosks are
provisioned with the real ``kiosk-provision`` into staging roots and connect
with the files it wrote. Clients are paho MQTT 5, so a denied publish is a
PUBACK with 0x87, not a silent drop.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from mtlskit import Pki, broker_conf
from paho.mqtt.enums import CallbackAPIVersion

from agent.sim.devbroker import DevBroker
from fleet import ca as fca

WAIT = 30.0          # generous: other engineers load the same 2 cores
NOT_AUTHORIZED = 0x87


# --- an MQTT 5 client over mutual TLS -----------------------------------------

class Client:
    """paho MQTT 5 with a client certificate; records CONNACK, PUBACK, SUBACK reason codes and messages."""

    def __init__(self, port: int, ca_file: Path, cert: Path, key: Path, client_id: str) -> None:
        self.connack: Any = None
        self.disconnected: Any = None
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.c.tls_set(ca_certs=str(ca_file), certfile=str(cert), keyfile=str(key))
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self._note(self.pubacks, mid, rc.value)
        self.c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._note(self.subacks, mid, [r.value for r in rcs])
        self.c.on_message = self._on_message
        self.error: Exception | None = None
        try:
            self.c.connect("127.0.0.1", port, keepalive=30)
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
            return
        self.c.loop_start()

    def _note(self, table: dict[int, Any], mid: int, value: Any) -> None:
        with self.cond:
            table[mid] = value
            self.cond.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self.cond:
            self.disconnected = rc
            self.cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait(self, predicate: Any, what: str) -> Any:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout=WAIT):
                raise AssertionError(f"timed out waiting for {what}")

    def connected(self) -> bool:
        if self.error is not None:
            return False
        self.wait(lambda: self.connack is not None or self.disconnected is not None, "CONNACK")
        return self.connack is not None and not self.connack.is_failure

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        info = self.c.publish(topic, payload, qos=1)
        self.wait(lambda: info.mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> list[int]:
        _rc, mid = self.c.subscribe(topic, qos=1)
        self.wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid]

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def _eventually(predicate: Any) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _tls_refusal(port: int, ca_file: Path, cert: Path | None, key: Path | None) -> str:
    """The TLS error the broker gives this certificate (handshake plus the first read)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"\x10\x00")       # a malformed CONNECT: any answer but an alert is a failure
            data = tls.recv(16)
            return f"no TLS error (read {data!r})"
    except ssl.SSLError as exc:
        return f"{exc.__class__.__name__}: {exc}"
    except OSError as exc:
        return f"{exc.__class__.__name__}: {exc}"


# --- provisioning into staging roots -----------------------------------------------

def _provision(root: Path, kiosk: str, broker: DevBroker, pki: Pki, *extra: str,
               ca_dir: bool = True) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("kiosk-provision")
    argv = [str(binary), "--root", str(root), "--non-interactive", "--kiosk-id", kiosk, "--fleet", "north",
            "--site", "Outlet 37, Main St Post Office", "--mqtt-url", f"mqtts://127.0.0.1:{broker.port}",
            *(["--ca-dir", str(pki.base / "ca")] if ca_dir else []), "--staged-paths", "--backend", "sim", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


def _tls_paths(root: Path) -> tuple[Path, Path, Path]:
    cfg = tomllib.loads((root / "etc/kiosk-agent/agent.toml").read_text())
    tls = cfg["mqtt"]["tls"]
    return Path(tls["ca_file"]), Path(tls["cert_file"]), Path(tls["key_file"])


@pytest.fixture(scope="module")
def kiosks(mtls_broker: DevBroker, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {}
    for kiosk in ("k-0001", "k-0002"):
        root = tmp_path_factory.mktemp(kiosk)
        result = _provision(root, kiosk, mtls_broker, pki, "--no-selftest")
        assert result.returncode == 0, result.stdout + result.stderr
        roots[kiosk] = root
    return roots


def _kiosk_client(broker: DevBroker, root: Path, client_id: str) -> Client:
    ca_file, cert, key = _tls_paths(root)
    return Client(broker.port, ca_file, cert, key, client_id)


# --- the cases ---------------------------------------------------------------------

def test_provisioned_kiosk_connects_and_publishes(mtls_broker: DevBroker, kiosks: dict[str, Path]) -> None:
    c = _kiosk_client(mtls_broker, kiosks["k-0001"], "k-0001")
    try:
        assert c.connected(), f"CONNACK {c.connack} / {c.error}"
        rc = c.publish("kiosk/v1/north/k-0001/health")
        assert rc < 0x80, f"PUBACK 0x{rc:02x}"          # 0x10 "no matching subscribers" is a success
        assert c.subscribe("kiosk/v1/north/k-0001/cmd/#") == [1]
    finally:
        c.close()


def test_another_kiosk_can_neither_write_nor_read(mtls_broker: DevBroker, kiosks: dict[str, Path],
                                                  pki: Pki) -> None:
    owner = _kiosk_client(mtls_broker, kiosks["k-0001"], "k-0001")
    # The intruder even claims the owner's client id: identity is the certificate's CN.
    intruder = _kiosk_client(mtls_broker, kiosks["k-0002"], "k-0001-spoof")
    try:
        assert owner.connected() and intruder.connected()
        assert intruder.publish("kiosk/v1/north/k-0001/state") == NOT_AUTHORIZED
        assert intruder.publish("kiosk/v1/north/k-0001/cmd/reboot/result") == NOT_AUTHORIZED
        # Reading: mosquitto 2.0 answers a subscription the ACL denies with 0x87
        # or grants it (wildcard filters are checked per message at delivery);
        # either way nothing of the other kiosk may arrive, retained or live.
        assert owner.publish("kiosk/v1/north/k-0001/state", b"retained-owner") < 0x80
        owner.c.publish("kiosk/v1/north/k-0001/alarm/door_open", b"x", qos=1, retain=True)
        for topic in ("kiosk/v1/north/k-0001/#", "kiosk/v1/north/k-0001/state", "kiosk/v1/north/+/health",
                      "kiosk/v1/north/#"):
            codes = intruder.subscribe(topic)
            assert codes[0] in (1, NOT_AUTHORIZED), (topic, codes)
        assert owner.publish("kiosk/v1/north/k-0001/health", b"owner") < 0x80
        assert owner.publish("kiosk/v1/north/k-0001/state", b"owner") < 0x80
        assert intruder.publish("kiosk/v1/north/k-0002/health", b"own") < 0x80
        # Positive control: its own message arrives, so the owner's (routed
        # before the owner's PUBACK) would have arrived before it.
        intruder.wait(lambda: ("kiosk/v1/north/k-0002/health", b"own") in intruder.messages, "own message")
        assert [t for t, _ in intruder.messages if "k-0001" in t] == []
    finally:
        owner.close()
        intruder.close()


def test_claim_certificate_reaches_only_its_enrolment_topic(mtls_broker: DevBroker, pki: Pki) -> None:
    cert, key = pki.client("claim-k-0003")
    c = Client(mtls_broker.port, pki.ca_file, cert, key, "claim-k-0003")
    try:
        assert c.connected()
        assert c.publish(fca.enrol_topic("north", "claim-k-0003", "csr")) < 0x80
        assert c.publish("kiosk/v1/north/k-0003/state") == NOT_AUTHORIZED
        assert c.publish(fca.enrol_topic("north", "claim-k-0004", "csr")) == NOT_AUTHORIZED
    finally:
        c.close()


def test_fleet_level_is_pinned(mtls_broker: DevBroker, kiosks: dict[str, Path]) -> None:
    c = _kiosk_client(mtls_broker, kiosks["k-0001"], "k-0001")
    try:
        assert c.connected()
        assert c.publish("kiosk/v1/south/k-0001/state") == NOT_AUTHORIZED
    finally:
        c.close()


@pytest.mark.parametrize("case", ["expired", "other-ca", "none"])
def test_bad_certificates_are_refused_at_connect(mtls_broker: DevBroker, pki: Pki, case: str) -> None:
    from provisioning.keys import diagnose_certificate

    if case == "expired":
        cert, key = pki.client("k-0005", expired=True)
        cause = "expired on"
    elif case == "other-ca":
        cert, key = pki.client("k-0005", ca=pki.other)
        cause = "not by the CA in the CA file"
    else:
        cert = key = None
        cause = ""
    log_before = mtls_broker.log_path.read_text(errors="replace")
    refusal = _tls_refusal(mtls_broker.port, pki.ca_file, cert, key)
    # mosquitto closes the TLS session without an alert naming the reason.
    assert not refusal.startswith("no TLS error"), refusal
    if cert and key:
        c = Client(mtls_broker.port, pki.ca_file, cert, key, "k-0005")
        try:
            assert not c.connected(), "the broker accepted a bad certificate"
        finally:
            c.close()
        # The broker's reason is generic, so the kiosk's own check names the cause.
        reason = diagnose_certificate(cert.read_bytes(), pki.ca_file.read_bytes())
        assert reason is not None and cause in reason, reason
    def refused_in_log() -> bool:
        new_log = mtls_broker.log_path.read_text(errors="replace")[len(log_before):]
        return "certificate verify failed" in new_log or "peer did not return a certificate" in new_log

    assert _eventually(refused_in_log), mtls_broker.log_path.read_text(errors="replace")[-2000:]


def test_diagnosis_passes_a_good_certificate(kiosks: dict[str, Path]) -> None:
    from provisioning.keys import diagnose_certificate

    ca_file, cert, _key = _tls_paths(kiosks["k-0001"])
    assert diagnose_certificate(cert.read_bytes(), ca_file.read_bytes()) is None


def test_several_fleets_need_per_kiosk_acl(pki: Pki, tmp_path: Path) -> None:
    """Pattern lines apply to every user: per-fleet patterns on one broker leak across fleets."""
    south_cert, south_key = pki.client("k-0100")
    leaky = fca.acl_text(["north", "south"])
    exact = fca.acl_per_kiosk({"k-0100": "south", "k-0001": "north"})
    outcomes = {}
    for name, acl in (("leaky", leaky), ("exact", exact)):
        workdir = tmp_path / name
        with DevBroker(workdir, extra_conf=broker_conf(pki, acl, workdir), persistence=False) as broker:
            c = Client(broker.port, pki.ca_file, south_cert, south_key, "k-0100")
            try:
                assert c.connected()
                assert c.publish("kiosk/v1/south/k-0100/state") < 0x80
                outcomes[name] = c.publish("kiosk/v1/north/k-0100/state")
            finally:
                c.close()
    assert outcomes["leaky"] < 0x80               # the hazard acl_text's docstring warns about
    assert outcomes["exact"] == NOT_AUTHORIZED


# --- claim enrolment over MQTT ---------------------------------------------------------

@pytest.fixture
def enrolment_service(mtls_broker: DevBroker, pki: Pki) -> Iterator[list[str]]:
    """``kioskctl ca serve``'s loop in a thread, with its own certificate (CN fleet-ca)."""
    from fleet.ca_serve import serve_enrolment
    from fleet.mqtt import FleetClient

    cert, key = pki.client("fleet-ca")
    stop = threading.Event()
    log: list[str] = []
    client = FleetClient(f"mqtts://127.0.0.1:{mtls_broker.port}", ca_file=str(pki.ca_file), cert_file=str(cert),
                         key_file=str(key), client_id="fleet-ca", timeout=WAIT)
    with client:
        thread = threading.Thread(target=serve_enrolment, args=(pki.ca, client, "north"),
                                  kwargs={"stop": stop, "log": log.append}, daemon=True)
        thread.start()
        time.sleep(0.5)    # the subscription is sent before the first kiosk asks (no timing assertion)
        try:
            yield log
        finally:
            stop.set()
            thread.join(timeout=WAIT)


def test_claim_enrolment_over_mqtt(mtls_broker: DevBroker, pki: Pki, enrolment_service: list[str],
                                   tmp_path: Path) -> None:
    claim = tmp_path / "claim-k-0020.pem"
    claim.write_bytes(fca.make_claim(pki.ca, "k-0020", hours=2))
    root = tmp_path / "kiosk"
    result = _provision(root, "k-0020", mtls_broker, pki, "--no-selftest", "--claim", str(claim),
                        ca_dir=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the enrolment service (claim)" in result.stdout
    assert any("signed k-0020" in line for line in enrolment_service), enrolment_service
    c = _kiosk_client(mtls_broker, root, "k-0020")
    try:
        assert c.connected()
        assert c.publish("kiosk/v1/north/k-0020/state") < 0x80
    finally:
        c.close()


def test_a_claim_cannot_enrol_another_kiosk(mtls_broker: DevBroker, pki: Pki, enrolment_service: list[str]) -> None:
    from provisioning.claim import enrol_over_mqtt
    from provisioning.errors import EnrolError
    from provisioning.keys import make_csr

    claim = fca.make_claim(pki.ca, "k-0021", hours=1)
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), "k-0022")
    # Its own enrolment topic, but a CSR for another kiosk: the service refuses and says so.
    with pytest.raises(EnrolError, match="not the kiosk"):
        enrol_over_mqtt(f"mqtts://127.0.0.1:{mtls_broker.port}", claim, "north", "k-0021", csr, timeout_s=WAIT)
    # Another kiosk's enrolment topic: the broker's ACL keeps the CSR from reaching the service.
    with pytest.raises(EnrolError):
        enrol_over_mqtt(f"mqtts://127.0.0.1:{mtls_broker.port}", claim, "north", "k-0022", csr,
                        timeout_s=3, attempt_s=3)
    assert not any("k-0022" in line and "signed" in line for line in enrolment_service)


def test_renewal_over_the_current_identity(mtls_broker: DevBroker, pki: Pki, enrolment_service: list[str],
                                           tmp_path: Path) -> None:
    root = tmp_path / "kiosk"
    assert _provision(root, "k-0041", mtls_broker, pki, "--no-selftest").returncode == 0
    keys = root / "etc/kiosk-agent/keys"
    old_crt, old_key = (keys / "tls.crt").read_bytes(), (keys / "tls.key").read_bytes()
    binary = str(Path(sys.executable).with_name("kiosk-provision"))

    def renew(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, "--root", str(root), "renew", *args], capture_output=True, text=True,
                              timeout=240, check=False)

    not_due = renew()
    assert not_due.returncode == 0 and "renewal starts 60 days before" in not_due.stdout, not_due.stderr
    assert (keys / "tls.crt").read_bytes() == old_crt
    due = renew("--days-before", "400")             # 396 days left: due under this policy
    assert due.returncode == 0 and "renewed: valid until" in due.stdout, due.stdout + due.stderr
    assert (keys / "tls.crt").read_bytes() != old_crt and (keys / "tls.key").read_bytes() != old_key
    assert list(keys.glob("tls.key.old-*")) and not (keys / "tls.key.next").exists()
    assert any("signed k-0041" in line for line in enrolment_service), enrolment_service
    c = _kiosk_client(mtls_broker, root, "k-0041")
    try:
        assert c.connected()
        assert c.publish("kiosk/v1/north/k-0041/state") < 0x80
    finally:
        c.close()
