# SPDX-License-Identifier: Apache-2.0
"""The ledger worker: a shared MQTT 5 subscription into PostgreSQL, PUBACK after commit.

    worker = IngestWorker(cfg, connect=lambda: db.connect(dsn, autocommit=True), signer=signer,
                          observer=Counters())
    worker.run(stop_event)          # until stop_event is set (SIGTERM in ``kiosk-ledger serve``)

Any number of workers with the same ``ledger.share_group`` split a fleet's
``kiosk/v1/{fleet}/+/tx`` and ``.../evidence`` (``$share/{group}/...``).
Manual acknowledgement (paho's ``manual_ack_set``): a message is PUBACKed
only after the transaction holding its row (or its quarantine row)
committed. The session is persistent (``clean_start`` false, a session
expiry), so the broker keeps what a dead worker had not acknowledged and
gives it back when that worker's client id connects again; storage is
idempotent, so a second delivery is harmless. PUBACKs of messages received
on an earlier connection are never sent on a later one (their packet ids
mean other messages there); the broker delivers those again.

Test-only fault hook: ``KIOSK_LEDGER_FAULT=exit_after_commit`` (or
``exit_after_commit:N``) makes the worker kill itself with SIGKILL right
after its first (N-th) committed batch that stored new records, before any
PUBACK or ``tx/ack`` for it.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from agent.wire.contract import ROOT
from fleet.errors import FleetError
from fleet.ledger.acks import AckSender, AckSigner
from fleet.ledger.checkproc import BatchChecker, InlineChecker, ProcessChecker
from fleet.ledger.config import LedgerConfig
from fleet.ledger.db import KioskKeys, load_kiosks
from fleet.ledger.observe import LedgerObserver
from fleet.ledger.receiver import connect_persistent, puback_all, receiver_client, use_tls
from fleet.ledger.store import BatchOutcome, Item, LedgerStore
from fleet.ledger.verify import Rejection

__all__ = ["IngestWorker", "FAULT_ENV", "shared_topics"]

log = logging.getLogger("fleet.ledger.ingest")

FAULT_ENV = "KIOSK_LEDGER_FAULT"
REGISTRY_REFRESH_S = 30.0
RETRY_MAX_S = 5.0
_COLLECT_POLL_S = 0.002      # a batch being collected looks at the inbox this often, not at every message
# A tx/ack the broker has not acknowledged by then is due again next round (an ack is idempotent).
ACK_PUBLISH_TIMEOUT_S = 3.0


def shared_topics(group: str, fleet: str) -> list[str]:
    """The worker's subscriptions: every kiosk's ``tx`` and ``evidence`` of ``fleet``, shared by ``group``."""
    return [f"$share/{group}/{ROOT}/{fleet}/+/tx", f"$share/{group}/{ROOT}/{fleet}/+/evidence"]


class _Delivered:
    __slots__ = ("generation", "mid", "qos", "topic", "payload")

    def __init__(self, generation: int, mid: int, qos: int, topic: str, payload: bytes) -> None:
        self.generation = generation
        self.mid = mid
        self.qos = qos
        self.topic = topic
        self.payload = payload


class _Fault:
    """``KIOSK_LEDGER_FAULT`` (tests only): die by SIGKILL between a commit and its acknowledgements."""

    def __init__(self, spec: str | None) -> None:
        self.after = 0
        if spec and spec.startswith("exit_after_commit"):
            _name, _sep, count = spec.partition(":")
            self.after = int(count or 1)
            log.warning("fault hook %s=%s armed: this worker kills itself after a commit", FAULT_ENV, spec)

    def committed(self, outcome: BatchOutcome) -> None:
        if self.after and outcome.inserted:
            self.after -= 1
            if self.after == 0:
                log.warning("fault hook: SIGKILL after commit, before PUBACK")
                os.kill(os.getpid(), signal.SIGKILL)


class IngestWorker:
    """One worker: MQTT in, verified batches into PostgreSQL, PUBACKs and signed ``tx/ack`` out."""

    def __init__(self, cfg: LedgerConfig, *, connect: Callable[[], psycopg.Connection[Any]], signer: AckSigner,
                 observer: LedgerObserver, fault: str | None = None, checker: BatchChecker | None = None) -> None:
        self.cfg = cfg
        self.connect = connect
        self.signer = signer
        self.observer = observer
        self.fault = _Fault(fault if fault is not None else os.environ.get(FAULT_ENV))
        # Filled by paho's thread, drained a batch at a time: a deque append takes no lock and wakes
        # nobody (a Queue.put per message woke the collecting thread once per message).
        self.inbox: collections.deque[_Delivered] = collections.deque()
        self._arrived = threading.Event()       # set when the inbox may be non-empty
        self.generation = 0
        self._gen_lock = threading.Lock()
        self._refused: dict[int, str] = {}          # mid -> reason code of a PUBACK >= 0x80
        self.connected = threading.Event()
        self.kiosks: Mapping[str, KioskKeys] = {}
        self._kiosks_at = 0.0
        self._conn: psycopg.Connection[Any] | None = None
        self._store: LedgerStore | None = None
        self.checker: BatchChecker = checker if checker is not None else (
            ProcessChecker(cfg.ledger.check_processes) if cfg.ledger.check_processes else InlineChecker())
        self.client = self._client()

    # -- MQTT -------------------------------------------------------------------

    def _client(self) -> paho.Client:
        mq = self.cfg.mqtt
        client = receiver_client(mq.client_id, self._on_delivery)      # manual PUBACKs
        use_tls(client, mq)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        # tx/ack publishes wait for their PUBACK one at a time; paho's own window (20) must never
        # hold one back behind acks lost with a connection.
        client.max_inflight_messages_set(0)
        return client

    def _on_connect(self, client: paho.Client, _u: object, flags: Any, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        with self._gen_lock:
            self.generation += 1
        # Subscribing again is harmless when the session was kept, and needed when it was not.
        client.subscribe([(topic, 1) for topic in shared_topics(self.cfg.ledger.share_group, self.cfg.ledger.fleet)])
        log.info("connected to the broker (session %s)",
                 "resumed" if getattr(flags, "session_present", False) else "new")
        self.connected.set()

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("the broker refused the shared subscriptions (%s): nothing will arrive", ", ".join(refused))
        else:
            log.info("subscribed to the fleet's tx and evidence")

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.connected.clear()
        with self._gen_lock:
            self.generation += 1        # PUBACKs for what came before would name the wrong packets now
        log.warning("broker connection lost (%s); reconnecting", reason)

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        # paho marks a publish "published" whatever the PUBACK's reason code; 0x80 and above
        # (an ACL refusal: 0x87) means the broker did not take it.
        if reason.is_failure:
            with self._gen_lock:
                self._refused[mid] = str(reason)

    def _on_delivery(self, mid: int, qos: int, topic: str, payload: bytes) -> None:
        self.inbox.append(_Delivered(self.generation, mid, qos, topic, payload))
        if not self._arrived.is_set():      # after the append: a collector clearing it sees this message
            self._arrived.set()

    def _start_mqtt(self) -> None:
        # Three batches in flight: one being checked, one being stored, and the next already here, so the
        # checks never wait for a commit's PUBACK to bring them work.
        connect_persistent(self.client, self.cfg.mqtt, receive_maximum=self.cfg.ledger.batch_max * 3)

    def publish_ack(self, topic: str, payload: bytes) -> bool:
        """QoS 1 publish; True once the broker acknowledged it with success."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(timeout=ACK_PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError):
            return False
        with self._gen_lock:
            refused = self._refused.pop(info.mid, None)
        if refused is not None:
            log.error("the broker refused a tx/ack on %s (%s): is the ledger allowed to publish there?", topic,
                      refused)
            return False
        return info.is_published()

    def _puback(self, delivered: list[_Delivered]) -> None:
        # Under the lock: the connection cannot change between the check and the acks.
        with self._gen_lock:
            current = self.generation
            puback_all(self.client, [d.mid for d in delivered if d.generation == current and d.qos == 1])

    # -- batches ----------------------------------------------------------------

    def _collect(self, stop: threading.Event) -> list[_Delivered]:
        """Up to ``batch_max`` messages: those there ``batch_ms`` after the first arrived, or once enough are."""
        if not self.inbox and not self._arrived.wait(0.2):
            return []
        limit = self.cfg.ledger.batch_max
        deadline = time.monotonic() + self.cfg.ledger.batch_ms / 1000
        while len(self.inbox) < limit and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, _COLLECT_POLL_S))
        self._arrived.clear()       # before draining: a message appended after this sets it again
        inbox = self.inbox
        batch = [inbox.popleft() for _ in range(min(limit, len(inbox)))]
        if inbox:
            self._arrived.set()
        return batch

    def _refresh_kiosks(self, conn: psycopg.Connection[Any], *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._kiosks_at > REGISTRY_REFRESH_S:
            self.kiosks = load_kiosks(conn, self.cfg.ledger.fleet)      # autocommit: one statement
            self._kiosks_at = now

    def _check(self, batch: list[_Delivered]) -> list[Item]:
        return self.checker.check([(d.topic, d.payload) for d in batch], self.kiosks)

    def _checked(self, conn: psycopg.Connection[Any], batch: list[_Delivered]) -> list[Item]:
        self._refresh_kiosks(conn)
        items = self._check(batch)
        unknown = sorted({i.kiosk for i in items if isinstance(i, Rejection) and i.reason == "unknown_kiosk"
                          and i.kiosk is not None})
        if unknown:
            # A kiosk registered since the last refresh is not unknown: look up just those (an indexed
            # read, so a stranger publishing fast costs one small query per batch, not a fleet reload).
            found = load_kiosks(conn, self.cfg.ledger.fleet, only=unknown)
            if found:
                self.kiosks = {**self.kiosks, **found}
                items = self._check(batch)
        return items

    def _verify_loop(self, stop: threading.Event, checked: queue.Queue[tuple[list[_Delivered], list[Item]]]) -> None:
        """Stage 1, on its own thread: collect a batch and check it (signatures), while stage 2 stores the last."""
        conn: psycopg.Connection[Any] | None = None
        delay = 0.2
        while not stop.is_set():
            batch = self._collect(stop)
            if not batch:
                continue
            items = None
            while items is None and not stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = self.connect()
                    items = self._checked(conn, batch)
                    delay = 0.2
                except (psycopg.Error, FleetError) as exc:
                    log.warning("kiosk registry unavailable (%s); batch of %d held, retrying", str(exc).strip(),
                                len(batch))
                    if conn is not None:
                        conn.close()
                    conn = None
                    stop.wait(delay)
                    delay = min(RETRY_MAX_S, delay * 2)
            while items is not None and not stop.is_set():
                try:
                    checked.put((batch, items), timeout=0.2)
                    break
                except queue.Full:
                    continue
        if conn is not None:
            conn.close()

    def _write(self, stop: threading.Event, items: list[Item]) -> BatchOutcome | None:
        """Stage 2: store one checked batch, retrying while PostgreSQL is away; None if stopped meanwhile."""
        delay = 0.2
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.connect()
                    self._store = LedgerStore(self._conn)
                assert self._store is not None
                return self._store.write(items)
            except psycopg.OperationalError as exc:
                log.warning("PostgreSQL unavailable (%s); batch of %d held, retrying", str(exc).strip(), len(items))
            except FleetError as exc:       # connect() failed
                log.warning("PostgreSQL unavailable (%s); batch of %d held, retrying", exc, len(items))
            except psycopg.Error as exc:
                # One message PostgreSQL will not take must not stop the fleet: alone, each
                # is stored or quarantined as malformed.
                log.error("batch refused by PostgreSQL (%s); storing its messages one by one", str(exc).strip()[:200])
                return self._one_by_one(items)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            if stop.wait(delay):
                return None
            delay = min(RETRY_MAX_S, delay * 2)

    def _one_by_one(self, items: list[Item]) -> BatchOutcome:
        assert self._store is not None
        total = BatchOutcome()
        for item in items:
            try:
                part = self._store.write([item])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                part = self._store.write([Rejection(
                    item.topic, "evidence" if item.topic.endswith("/evidence") else "tx", "malformed",
                    f"PostgreSQL refused it: {str(exc).strip()[:200]}", item.payload)])
            total.inserted += part.inserted
            total.duplicates += part.duplicates
            total.linked += part.linked
            total.evidence += part.evidence
            total.quarantined += part.quarantined
            total.epochs += part.epochs
        return total

    def _report(self, outcome: BatchOutcome) -> None:
        for r in outcome.quarantined:
            # Kiosk, record id and seq only: the payload may carry anything and is never logged.
            log.error("QUARANTINED %s from %s (fleet %s): %s: %s [record %s, seq %s]", r.kind, r.kiosk or "?",
                      r.fleet or "?", r.reason, r.detail, r.record_id or "-", r.seq if r.seq is not None else "-")
            self.observer.quarantined(reason=r.reason, kind=r.kind)
        for kiosk, epoch, reason in outcome.epochs:
            log.warning("kiosk %s began a new journal epoch %s (%s); recorded, going on", kiosk, epoch[:8], reason)
            self.observer.epoch_started(kiosk=kiosk, reason=reason)
        self.observer.batch_committed(tx=outcome.inserted, evidence=outcome.evidence, duplicates=outcome.duplicates,
                                      linked=outcome.linked, seconds=outcome.seconds)

    def _ack_loop(self, stop: threading.Event) -> None:
        """Every ``acks.interval_ms``: one ack round; a lost database is retried, logged once per outage."""
        conn: psycopg.Connection[Any] | None = None
        interval = self.cfg.acks.interval_ms / 1000
        failing = False
        while not stop.wait(interval):
            if not self.connected.is_set():
                continue        # the disconnect is logged once; what is due stays due
            try:
                if conn is None or conn.closed:
                    conn = self.connect()
                sender = AckSender(conn, self.publish_ack, self.signer, fleet=self.cfg.ledger.fleet,
                                   observer=self.observer, max_ids=self.cfg.acks.max_ids,
                                   evidence_grace_s=self.cfg.ledger.evidence_grace_s)
                sender.run_round()
                if failing:
                    log.info("tx/ack rounds going again")
                    failing = False
            except (psycopg.Error, FleetError) as exc:
                if not failing:
                    log.warning("tx/ack round failed, retrying: %s", str(exc).strip())
                    failing = True
                if conn is not None:
                    conn.close()
                conn = None
                stop.wait(RETRY_MAX_S / 5)
        if conn is not None:
            conn.close()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; database outages are retried with the batch held (not acknowledged).

        Two stages: a thread collects batch n+1 and has it checked (by the
        checker: a child process by default, see fleet/ledger/checkproc.py)
        while this one stores batch n, PUBACKs it after the commit and
        reports it.
        """
        self.checker.start()
        self._conn = self.connect()
        self._store = LedgerStore(self._conn)
        self._refresh_kiosks(self._conn, force=True)
        checked: queue.Queue[tuple[list[_Delivered], list[Item]]] = queue.Queue(maxsize=2)
        verifier = threading.Thread(target=self._verify_loop, args=(stop, checked), name="ledger-verify",
                                    daemon=True)
        acker = threading.Thread(target=self._ack_loop, args=(stop,), name="ledger-acks", daemon=True)
        verifier.start()
        acker.start()
        self._start_mqtt()
        log.info("consuming %s as %s", ", ".join(shared_topics(self.cfg.ledger.share_group, self.cfg.ledger.fleet)),
                 self.cfg.mqtt.client_id)
        try:
            while not stop.is_set():
                try:
                    batch, items = checked.get(timeout=0.2)
                except queue.Empty:
                    continue
                outcome = self._write(stop, items)
                if outcome is None:
                    break
                self.fault.committed(outcome)
                self._puback(batch)
                self._report(outcome)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            verifier.join(10)
            acker.join(10)
            self.checker.close()
            if self._conn is not None:
                self._conn.close()
