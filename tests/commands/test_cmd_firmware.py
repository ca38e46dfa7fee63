# SPDX-License-Identifier: Apache-2.0
"""firmware-update end to end: a signed command carrying a signed image, pushed
by the agent to the co-processor firmware running on the MicroPython unix port."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

from cmdkit import Keys, Sender, by_corr, start_agent, wait_online
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber, wait_until

from agent.sim.devbroker import DevBroker
from agent.wire.signing import public_b64
from hal.coproc import FIRMWARE_DIR, build_image, sign_image


def _variant(tmp: Path, version: str) -> bytes:
    src = tmp / f"fw-{version}"
    shutil.copytree(FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["version"] = version
    (src / "manifest.json").write_text(json.dumps(manifest))
    return build_image(src)


def test_firmware_update_command(agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber,
                                 tmp_path: Path) -> None:
    keys = Keys()
    release = Ed25519PrivateKey.generate()
    agent = start_agent(agent_factory, keys, max_size=None,     # the default must carry our image
                        extra=f'\n[devices.coproc]\nfirmware_public_keys = ["{public_b64(release)}"]\n')
    wait_online(subscriber)
    wait_until(lambda: agent.sim("light_tower", "status")["ok"], 30, message="sim control")
    image = _variant(tmp_path, "1.0.1")
    args = {"image": base64.b64encode(image).decode(), "sha256": hashlib.sha256(image).hexdigest(),
            "confirm_s": 20}
    sender = Sender(broker.url)
    try:
        # Signed by someone else: the co-processor driver refuses before sending a byte.
        forged = sender.send("firmware-update", keys.envelope(
            "firmware-update", {**args, "signature": base64.b64encode(sign_image(image, keys.stranger)).decode()}))
        bad = subscriber.wait_for("/result", by_corr(forged, terminal=True), timeout=60).data
        assert (bad["status"], bad["code"]) == ("failed", "hal.coproc.signature"), bad
        # An operator may not update firmware at all.
        op = sender.send("firmware-update", keys.envelope(
            "firmware-update", {**args, "signature": base64.b64encode(sign_image(image, release)).decode()},
            key="operator"))
        assert subscriber.wait_for("/result", by_corr(op, terminal=True)).data["code"] == "cmd.forbidden"

        corr = sender.send("firmware-update", keys.envelope(
            "firmware-update", {**args, "signature": base64.b64encode(sign_image(image, release)).decode()}))
        done = subscriber.wait_for("/result", by_corr(corr, terminal=True), timeout=90).data
        assert done["status"] == "succeeded", done
        assert done["result"]["version"] == "1.0.1"
        progress = [m.data.get("progress") for m in subscriber.matching("/result", by_corr(corr))
                    if m.data["status"] == "in_progress"]
        assert progress[0] == 0 and progress[-1] == 100 and len(progress) >= 5
        # The co-processor now reports the new firmware (get-health reads it live).
        def firmware() -> str | None:
            ask = sender.send("get-health", keys.envelope("get-health", key="operator"))
            health = subscriber.wait_for("/result", by_corr(ask, terminal=True), timeout=30).data["result"]
            return health["peripherals"]["coproc"].get("firmware")  # type: ignore[no-any-return]
        wait_until(lambda: firmware() == "1.0.1", 60, 0.5, message="coproc reporting firmware 1.0.1")
    finally:
        sender.close()
    subscriber.assert_valid()
