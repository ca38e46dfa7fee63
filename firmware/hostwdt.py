# SPDX-License-Identifier: Apache-2.0
"""The host watchdog: power-cycle the Pi when its heartbeats stop.

The agent heartbeats over the link. After a boot grace period (the Pi may
take that long to boot to its first heartbeat), if no heartbeat came for
``timeout_s``, the power relay is pulsed for ``pulse_ms`` (cutting the Pi's
supply), at most ``max_per_hour`` times in any hour; after each pulse the
grace period starts again. The cause is kept and reported at the next hello.

    wdt = HostWatchdog(relays.power, ticks_ms())
    wdt.beat(ticks_ms())          # on every agent heartbeat
    what = wdt.tick(ticks_ms())   # "fired", "suppressed" or None
"""

try:
    from micropython import const
except ImportError:  # CPython: const is a compiler hint only
    def const(x):  # type: ignore
        return x

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython (type checks, host tests)
    from firmware.lib.link import ticks_add, ticks_diff  # type: ignore

_HOUR_MS = const(3600000)

# Defaults until the agent sends a policy (and persisted over reboots after).
DEFAULT_POLICY = {"enabled": 1, "timeout_s": 120, "grace_s": 300, "max_per_hour": 3, "pulse_ms": 5000}
_LIMITS = {"timeout_s": (1, 86400), "grace_s": (0, 86400), "max_per_hour": (0, 60),
           "pulse_ms": (100, 60000), "enabled": (0, 1)}


class PolicyError(ValueError):
    """A watchdog policy field is missing, not an integer or out of range."""

    code = "wdt.policy"


def check_policy(policy):
    """A complete, validated policy from a partial one (defaults filled in)."""
    out = {}
    for key, default in DEFAULT_POLICY.items():
        value = policy.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(key)
        lo, hi = _LIMITS[key]
        if not lo <= value <= hi:
            raise PolicyError(key)
        out[key] = value
    return out


class HostWatchdog:
    """Heartbeat supervision of the Pi; ``power(on)`` drives the power relay."""

    def __init__(self, power, now, policy=None):
        self._power = power
        self.policy = check_policy(policy or {})
        self._grace_from = now
        self._last_beat = None
        self._pulse_end = None
        self._history = []
        self._suppressing = False
        self.fired = 0
        self.suppressed = 0
        self.last_cause = None
        self._last_at = None

    def set_policy(self, policy, now):
        self.policy = check_policy(policy)

    def beat(self, now):
        self._last_beat = now
        self._suppressing = False

    def _deadline(self):
        p = self.policy
        grace_end = ticks_add(self._grace_from, p["grace_s"] * 1000)
        if self._last_beat is None:
            return grace_end
        by_beat = ticks_add(self._last_beat, p["timeout_s"] * 1000)
        return by_beat if ticks_diff(by_beat, grace_end) > 0 else grace_end

    def tick(self, now):
        if self._pulse_end is not None:
            if ticks_diff(now, self._pulse_end) >= 0:
                self._power(False)
                self._pulse_end = None
                # The Pi is booting again: a fresh grace, and no heartbeat yet.
                self._grace_from = now
                self._last_beat = None
            return None
        if not self.policy["enabled"] or ticks_diff(now, self._deadline()) < 0:
            return None
        self._history = [t for t in self._history if ticks_diff(now, t) < _HOUR_MS]
        if len(self._history) >= self.policy["max_per_hour"]:
            if self._suppressing:
                return None
            self._suppressing = True
            self.suppressed += 1
            return "suppressed"
        self._suppressing = False
        self._history.append(now)
        self.fired += 1
        self.last_cause = "heartbeat_timeout"
        self._last_at = now
        self._power(True)
        self._pulse_end = ticks_add(now, self.policy["pulse_ms"])
        return "fired"

    def expired(self, now):
        """True while the host is overdue (the ring shows out of service)."""
        return self._pulse_end is not None or (
            bool(self.policy["enabled"]) and ticks_diff(now, self._deadline()) >= 0)

    def status(self, now):
        out = {"fired": self.fired, "suppressed": self.suppressed, "cause": self.last_cause}
        if self._last_at is not None:
            out["ago_ms"] = ticks_diff(now, self._last_at)
        return out
