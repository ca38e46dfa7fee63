# SPDX-License-Identifier: Apache-2.0
"""Health: a snapshot every ``health.interval_s`` and on significant change.

Report by exception keeps an idle kiosk's traffic small (the budget is 1 MB
a day) while a paper-out still reaches the fleet at once: a change in a
peripheral's state, the mode or the set of active alarms publishes within
``CHANGE_DEBOUNCE_S``; the periodic timer restarts after every publish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from agent import __version__
from agent.wire.contract import envelope

__all__ = ["HealthReporter", "system_snapshot", "cpu_temperature"]

log = logging.getLogger(__name__)

CHANGE_DEBOUNCE_S = 0.05
_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temperature() -> float | None:
    """SoC temperature in °C where the board has a sensor (every Pi does)."""
    try:
        return round(int(_THERMAL.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def system_snapshot(storage_dir: Path) -> dict[str, Any]:
    mem = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(str(storage_dir))
        free_mb, total_mb = disk.free / 2**20, disk.total / 2**20
    except OSError:
        free_mb = total_mb = 0.0
    return {
        "uptime_s": round(time.time() - psutil.boot_time(), 1),
        "load": [round(x, 2) for x in os.getloadavg()],
        "mem_total_mb": round(mem.total / 2**20, 1),
        "mem_available_mb": round(mem.available / 2**20, 1),
        "disk_free_mb": round(free_mb, 1),
        "disk_total_mb": round(total_mb, 1),
        "cpu_temp_c": cpu_temperature(),
    }


_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")


def system_alarms(snapshot: dict[str, Any], *, min_free_mb: float, temp_high_c: float,
                  throttled_path: Path = _THROTTLED) -> dict[str, str]:
    """Alarm code → detail for what the board itself reports as wrong."""
    found: dict[str, str] = {}
    if snapshot["disk_total_mb"] and snapshot["disk_free_mb"] < min_free_mb:
        found["disk_low"] = f"{snapshot['disk_free_mb']:.0f} MB free, watermark {min_free_mb:.0f} MB"
    temp = snapshot.get("cpu_temp_c")
    if temp is not None and temp >= temp_high_c:
        found["temp_high"] = f"SoC at {temp:.1f} °C, limit {temp_high_c:.0f} °C"
    try:
        # Pi firmware: bit 0 = under-voltage now (bit 16 = since boot).
        if int(throttled_path.read_text().strip(), 16) & 0x1:
            found["undervoltage"] = "supply below 4.63 V"
    except (OSError, ValueError):
        pass
    return found


CERT_WARN_DAYS = 14      # time for an installer visit with an offline bundle (docs/installing.md 1.5)


def certificate_alarm(cert_file: Path, *, now: float | None = None,
                      warn_days: float = CERT_WARN_DAYS) -> str | None:
    """Detail for ``cert_expiring`` when the TLS client certificate ends within ``warn_days``.

    None when it is further away, or when the file cannot be read (the
    connection attempt reports that). The renewal timer
    (``kiosk-provision renew``) starts 60 days before the end, so this fires
    only when renewal has been failing for weeks.
    """
    # Imported here: a kiosk without TLS never pays for the x509 module.
    from cryptography import x509
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return None
    end = cert.not_valid_after_utc.timestamp()
    left_s = end - (time.time() if now is None else now)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    if left_s <= 0:
        return f"client certificate expired {when}: renew it with an offline bundle (kiosk-provision --bundle)"
    if left_s <= warn_days * 86400:
        return f"client certificate expires {when}, in {left_s / 86400:.1f} days; renewal has not succeeded"
    return None


class HealthReporter:
    """Builds health payloads and decides when to send them.

    ``sections`` are callables contributing extra top-level fields
    (``outbox``, ``commands``) so components add to health without this
    module knowing them.
    """

    def __init__(self, kiosk: str, storage_dir: Path, interval_s: float,
                 send: Callable[[bytes | dict[str, Any], str], None],
                 peripherals: Callable[[], dict[str, dict[str, Any]]],
                 alarms: Callable[[], list[str]], mode: Callable[[], str]) -> None:
        self.kiosk = kiosk
        self.storage_dir = storage_dir
        self.interval_s = interval_s
        self._send = send
        self._peripherals = peripherals
        self._alarms = alarms
        self._mode = mode
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}
        self.agent_info: Callable[[], dict[str, Any]] = dict
        self.started = time.monotonic()
        self._process = psutil.Process()
        self._timer: asyncio.TimerHandle | None = None
        self._pending_change: asyncio.TimerHandle | None = None
        self._last_fingerprint: Any = None
        self.published = 0

    def snapshot(self, reason: str) -> dict[str, Any]:
        peripherals = self._peripherals()
        payload = envelope(
            self.kiosk,
            reason=reason,
            uptime_s=round(time.monotonic() - self.started, 1),
            mode=self._mode(),
            system=system_snapshot(self.storage_dir),
            agent={"rss_mb": round(self._process.memory_info().rss / 2**20, 1), "version": __version__,
                   "python": platform.python_version(), **self.agent_info()},
            peripherals=peripherals,
            alarms=self._alarms(),
        )
        for name, section in self.sections.items():
            try:
                payload[name] = section()
            except Exception:  # a broken section must not stop health
                log.exception("health section %s failed", name)
        return payload

    def _fingerprint(self) -> Any:
        per = {name: (p.get("state"), tuple(p.get("alarms", ()))) for name, p in self._peripherals().items()}
        return (self._mode(), tuple(self._alarms()), tuple(sorted(per.items())))

    def start(self) -> None:
        self._last_fingerprint = self._fingerprint()
        self._arm()

    def stop(self) -> None:
        for handle in (self._timer, self._pending_change):
            if handle is not None:
                handle.cancel()
        self._timer = self._pending_change = None

    def publish_now(self, reason: str) -> dict[str, Any]:
        payload = self.snapshot(reason)
        self._last_fingerprint = self._fingerprint()
        self._send(payload, reason)
        self.published += 1
        self._arm()
        return payload

    def changed(self) -> None:
        """Something significant may have changed; publish if it really did."""
        if self._pending_change is None:
            loop = asyncio.get_running_loop()
            self._pending_change = loop.call_later(CHANGE_DEBOUNCE_S, self._check_change)

    def set_interval(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._arm()

    def _check_change(self) -> None:
        self._pending_change = None
        if self._fingerprint() != self._last_fingerprint:
            self.publish_now("change")

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.interval_s, self.publish_now, "periodic")
