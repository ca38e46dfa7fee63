# SPDX-License-Identifier: Apache-2.0
"""A fleet PKI and a mosquitto requiring client certificates, per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mtlskit import Pki, broker_conf

from agent.sim.devbroker import DevBroker, find_mosquitto
from fleet import ca as fca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    workdir = tmp_path_factory.mktemp("broker")
    acl = fca.acl_text(["north"], readers=("fleet-monitor",))
    with DevBroker(workdir, extra_conf=broker_conf(pki, acl, workdir), persistence=False) as broker:
        yield broker
