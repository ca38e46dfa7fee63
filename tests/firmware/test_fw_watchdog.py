# SPDX-License-Identifier: Apache-2.0
"""The host watchdog: the firmware power-cycles the Pi when heartbeats stop.

Times are compared one-sidedly (the relay must not fire *earlier* than
allowed), using the stand-in's wall-clock stamps, so a loaded machine can
only make the test slower, never flaky.
"""

from __future__ import annotations

import time

from fwtest import Rig, wait_until

from firmware.hostwdt import HostWatchdog

NS = 1_000_000_000
# The firmware times in whole ticks_ms and the stand-in stamps outputs in
# wall-clock ns: an interval the firmware counts as N ms can read as up to
# one tick less here (CI saw a 300 ms pulse stamped as 299.3 ms).
TICK = NS // 1000


def test_fires_only_after_the_boot_grace_period(rig: Rig) -> None:
    # No agent at all (the Pi never boots): the grace period, then a pulse.
    rig.boot(wdt={"enabled": 1, "timeout_s": 1, "grace_s": 4, "max_per_hour": 3, "pulse_ms": 300})
    booted = wait_until(lambda: rig.output_lines("boot"), message="firmware boot")[0]
    fired = wait_until(lambda: rig.output_lines("pin", "18", "1"), timeout=30, message="power relay")[0]
    assert fired - booted >= 4 * NS - TICK
    released = wait_until(lambda: rig.output_lines("pin", "18", "0")[1:], message="relay released")[0]
    assert released - fired >= 0.3 * NS - TICK


def test_fires_after_the_timeout_when_the_agent_dies(rig: Rig) -> None:
    policy = {"enabled": 1, "timeout_s": 3, "grace_s": 1, "max_per_hour": 3, "pulse_ms": 300}
    rig.boot()
    dev = rig.device(watchdog=policy, heartbeat_s=0.3)
    rig.wait_event("hello")
    wait_until(lambda: (rig.flash / "wdt.json").exists(), message="policy stored")
    # Heartbeats flowing for longer than the timeout, past the grace: no pulse.
    time.sleep(4.5)
    assert not rig.output_lines("pin", "18", "1")
    # The agent dies. The firmware heard its last heartbeat no earlier than
    # that heartbeat was queued.
    dev.stop()
    last_beat = int(dev.last_heartbeat * NS)
    fired = wait_until(lambda: rig.output_lines("pin", "18", "1"), timeout=30, message="power relay")[0]
    assert fired - last_beat >= 3 * NS - TICK
    # The Pi comes back: the next hello says why it was power-cycled.
    rig.device(watchdog=policy)
    hello = rig.wait_event("hello", lambda d: d["host_watchdog"].get("fired", 0) >= 1).data
    assert hello["host_watchdog"]["cause"] == "heartbeat_timeout"
    assert hello["host_watchdog"]["ago_ms"] >= 0


class Clock:
    def __init__(self) -> None:
        self.ms = 0


def test_at_most_n_pulses_an_hour_and_grace_after_each() -> None:
    # The same module the firmware runs, under CPython with a fake clock.
    power: list[tuple[int, bool]] = []
    clock = Clock()
    wdt = HostWatchdog(lambda on: power.append((clock.ms, on)), 0,
                       {"timeout_s": 10, "grace_s": 60, "max_per_hour": 2, "pulse_ms": 1000})
    events = []
    while clock.ms < 3_600_000:
        what = wdt.tick(clock.ms)
        if what:
            events.append((clock.ms, what))
        clock.ms += 100
    ons = [t for t, on in power if on]
    assert ons[0] == 60_000                         # grace, never earlier
    assert ons[1] - ons[0] == 1_000 + 60_000        # pulse, then a fresh grace
    assert len(ons) == 2 and wdt.suppressed == 1    # the hourly limit holds
    assert [w for _, w in events] == ["fired", "fired", "suppressed"]
    assert wdt.status(clock.ms)["cause"] == "heartbeat_timeout"


def test_heartbeats_keep_it_quiet() -> None:
    power: list[bool] = []
    wdt = HostWatchdog(power.append, 0, {"timeout_s": 5, "grace_s": 10, "max_per_hour": 3, "pulse_ms": 500})
    for t in range(0, 600_000, 100):
        if t % 2000 == 0:
            wdt.beat(t)
        assert wdt.tick(t) is None
    assert power == []
    # Silence: fires 5 s after the last beat, not before.
    last = 598_000
    t = 600_000
    while wdt.tick(t) is None:
        t += 100
    assert t - last >= 5_000 and power == [True]
