# SPDX-License-Identifier: Apache-2.0
"""Issue 12 #8: a TLS file the uplink cannot load is logged, naming it, and retried; never a silent death.

    .venv/bin/python -m pytest tests/system/test_uplink_tls.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kiosktest import AgentProcess, wait_until
from mtlskit import Pki

from agent.sim.devbroker import DevBroker

WAIT = 60.0          # generous: other engineers load the same 2 cores


def test_a_missing_ca_file_is_named_retried_and_healed(mtls_broker: DevBroker, pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.client("sim-0001")
    ca_file = tmp_path / "late" / "fleet-ca.pem"         # not there yet
    agent = AgentProcess(tmp_path / "agent", broker_url=f"mqtts://127.0.0.1:{mtls_broker.port}")
    text = agent.config.read_text().replace("[mqtt]\n", "[mqtt]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n")
    agent.config.write_text(text + f'\n[mqtt.tls]\nca_file = "{ca_file}"\ncert_file = "{cert}"\nkey_file = "{key}"\n')
    agent.start()
    try:
        line = f"unreachable: mqtt.tls.ca_file: cannot read {ca_file} (No such file or directory)"
        wait_until(lambda: agent.log.count(line) >= 2, WAIT, message=f"two attempts logged naming {ca_file}\n"
                   f"{agent.log[-3000:]}")
        assert agent.proc is not None and agent.proc.poll() is None
        ca_file.parent.mkdir()
        shutil.copy(pki.ca_file, ca_file)
        wait_until(lambda: f"connected to 127.0.0.1:{mtls_broker.port}" in agent.log, WAIT,
                   message=f"the kiosk connected once the file appeared\n{agent.log[-3000:]}")
        assert "Traceback" not in agent.log
    finally:
        agent.kill()
