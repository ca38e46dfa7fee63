# SPDX-License-Identifier: Apache-2.0
"""Claim enrolment: get the kiosk's certificate over MQTT with a claim certificate.

    bundle_pem = enrol_over_mqtt("mqtts://broker.example:8883", claim_pem, "north", "k-0001", csr_pem)

``claim_pem`` is the file ``kioskctl ca claim`` made (claim key, claim
certificate with CN ``claim-<kiosk>``, fleet CA). The kiosk subscribes to
``kiosk/v1/{fleet}/enrol/claim-<kiosk>/{cert,error}``, publishes its CSR on
``…/csr`` and waits; on a flaky link it reconnects and re-sends with
jittered back-off until ``timeout_s``. The private TLS key never travels: only
the CSR does.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import tempfile
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from provisioning.errors import EnrolError

__all__ = ["enrol_over_mqtt", "request_certificate"]


def _topic(fleet: str, identity: str, leaf: str) -> str:
    # The same layout as fleet.ca.enrol_topic (the kiosk side does not import fleet).
    return f"kiosk/v1/{fleet}/enrol/{identity}/{leaf}"


def _attempt(host: str, port: int, ctx: ssl.SSLContext, identity: str, fleet: str, csr_pem: bytes,
             wait_s: float) -> bytes:
    done = threading.Event()
    answer: dict[str, bytes | str] = {}

    def on_connect(c: paho.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        if rc.is_failure:
            answer["error"] = f"broker refused the claim certificate: {rc}"
            done.set()
            return
        c.subscribe([(_topic(fleet, identity, "cert"), 1), (_topic(fleet, identity, "error"), 1)])

    def on_subscribe(c: paho.Client, _u: object, _m: int, rcs: list[ReasonCode], _p: object) -> None:
        if any(r.is_failure for r in rcs):
            answer["error"] = "the broker does not let this claim certificate read its enrolment topic"
            done.set()
            return
        c.publish(_topic(fleet, identity, "csr"), csr_pem, qos=1)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        answer["error" if msg.topic.endswith("/error") else "cert"] = bytes(msg.payload)
        done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=identity, protocol=paho.MQTTv5)
    client.tls_set_context(ctx)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionError(str(exc)) from None
    client.loop_start()
    try:
        if not done.wait(wait_s):
            raise ConnectionError("no answer from the enrolment service")
    finally:
        client.disconnect()
        client.loop_stop()
    if "error" in answer:
        raw = answer["error"]
        try:
            message = json.loads(raw)["message"] if isinstance(raw, bytes) else raw
        except (ValueError, KeyError, TypeError):
            message = repr(raw)
        raise EnrolError(f"enrolment refused: {message}")
    return bytes(answer["cert"])  # type: ignore[arg-type]


def enrol_over_mqtt(url: str, claim_pem: bytes, fleet: str, kiosk_id: str, csr_pem: bytes, *,
                    timeout_s: float = 120.0, attempt_s: float = 20.0) -> bytes:
    """The bundle PEM the enrolment service returned; EnrolError if refused or out of time."""
    identity = f"claim-{kiosk_id}"
    try:
        ca_certs = b"".join(block for block in _pem_blocks(claim_pem, b"CERTIFICATE")[1:])
    except ValueError as exc:
        raise EnrolError(f"the claim file: {exc}") from None
    # ssl wants the key and certificate in a file: a private 0600 temp file, removed at once.
    fd, path = tempfile.mkstemp(prefix=".claim-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(claim_pem)
        ctx = ssl.create_default_context(cadata=ca_certs.decode("ascii"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise EnrolError(f"the claim file has no usable key and certificate: {exc}") from None
    finally:
        os.unlink(path)
    return request_certificate(url, ctx, identity, fleet, csr_pem, timeout_s=timeout_s, attempt_s=attempt_s)


def request_certificate(url: str, ctx: ssl.SSLContext, identity: str, fleet: str, csr_pem: bytes, *,
                        timeout_s: float = 120.0, attempt_s: float = 20.0) -> bytes:
    """Publish ``csr_pem`` on ``enrol/{identity}/csr`` as ``identity`` (the TLS context's certificate)
    and return the bundle from ``…/cert``; retried with jittered back-off until ``timeout_s``."""
    parts = urlsplit(url)
    if parts.scheme != "mqtts" or not parts.hostname:
        raise EnrolError(f"enrolment over MQTT needs an mqtts:// broker URL, not {url!r}")
    deadline = time.monotonic() + timeout_s
    attempt = 0
    last = ""
    while time.monotonic() < deadline:
        try:
            return _attempt(parts.hostname, parts.port or 8883, ctx, identity, fleet, csr_pem,
                            min(attempt_s, max(1.0, deadline - time.monotonic())))
        except ConnectionError as exc:
            last = str(exc)
        attempt += 1
        # Full jitter: kiosks enrolled in the same minute do not retry in lockstep.
        time.sleep(min(random.uniform(0, min(30.0, 2.0 ** attempt)), max(0.0, deadline - time.monotonic())))
    raise EnrolError(f"no certificate from the enrolment service within {timeout_s:.0f} s ({last})")


def _pem_blocks(pem: bytes, kind: bytes) -> list[bytes]:
    begin, end = b"-----BEGIN " + kind + b"-----", b"-----END " + kind + b"-----"
    blocks, pos = [], 0
    while (start := pem.find(begin, pos)) >= 0:
        stop = pem.find(end, start)
        if stop < 0:
            raise ValueError("a PEM block is not terminated")
        blocks.append(pem[start:stop + len(end)] + b"\n")
        pos = stop + len(end)
    if len(blocks) < 2:
        raise ValueError("expected the claim certificate followed by the fleet CA certificate")
    return blocks
