# SPDX-License-Identifier: Apache-2.0
"""Helpers for the HAL tests: deadline polling and an event recorder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from hal.device import DeviceEvent

DEADLINE = 10.0


def wait_for(pred: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``pred`` until truthy; fail the test naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Recorder:
    """An ``emit`` that keeps every event, thread-safe."""

    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: DeviceEvent) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str) -> list[DeviceEvent]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def wait(self, kind: str, count: int = 1, timeout: float = DEADLINE) -> list[DeviceEvent]:
        return wait_for(lambda: len(self.of(kind)) >= count and self.of(kind), timeout, f"{count} {kind} event(s)")
