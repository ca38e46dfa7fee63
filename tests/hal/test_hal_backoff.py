# SPDX-License-Identifier: Apache-2.0
"""The one backoff helper: its bounds, and that every retry loop uses it."""

from __future__ import annotations

import random

from hal.backoff import backoff_delay


def test_spread_sets_the_floor_and_the_cap_holds() -> None:
    rng = random.Random(5)
    for attempt in range(40):
        cap = min(30.0, 0.5 * 2 ** attempt)
        full = backoff_delay(attempt, 0.5, 30.0, rng)
        half = backoff_delay(attempt, 0.5, 30.0, rng, spread=0.5)
        assert 0.0 <= full <= cap and cap / 2 <= half <= cap
    assert backoff_delay(10**9, 0.5, 30.0, rng) <= 30.0        # months offline: no huge int, still capped


def test_the_uplink_the_serial_supervisor_and_the_coproc_share_it() -> None:
    import agent.uplink.connection
    import hal.coproc
    import hal.supervisor

    for module in (agent.uplink.connection, hal.supervisor):
        assert module.backoff_delay is backoff_delay, module.__name__
    for module in (agent.uplink.connection, hal.supervisor, hal.coproc):
        assert not hasattr(module, "random"), f"{module.__name__} draws its own jitter"
    # The co-processor reconnects through the serial supervision, not a loop of its own.
    assert issubclass(hal.coproc.CoprocDevice, hal.supervisor.SerialPeripheral)
    assert "_run" not in vars(hal.coproc.CoprocDevice) and "stop" not in vars(hal.coproc.CoprocDevice)
