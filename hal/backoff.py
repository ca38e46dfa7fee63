# SPDX-License-Identifier: Apache-2.0
"""The one retry backoff: capped exponential with jitter.

Here, in the lower layer, so the HAL's device supervision and the agent's
uplink share it without ``hal`` importing ``agent``.

    delay = backoff_delay(attempt, 0.5, 30.0)                 # full jitter: [0, cap]
    delay = backoff_delay(attempt, 0.25, 2.0, spread=0.5)     # [cap/2, cap]: never a busy loop

``cap = min(high, low * 2**attempt)``. Full jitter (``spread=1``, AWS's
"full jitter") spreads a fleet that lost its broker at the same moment over
the whole window, so it does not come back in lockstep; a smaller spread
keeps a floor under the delay.
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]

# 2**30 times any sane minimum is past every cap: the exponent stops there
# instead of growing an int without bound on a kiosk offline for months.
_MAX_EXPONENT = 30


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random | None = None, *,
                  spread: float = 1.0) -> float:
    """Delay before the ``attempt``-th retry (0-based), uniform in ``[cap * (1 - spread), cap]``."""
    cap = min(high, low * (2 ** min(attempt, _MAX_EXPONENT)))
    return float((rng or random).uniform(cap * (1.0 - spread), cap))
