# SPDX-License-Identifier: Apache-2.0
"""What the ledger tells its operators, as a small Protocol the worker is given.

    worker = IngestWorker(cfg, ..., observer=Counters())

``Counters`` keeps totals in memory (tests and ``status``); a Prometheus
observer (``fleet/ledger/metrics.py``) implements the same methods. The
worker logs every quarantine at ERROR itself; an observer only counts.
"""

from __future__ import annotations

import collections
import threading
from typing import Protocol

__all__ = ["LedgerObserver", "Counters"]


class LedgerObserver(Protocol):
    def batch_committed(self, *, tx: int, evidence: int, duplicates: int, linked: int, seconds: float) -> None:
        """One PostgreSQL transaction committed: new rows, re-deliveries, records newly linked in chain."""

    def quarantined(self, *, reason: str, kind: str) -> None:
        """One new quarantine row (an alert)."""

    def acked(self, *, kiosk: str, ids: int) -> None:
        """A signed tx/ack naming ``ids`` records reached the broker."""

    def epoch_started(self, *, kiosk: str, reason: str) -> None:
        """A kiosk began a new journal epoch (its store was lost)."""


class Counters:
    """Totals in memory; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: collections.Counter[str] = collections.Counter()

    def _add(self, **values: int) -> None:
        with self._lock:
            self.totals.update(values)

    def batch_committed(self, *, tx: int, evidence: int, duplicates: int, linked: int, seconds: float) -> None:
        self._add(batches=1, tx=tx, evidence=evidence, duplicates=duplicates, linked=linked)

    def quarantined(self, *, reason: str, kind: str) -> None:
        self._add(quarantined=1, **{f"quarantined.{reason}": 1})

    def acked(self, *, kiosk: str, ids: int) -> None:
        self._add(acks=1, acked_ids=ids)

    def epoch_started(self, *, kiosk: str, reason: str) -> None:
        self._add(epochs_started=1)
