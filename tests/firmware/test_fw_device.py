# SPDX-License-Identifier: Apache-2.0
"""The firmware on the real MicroPython unix port, driven by the real agent driver.

The firmware's UART is a pty; the agent's ``CoprocDevice`` opens the other
end of a null modem through ``hal.serial.open_port`` (pyserial on a tty).
Inputs are injected into the ``machine`` stand-in; outputs are read from
what it logs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fwtest import MACHINE_DIR, Rig, wait_until

from hal.coproc import FIRMWARE_DIR, CoprocDevice, CoprocRejected
from hal.device import DeviceEvent
from hal.sim.coproc import FirmwareRunner, random_corruption

VERSION = json.loads((FIRMWARE_DIR / "manifest.json").read_text())["version"]


def test_hello_reports_version_and_health(rig: Rig) -> None:
    rig.boot()
    dev = rig.device()
    hello = rig.wait_event("hello").data
    assert hello["version"] == VERSION and hello["slot"] == "a" and hello["reset_cause"] == "power_on"
    wait_until(lambda: dev.status().state == "ok", message="status ok")
    info = dev.status().info
    assert info["firmware"] == VERSION and info["reset_cause"] == "power_on"
    assert {"rx_errors", "rx_crc", "tx_retries", "tx_failed"} <= set(info["link"])
    assert "coproc_offline" not in dev.status().alarms
    assert dev.selftest().passed


def test_inputs_become_events_and_alarms(rig: Rig) -> None:
    rig.boot()
    dev = rig.device(temp_high_c=40.0)
    rig.wait_event("hello")
    assert rig.wait_event("tamper").data == {"open": False}
    rig.runner.inject("key 7 1")
    rig.wait_event("key", lambda d: d["key"] == "7")
    rig.runner.inject("key 7 0", "key # 1")
    rig.wait_event("key", lambda d: d["key"] == "#")
    rig.runner.inject("key # 0", "pin 11 0")          # joystick left closes
    rig.wait_event("joystick", lambda d: d["direction"] == "left")
    rig.runner.inject("pin 11 1", "pin 14 1")         # the tamper loop opens
    rig.wait_event("tamper", lambda d: d["open"] is True)
    wait_until(lambda: "tamper" in dev.status().alarms, message="tamper alarm")
    # RP2040 sensor: 27 C at 0.706 V, -1.721 mV/C; 13166/65535 * 3.3 V = 0.663 V = 52 C
    rig.runner.inject("adc 4 13166", "adc 0 40000")
    env = rig.wait_event("env", lambda d: d["temp_c"] > 40).data
    assert 50 < env["temp_c"] < 55 and 0 <= env["humidity"] <= 100
    wait_until(lambda: "temp_high" in dev.status().alarms, message="temp_high alarm")
    rig.runner.inject("pin 14 0", "adc 4 14260")
    rig.wait_event("tamper", lambda d: d["open"] is False)
    wait_until(lambda: not dev.status().alarms & {"tamper", "temp_high"}, message="alarms cleared")
    statuses = [e.data for e in rig.of_kind("status")]
    assert any("tamper" in s.get("alarms", []) for s in statuses)


def test_outputs_follow_commands_and_mode(rig: Rig) -> None:
    rig.boot()
    dev = rig.device()
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    dev.set_relay(1, True)
    wait_until(lambda: rig.output_lines("pin", "19", "1"), message="relay 1 on")
    dev.set_relay(1, False)
    wait_until(lambda: rig.output_lines("pin", "19", "0"), message="relay 1 off")
    with pytest.raises(CoprocRejected):
        dev.set_relay(0, True)    # the power relay belongs to the watchdog
    with pytest.raises(CoprocRejected):
        dev.set_led({"p": "disco", "c": [1, 2, 3]})
    dev.set_mode("in_service")
    wait_until(lambda: rig.output_lines("ring", "0", "160", "0"), message="ring green")
    dev.set_led({"p": "solid", "c": [10, 20, 30]})
    wait_until(lambda: rig.output_lines("ring", "10", "20", "30"), message="ring custom colour")
    assert not rig.output_lines("pin", "18", "1")


def test_offline_alarm_and_recovery(rig: Rig) -> None:
    rig.boot()
    dev = rig.device(offline_after_s=2.0)
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    rig.runner.power_off()
    wait_until(lambda: "coproc_offline" in dev.status().alarms, message="coproc_offline")
    n = len(rig.of_kind("hello"))
    rig.runner.power_on()
    wait_until(lambda: len(rig.of_kind("hello")) > n, message="hello after power on")
    wait_until(lambda: "coproc_offline" not in dev.status().alarms, message="alarm cleared")


def test_garbage_and_noise_on_the_line(rig: Rig) -> None:
    rig.boot()
    dev = rig.device()
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    rng = random.Random(5)
    # Bursts of garbage, stray delimiters and a runaway frame in both directions.
    bursts = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(10)]
    bursts.append(b"\x05" * 3000)

    def garbage(data: bytes) -> bytes:
        return (bursts.pop() if bursts else b"") + data

    rig.runner.modem.corrupt("to_fw", garbage)
    rig.runner.modem.corrupt("to_agent", garbage)
    for i in range(10):
        dev.set_relay(2, i % 2 == 0)
    rig.runner.modem.corrupt("to_fw", None)
    rig.runner.modem.corrupt("to_agent", None)
    # 1 % of bytes replaced at random, both ways: every command still acknowledged.
    noise = random.Random(7)
    rig.runner.modem.corrupt("to_fw", random_corruption(0.01, noise))
    rig.runner.modem.corrupt("to_agent", random_corruption(0.01, noise))
    for i in range(61):
        dev.set_relay(2, i % 2 == 0)
    rig.runner.modem.corrupt("to_fw", None)
    rig.runner.modem.corrupt("to_agent", None)
    # The last command (i = 60: on) is the state the relay is left in.
    assert [w for _, w in rig.runner.outputs() if w[:2] == ["pin", "20"]][-1] == ["pin", "20", "1"]
    # Both sides counted what they dropped, and neither side crashed.
    wait_until(lambda: dev.status().info.get("fw_link", {}).get("rx_errors", 0) > 0, timeout=30,
               message="firmware counted bad frames")
    assert dev.status().info["link"]["rx_errors"] > 0
    assert dev.status().state == "ok"
    assert all(status is None for _, status in rig.runner.boots)   # one boot, still running


def test_sim_controls_over_the_stable_link(tmp_path: Path, micropython: str) -> None:
    # What `kiosk-agent sim coproc ...` drives, through the <dev>/coproc symlink.
    events: list[DeviceEvent] = []
    with FirmwareRunner(tmp_path / "flash", machine_dir=MACHINE_DIR, micropython=micropython,
                        dev_dir=tmp_path / "dev") as fw:
        fw.install()
        fw.start()
        assert fw.url == str(tmp_path / "dev" / "coproc")
        dev = CoprocDevice(fw.url, heartbeat_s=0.5)
        dev.start(events.append)
        try:
            wait_until(lambda: dev.status().state == "ok", message="online")
            actions = fw.control_actions()
            actions["key"](["3"])
            actions["joystick"](["down"])
            actions["tamper"](["open"])
            actions["temp"](["61"])
            wait_until(lambda: {"key", "joystick", "tamper"} <= {e.kind for e in events}, message="events")
            wait_until(lambda: dev.status().alarms >= {"tamper", "temp_high"}, message="alarms")
            assert 60 <= dev.status().info["temp_c"] <= 62
            dev.set_relay(2, True)
            wait_until(lambda: actions["relays"]([])["relay_2"] == "1", message="relay 2 on")
        finally:
            dev.stop()


def test_well_formed_nonsense_does_not_stop_the_firmware(rig: Rig) -> None:
    from firmware.lib import link as L

    rig.boot()
    dev = rig.device()
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    rng = random.Random(11)
    drv = dev._drv
    assert drv is not None
    # Valid frames (good CRC) of every request type with junk payloads; seqs
    # kept away from the agent's own, whose duplicate filter they would hit.
    base = (drv.link._next_seq + 128) % 256
    junk = [b"", b"{}", b"[1]", b"null", b'{"led": 5}', b'{"relay": "x", "on": 1}', b'{"size": true}',
            b'{"timeout_s": -1}', b"\xff\xfe", b'{"led": {"p": "solid", "c": [1, 2]}}']
    frames = b"".join(
        L.encode_frame(rng.choice([t for t in range(256) if t != L.ACK]), (base + i % 64) % 256,
                       rng.choice(junk) if rng.random() < 0.7 else rng.randbytes(rng.randrange(40)))
        for i in range(300))
    sent = []

    def once(data: bytes) -> bytes:
        if not sent:
            sent.append(1)
            return frames + data
        return data

    rig.runner.modem.corrupt("to_fw", once)
    wait_until(lambda: sent, message="nonsense sent")
    rig.runner.modem.corrupt("to_fw", None)
    dev.set_relay(1, True)
    wait_until(lambda: rig.output_lines("pin", "19", "1"), message="relay 1 on")
    assert all(status is None for _, status in rig.runner.boots)    # never restarted


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_ten_thousand_commands_through_noise_on_the_real_firmware(rig: Rig) -> None:
    """The 10,000-frame acceptance run against MicroPython itself (make test-long).

    ``make test`` runs the same count codec to codec (test_fw_link) and a
    shorter run through this firmware (test_garbage_and_noise_on_the_line).
    """
    import os
    import time

    total = int(os.environ.get("KIOSK_FW_NOISE_COMMANDS", "10000"))
    rig.boot()
    dev = rig.device()
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    noise = random.Random(20261123)
    rig.runner.modem.corrupt("to_fw", random_corruption(0.01, noise))
    rig.runner.modem.corrupt("to_agent", random_corruption(0.01, noise))
    started = time.monotonic()
    for i in range(total):
        dev.set_relay(2, i % 2 == 0)          # raises unless acknowledged
    elapsed = time.monotonic() - started
    rig.runner.modem.corrupt("to_fw", None)
    rig.runner.modem.corrupt("to_agent", None)
    dev.set_relay(2, True)
    assert [w for _, w in rig.runner.outputs() if w[:2] == ["pin", "20"]][-1] == ["pin", "20", "1"]
    wait_until(lambda: dev.status().info.get("fw_link", {}).get("rx_errors", 0) > 0, timeout=30,
               message="firmware counted bad frames")
    info = dev.status().info
    print(f"\n{total} commands through 1 % noise in {elapsed:.0f} s; agent rx_errors "
          f"{info['link']['rx_errors']}, firmware rx_errors {info['fw_link']['rx_errors']}")
    assert info["link"]["rx_errors"] > 0 and dev.status().state == "ok"
    assert all(status is None for _, status in rig.runner.boots)   # one boot, never crashed
