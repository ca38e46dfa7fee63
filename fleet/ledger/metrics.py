# SPDX-License-Identifier: Apache-2.0
"""The ledger's Prometheus metrics (prometheus-client), served on ``[metrics] listen``.

One :class:`LedgerMetrics` per worker process, on its own registry (never
the library's global one, so two in one process, as in tests, do not
collide). Counters and the batch histogram are this worker's; the gauges
that describe the database (open gaps, quarantined rows, records awaiting
their ack) are set by whichever worker last looked, so every worker reports
the same fleet-wide value: aggregate them with ``max``, not ``sum``.

    metrics = LedgerMetrics()
    server = metrics.serve("127.0.0.1:9464")        # GET /metrics
    worker = IngestWorker(cfg, ..., observer=metrics)     # fleet.ledger.observe.LedgerObserver
    server.close()

What each metric means, and the alerts built on them: docs/backoffice.md.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fleet.ledger.errors import LedgerConfigError

__all__ = ["LedgerMetrics", "MetricsServer", "parse_listen"]

# Batch commit latency: a healthy batch is a few ms, a slow disk or a lock shows in the upper buckets.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6; port 0: any free one) -> (host, port); LedgerConfigError."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise LedgerConfigError(f"metrics.listen = {listen!r}: expected host:port, e.g. 127.0.0.1:9464")
    return host, int(port)


class MetricsServer:
    """The HTTP endpoint's server and thread; ``close`` stops both."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class LedgerMetrics:
    """Counters, gauges and the batch histogram of one ledger worker."""

    def __init__(self, fleet: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._ingested = Counter("ledger_ingested", "Records and bundles committed to PostgreSQL (first time only)",
                                 ["kind"], registry=r)
        self._duplicates = Counter("ledger_duplicates", "Messages already stored, byte for byte (redelivery)",
                                   registry=r)
        self._linked = Counter("ledger_linked", "Records linked into their kiosk's verified chain", registry=r)
        self._quarantined = Counter("ledger_quarantined", "Messages quarantined, never acknowledged, by reason",
                                    ["reason", "kind"], registry=r)
        self._epochs = Counter("ledger_epochs_started", "Kiosks that began a new journal epoch (store lost)",
                               ["reason"], registry=r)
        self._acked = Counter("ledger_acked", "Transaction ids acknowledged to kiosks in a signed tx/ack",
                              registry=r)
        self._ack_messages = Counter("ledger_ack_messages", "tx/ack messages published", registry=r)
        self._batch = Histogram("ledger_batch_seconds", "Time from a batch's first message to its commit",
                                buckets=BATCH_BUCKETS, registry=r)
        self._batch_rows = Counter("ledger_batch_rows", "Messages handled in committed batches", registry=r)
        self._gap_requests = Counter("ledger_gap_requests", "Signed tx-resend requests sent to kiosks", registry=r)
        self._gaps_closed = Counter("ledger_gaps_closed", "Gaps closed: filled (the records came) or lost "
                                    "(the kiosk no longer holds them)", ["outcome"], registry=r)
        self._gaps_open = Gauge("ledger_gaps_open", "Gaps open longer than the reorder window (fleet-wide)",
                                registry=r)
        self._gap_oldest = Gauge("ledger_gap_oldest_seconds", "Age of the oldest open gap (0: none; fleet-wide)",
                                 registry=r)
        self._quarantine_rows = Gauge("ledger_quarantine_rows", "Rows in the quarantine table (fleet-wide)",
                                      registry=r)
        self._unacked = Gauge("ledger_unacked_records", "Committed records not yet acknowledged (fleet-wide)",
                              registry=r)
        self._history = Counter("ledger_history_messages", "State, health, alarm and command-result messages "
                                "applied to the history, by kind (duplicates included)", ["kind"], registry=r)
        self._history_malformed = Counter("ledger_history_malformed", "History messages dropped as malformed, "
                                          "by kind", ["kind"], registry=r)
        info = Gauge("ledger_info", "This worker's fleet", ["fleet"], registry=r)
        info.labels(fleet=fleet).set(1)

    # -- what the worker reports (fleet.ledger.observe.LedgerObserver) -----------------------

    def batch_committed(self, *, tx: int, evidence: int, duplicates: int, linked: int, seconds: float) -> None:
        self._ingested.labels(kind="tx").inc(tx)
        self._ingested.labels(kind="evidence").inc(evidence)
        self._duplicates.inc(duplicates)
        self._linked.inc(linked)
        self._batch.observe(seconds)
        self._batch_rows.inc(tx + evidence + duplicates)

    def quarantined(self, *, reason: str, kind: str) -> None:
        self._quarantined.labels(reason=reason, kind=kind).inc()

    def acked(self, *, kiosk: str, ids: int) -> None:
        self._acked.inc(ids)
        self._ack_messages.inc()

    def epoch_started(self, *, kiosk: str, reason: str) -> None:
        self._epochs.labels(reason=reason).inc()

    # -- what the gap watcher reports (fleet.ledger.gaps) ------------------------------------

    def gap_requested(self) -> None:
        self._gap_requests.inc()

    def gap_closed(self, outcome: str) -> None:
        self._gaps_closed.labels(outcome=outcome).inc()

    def gaps(self, open_count: int, oldest_s: float) -> None:
        self._gaps_open.set(open_count)
        self._gap_oldest.set(oldest_s)

    def database(self, *, quarantine_rows: int, unacked: int) -> None:
        self._quarantine_rows.set(quarantine_rows)
        self._unacked.set(unacked)

    # -- what the history worker reports (fleet.ledger.history.HistoryObserver) -----------------

    def history_received(self, *, kind: str, count: int) -> None:
        self._history.labels(kind=kind).inc(count)

    def history_malformed(self, *, kind: str) -> None:
        self._history_malformed.labels(kind=kind).inc()

    # -- serving ---------------------------------------------------------------------------

    def serve(self, listen: str) -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (port 0: any free one) in a daemon thread."""
        host, port = parse_listen(listen)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise LedgerConfigError(f"metrics.listen = {listen!r}: cannot listen ({exc.strerror or exc})") from None
        return MetricsServer(server, thread)
