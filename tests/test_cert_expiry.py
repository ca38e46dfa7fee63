# SPDX-License-Identifier: Apache-2.0
"""The ``cert_expiring`` check on real certificates from the fleet CA."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from agent.runtime.health import certificate_alarm
from fleet import ca as fca
from provisioning.keys import make_csr


def _cert(tmp_path: Path, name: str, *, days: int, started_days_ago: float = 0) -> Path:
    ca = fca.load_ca(tmp_path / "ca") if (tmp_path / "ca").exists() else fca.init_ca(tmp_path / "ca", "test CA")
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), "k-0001")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=started_days_ago)
    path = tmp_path / f"{name}.crt"
    path.write_bytes(fca.sign_csr(ca, csr, days=days, not_before=start).pem())
    return path


def test_far_from_expiry_is_quiet(tmp_path: Path) -> None:
    assert certificate_alarm(_cert(tmp_path, "year", days=365)) is None


def test_inside_the_last_14_days_says_when(tmp_path: Path) -> None:
    detail = certificate_alarm(_cert(tmp_path, "soon", days=20, started_days_ago=10))
    assert detail is not None and "in 10.0 days" in detail and "renewal has not succeeded" in detail
    # Exactly at the edge of the window, and just outside it.
    path = _cert(tmp_path, "edge", days=30)
    end = time.time() + 30 * 86400
    assert certificate_alarm(path, now=end - 14 * 86400 + 60) is not None
    assert certificate_alarm(path, now=end - 14 * 86400 - 3600) is None


def test_expired_names_the_offline_way_out(tmp_path: Path) -> None:
    detail = certificate_alarm(_cert(tmp_path, "gone", days=1, started_days_ago=3))
    assert detail is not None and "expired" in detail and "--bundle" in detail


def test_unreadable_or_garbage_is_left_to_the_connection(tmp_path: Path) -> None:
    assert certificate_alarm(tmp_path / "missing.crt") is None
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert certificate_alarm(garbage) is None
