# SPDX-License-Identifier: Apache-2.0
"""The fleet's enrolment service: answers kiosks' CSRs over MQTT (``kioskctl ca serve``).

    with FleetClient(url, ca_file=…, cert_file="fleet-ca.crt", key_file="fleet-ca.key") as client:
        serve_enrolment(load_ca(ca_dir), client, "north")      # until Ctrl-C

It subscribes to ``kiosk/v1/{fleet}/enrol/+/csr``. The identity in the topic
is one the broker's ACL lets only that certificate's owner write (a claim
identity ``claim-k-0001`` or, for renewal, the kiosk ``k-0001``), so the
service signs a CSR only when it names that same kiosk. The answer goes to
``…/enrol/{identity}/cert`` (the PEM bundle) or ``…/enrol/{identity}/error``
(JSON with ``code`` and ``message``). It connects with its own certificate,
CN ``fleet-ca``, which ``acl_text`` allows on the enrolment topics only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from fleet.ca import Ca, CaError, answer_enrolment, enrol_topic
from fleet.mqtt import FleetClient

__all__ = ["SERVICE_IDENTITY", "serve_enrolment"]

SERVICE_IDENTITY = "fleet-ca"
MAX_CSR_BYTES = 8192


def serve_enrolment(ca: Ca, client: FleetClient, fleet: str, *, days: int = 397,
                    stop: threading.Event | None = None, max_requests: int | None = None,
                    log: Callable[[str], None] = print) -> int:
    """Answer CSRs until ``stop`` is set or ``max_requests`` were answered; return how many were signed."""
    stop = stop or threading.Event()
    client.subscribe(enrol_topic(fleet, "+", "csr"), qos=1)
    signed = answered = 0
    while not stop.is_set() and (max_requests is None or answered < max_requests):
        for msg in client.messages(timeout=1.0):
            parts = msg.topic.split("/")
            if len(parts) != 6 or parts[5] != "csr" or msg.retain:
                continue        # a retained CSR is old news: the kiosk re-sends when it wants one
            identity = parts[4]
            answered += 1
            try:
                if len(msg.payload) > MAX_CSR_BYTES:
                    raise CaError(f"CSR of {len(msg.payload)} bytes (at most {MAX_CSR_BYTES})")
                bundle = answer_enrolment(ca, identity, bytes(msg.payload), days=days)
            except CaError as exc:
                log(f"enrol {identity}: refused: {exc}")
                client.publish(enrol_topic(fleet, identity, "error"),
                               json.dumps({"code": exc.code, "message": str(exc)}).encode())
            else:
                client.publish(enrol_topic(fleet, identity, "cert"), bundle.pem())
                signed += 1
                log(f"enrol {identity}: signed {bundle.common_name} until "
                    f"{bundle.cert.not_valid_after_utc:%Y-%m-%d}")
            break
    return signed
