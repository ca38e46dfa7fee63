# SPDX-License-Identifier: Apache-2.0
"""bench/ledger: the back office's ledger against raw PostgreSQL and raw paho, all in one run.

Prints, with the limit each is held to (DESIGN section 12, issue 16):

1. ingest rate with verification, ``kiosk-ledger serve`` with 1 and with 2
   workers (a shared subscription), against a raw PostgreSQL COPY of the
   same rows into a table shaped like ``tx`` and a raw paho QoS 1
   subscriber of the same messages; each worker count >= 50 % of the lower
   of the two. Every run drains the same backlog, preloaded into the
   broker for the consumers' persistent sessions, on a fresh broker and a
   fresh database; each rate is measured ``--repeat`` times, interleaved,
   and the best taken (the machine is shared), each with the 1-minute load
   average beside it. The workers run tests/ledger's configuration with
   ``ledger.check_processes`` sized as docs/backoffice.md says for that
   many workers on this machine (printed with the result);
2. latency at 200 tx/s from a light kiosk's publish (its commit) to the
   ledger's commit (the row's ``received_at``) and to the ``tx/ack`` naming
   it back at the kiosk, p50/p99 (2 workers; ``acks.interval_ms = 100`` and
   ``ledger.batch_ms = 10``, the workers' configuration of tests/ledger/corekit.py);
3. 1,000 light kiosks connected at once (real keys, real signed chains, not
   full agents), a few of which lose a record on the way: the ledger keeps
   up (every record stored, linked and acknowledged), and no gap is left
   open (the light kiosk answers ``tx-resend`` by publishing the range again,
   as the agent does; it does not check the request's signature).

Light kiosks (tests/ledger/ledgerkit.py) publish what the journal would;
their "commit" is the publish (the agent's own commit-to-publish path is
bench/outbox.py's). Everything runs on this machine: PostgreSQL (a private
cluster as the ``postgres`` user), Mosquitto and the workers share its cores.

    .venv/bin/python bench/ledger.py [--records 20000] [--kiosks 1000] [--repeat 3] [--parts 123] [--quick]
    .venv/bin/python bench/ledger.py --parts 1          # the ingest rates only (about a minute and a half)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "ledger"))

import paho.mqtt.client as paho
import psycopg
from corekit import LedgerProcess, write_ledger_config
from ledgerkit import LightKiosk
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pgcluster import PgCluster

from agent.sim.devbroker import DevBroker
from fleet.keys import init_key
from fleet.ledger.db import register_kiosk
from fleet.ledger.schema import migrate

FLEET = "bench"
BUDGET = 0.5


# -- plumbing ----------------------------------------------------------------------------

def client(port: int, client_id: str, *, persistent: bool = False, on_message: Any = None) -> paho.Client:
    """A connected paho MQTT 5 client with its loop thread running."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    c.max_inflight_messages_set(100)
    if on_message is not None:
        c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if persistent else 0
    c.connect("127.0.0.1", port, keepalive=60, clean_start=not persistent, properties=props)
    c.loop_start()
    if not connected.wait(30):
        raise RuntimeError(f"{client_id}: no CONNACK")
    return c


def subscribe(c: paho.Client, topic: str) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *_a: done.set()
    c.subscribe(topic, qos=1)
    if not done.wait(10):
        raise RuntimeError(f"no SUBACK for {topic}")


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> float:
    """QoS 1, 100 in flight; returns once the broker acknowledged every one; the seconds it took."""
    acked = threading.Semaphore(0)
    c = client(port, f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.on_publish = lambda *_a: acked.release()
    started = time.perf_counter()
    for topic, payload in messages:
        c.publish(topic, payload, qos=1)
    for _ in messages:
        acked.acquire()
    took = time.perf_counter() - started
    c.disconnect()
    c.loop_stop()
    return took


def backlog(kiosks: list[LightKiosk], per_kiosk: int) -> list[tuple[str, bytes]]:
    """Each kiosk's chain, interleaved as a fleet would publish."""
    out = []
    for _ in range(per_kiosk):
        for k in kiosks:
            out.append(k.record())
    return out


def load_average() -> str:
    """The 1-minute load average: the cores are shared, and a rate means little without it."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def fresh_kiosks(n: int, prefix: str = "k") -> list[LightKiosk]:
    return [LightKiosk(f"{prefix}-{i:04d}", FLEET) for i in range(n)]


def database(pg: PgCluster, name: str, kiosks: list[LightKiosk]) -> str:
    dsn = pg.create_database(name)
    with psycopg.connect(dsn) as conn:
        migrate(conn)
        for k in kiosks:
            register_kiosk(conn, k.kiosk, FLEET, k.public_key, source="bench")
    return dsn


def scalar(dsn: str, sql: str, params: Any = ()) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


def wait_for(what: str, predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def check_processes(workers: int) -> int:
    """The sizing rule of docs/backoffice.md: a checking process per core a worker has to itself, none for one.

    With one core per worker another process is only overhead (the worker checks in its own thread); with
    k >= 2, k checking processes spread the checks over all of them (the worker's own part is a fifth).
    """
    cores = (os.cpu_count() or 1) // workers
    return cores if cores >= 2 else 0


class Workers:
    """``kiosk-ledger serve`` processes on one database and broker (tests/ledger's configuration, sized as
    docs/backoffice.md says for this many workers on this machine: ``ledger.check_processes``)."""

    def __init__(self, workdir: Path, dsn: str, broker: DevBroker, key: Path, count: int, extra: str = "") -> None:
        self.procs = []
        for i in range(count):
            config = write_ledger_config(workdir / f"w{i}.toml", dsn=dsn, broker_url=broker.url,
                                         client_id=f"ledger-bench-{i}", key_file=key, fleet=FLEET, extra=extra)
            text = config.read_text()
            assert "\n[ledger]\n" in text
            sized = f"\n[ledger]\ncheck_processes = {check_processes(count)}\n"
            config.write_text(text.replace("\n[ledger]\n", sized, 1))
            self.procs.append(LedgerProcess(workdir, config))

    def start(self) -> Workers:
        started = {p: p.log.count("subscribed to the fleet's tx and evidence") for p in self.procs}
        for proc in self.procs:
            proc.start()
        for proc in self.procs:
            # Subscribed, not only connected: a worker stopped before its SUBACK leaves a persistent session
            # without the subscription, and the backlog published next would never be queued for it.
            wait_for(f"{proc.config.stem} subscribed", lambda p=proc: p.log.count("subscribed to the fleet's tx and "
                                                                                  "evidence") > started[p], 60)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.terminate()

    def logs(self) -> str:
        return "\n".join(p.log[-1500:] for p in self.procs)


# -- 1. ingest rate ------------------------------------------------------------------------

def raw_copy_rate(pg: PgCluster, kiosks: list[LightKiosk], messages: list[tuple[str, bytes]]) -> float:
    """COPY the rows the ledger would store into a table shaped like ``tx`` (same keys and indexes)."""
    import hashlib
    dsn = database(pg, "raw_copy", kiosks)
    rows = []
    for topic, payload in messages:
        doc = json.loads(payload)
        rows.append((doc["kiosk"], doc["epoch"], doc["seq"], doc["id"], topic.split("/")[2],
                     hashlib.sha256(payload).hexdigest(), doc["prev"], doc["kid"], doc["ts"], doc["data"]["type"],
                     False, payload))
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE raw_tx (LIKE tx INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY raw_tx (kiosk, epoch, seq, id, fleet, hash, prev, kid, ts_ms, "
                                            "kind, has_evidence, payload) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        took = time.perf_counter() - started
    return len(rows) / took


def raw_subscriber_rate(workdir: Path, messages: list[tuple[str, bytes]], tag: str = "") -> float:
    """A paho QoS 1 subscriber (shared subscription, persistent session) draining the same backlog."""
    with DevBroker(workdir / f"broker-raw{tag}") as broker:
        first = client(broker.port, "raw-sub", persistent=True)
        subscribe(first, f"$share/raw/kiosk/v1/{FLEET}/+/tx")
        first.disconnect()
        first.loop_stop()
        publish_all(broker.port, messages)
        got = [0]
        times: list[float] = []
        done = threading.Event()

        def on_message(*_a: Any) -> None:
            got[0] += 1
            if got[0] == 1:
                times.append(time.perf_counter())
            if got[0] == len(messages):
                times.append(time.perf_counter())
                done.set()
        sub = client(broker.port, "raw-sub", persistent=True, on_message=on_message)
        if not done.wait(600):
            raise RuntimeError(f"raw subscriber got {got[0]} of {len(messages)}")
        sub.disconnect()
        sub.loop_stop()
    return len(messages) / (times[1] - times[0])


def ledger_rate(pg: PgCluster, workdir: Path, key: Path, kiosks: list[LightKiosk],
                messages: list[tuple[str, bytes]], workers: int, tag: str = "") -> float:
    """Workers drain the backlog: from the first row's commit to the last, read from PostgreSQL."""
    dsn = database(pg, f"ledger_{workers}w", kiosks)
    run_dir = workdir / f"ledger-{workers}w{tag}"
    run_dir.mkdir()
    with DevBroker(run_dir / "broker") as broker:
        pool = Workers(run_dir, dsn, broker, key, workers)
        pool.start().stop()          # their persistent sessions now hold the subscription
        publish_all(broker.port, messages)
        pool.start()
        try:
            total = len(messages)
            first = wait_for("the first row", lambda: scalar(dsn, "SELECT min(received_at) FROM tx"), 120)
            end = wait_for(f"{total} rows", lambda: scalar(
                dsn, "SELECT now() FROM tx HAVING count(*) >= %s", (total,)), 600)
            linked = scalar(dsn, "SELECT count(*) FROM tx WHERE linked_at IS NOT NULL")
            quarantined = scalar(dsn, "SELECT count(*) FROM quarantine")
            if linked != total or quarantined:
                raise RuntimeError(f"{workers} worker(s): {linked} of {total} linked, {quarantined} quarantined\n"
                                   f"{pool.logs()}")
        finally:
            pool.stop()
    return total / (end - first).total_seconds()


# -- 2. latency at 200 tx/s -------------------------------------------------------------------

def latency(pg: PgCluster, workdir: Path, key: Path, rate: float, seconds: float) -> dict[str, float]:
    kiosks = fresh_kiosks(20, "lat")
    dsn = database(pg, "latency", kiosks)
    run_dir = workdir / "latency"
    run_dir.mkdir()
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    lock = threading.Lock()

    def on_ack(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        with lock:
            for record_id in json.loads(msg.payload)["ids"]:
                acked.setdefault(record_id, now)

    with DevBroker(run_dir / "broker") as broker:
        pool = Workers(run_dir, dsn, broker, key, 2).start()
        try:
            acks = client(broker.port, "lat-acks", on_message=on_ack)
            subscribe(acks, f"kiosk/v1/{FLEET}/+/tx/ack")
            pub = client(broker.port, "lat-pub")
            interval = 1.0 / rate
            next_at = time.perf_counter()
            count = int(rate * seconds)
            for i in range(count):
                k = kiosks[i % len(kiosks)]
                topic, payload = k.record()
                record_id = json.loads(payload)["id"]
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent[record_id] = time.time()
                pub.publish(topic, payload, qos=1)
            wait_for("every record acknowledged", lambda: len(acked) >= count, 120, 0.2)
            stored = {}
            with psycopg.connect(dsn, autocommit=True) as conn:
                for record_id, received in conn.execute("SELECT id, extract(epoch FROM received_at) FROM tx"):
                    stored[record_id] = float(received)
            for c in (acks, pub):
                c.disconnect()
                c.loop_stop()
        finally:
            pool.stop()
    to_commit = sorted(max(0.0, stored[i] - t) * 1000 for i, t in sent.items())
    to_ack = sorted((acked[i] - t) * 1000 for i, t in sent.items())
    return {"p50_commit_ms": _pct(to_commit, 50), "p99_commit_ms": _pct(to_commit, 99),
            "p50_ack_ms": _pct(to_ack, 50), "p99_ack_ms": _pct(to_ack, 99), "count": len(sent)}


def _pct(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


# -- 3. a thousand kiosks at once -------------------------------------------------------------

class ConnectedKiosk:
    """A light kiosk on its own connection: publishes its records, answers tx-resend, counts its acks."""

    def __init__(self, kiosk: LightKiosk, port: int) -> None:
        self.kiosk = kiosk
        self.sent: dict[int, tuple[str, bytes]] = {}
        self.acked: set[str] = set()
        self.ids: set[str] = set()
        self.resends = 0
        self.c = client(port, f"lk-{kiosk.kiosk}", on_message=self.on_message)
        self.c.subscribe(f"kiosk/v1/{FLEET}/{kiosk.kiosk}/tx/ack", qos=1)
        self.c.subscribe(f"kiosk/v1/{FLEET}/{kiosk.kiosk}/cmd/tx-resend", qos=1)

    def record(self, *, drop: bool = False) -> None:
        topic, payload = self.kiosk.record()
        self.sent[self.kiosk.seq] = (topic, payload)
        self.ids.add(json.loads(payload)["id"])
        if not drop:
            self.c.publish(topic, payload, qos=1)

    def on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        if msg.topic.endswith("/tx/ack"):
            self.acked.update(doc["ids"])
            return
        args = doc["args"]      # a simulator: the agent verifies the signature, this one trusts the broker
        self.resends += 1
        for seq in range(args["from_seq"], args["to_seq"] + 1):
            if seq in self.sent:
                self.c.publish(*self.sent[seq], qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# paho waits with select(), which cannot watch a descriptor above 1023, and each client holds three:
# the kiosks are spread over processes of at most this many.
KIOSKS_PER_PROCESS = 250


def _kiosk_process(kiosks: list[LightKiosk], port: int, per_kiosk: int, droppers: set[str], go: Any,
                   results: Any) -> None:
    """One process's share of the light kiosks: connect, wait for go, publish, wait for every ack."""
    try:
        connected = [ConnectedKiosk(k, port) for k in kiosks]
        results.put(("connected", len(connected)))
        go.wait()
        for round_ in range(per_kiosk):
            for k in connected:
                # A few kiosks lose their second record on the way (as if the broker dropped it).
                k.record(drop=round_ == 1 and k.kiosk.kiosk in droppers)
        wait_for("every record acknowledged at its kiosk", lambda: all(k.ids <= k.acked for k in connected),
                 600, 0.25)
        results.put(("acked", sum(k.resends for k in connected)))
        for k in connected:
            k.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        results.put(("error", f"{exc.__class__.__name__}: {exc}"))


def thousand(pg: PgCluster, workdir: Path, key: Path, n: int, per_kiosk: int, droppers: int) -> dict[str, Any]:
    import multiprocessing
    kiosks = fresh_kiosks(n, "fk")
    dsn = database(pg, "thousand", kiosks)
    run_dir = workdir / "thousand"
    run_dir.mkdir()
    lost = {k.kiosk for k in kiosks[:droppers]}
    ctx = multiprocessing.get_context("fork")     # the kiosks' keys go to the children without pickling
    go, results = ctx.Event(), ctx.Queue()
    with DevBroker(run_dir / "broker") as broker:
        gaps = "\n[gaps]\nreorder_window_s = 2\ncheck_interval_s = 1\n"
        pool = Workers(run_dir, dsn, broker, key, 2, extra=gaps).start()
        procs = [ctx.Process(target=_kiosk_process, args=(kiosks[i:i + KIOSKS_PER_PROCESS], broker.port, per_kiosk,
                                                          lost, go, results), daemon=True)
                 for i in range(0, n, KIOSKS_PER_PROCESS)]
        try:
            started = time.perf_counter()
            for proc in procs:
                proc.start()
            up = 0
            while up < n:
                kind, value = results.get(timeout=300)
                if kind == "error":
                    raise RuntimeError(value)
                up += value
            connect_s = time.perf_counter() - started
            started = time.perf_counter()
            go.set()
            total = n * per_kiosk
            wait_for("every record stored and linked", lambda: scalar(
                dsn, "SELECT count(*) FROM tx WHERE linked_at IS NOT NULL") >= total, 600, 0.25)
            stored_s = time.perf_counter() - started
            resends = 0
            for _ in procs:
                kind, value = results.get(timeout=600)
                if kind == "error":
                    raise RuntimeError(value)
                resends += value
            acked_s = time.perf_counter() - started
            # The gap watcher notices the filled gaps at its next scan (gaps.check_interval_s).
            try:
                wait_for("every gap closed", lambda: scalar(
                    dsn, "SELECT count(*) = 0 FROM gaps WHERE closed_at IS NULL"), 60, 0.25)
            except RuntimeError:
                pass            # reported below as gaps left open
            closed_s = time.perf_counter() - started
            open_gaps = scalar(dsn, "SELECT count(*) FROM gaps WHERE closed_at IS NULL")
            filled = scalar(dsn, "SELECT count(*) FROM gaps WHERE outcome = 'filled'")
            pending = scalar(dsn, "SELECT count(*) FROM tx WHERE linked_at IS NULL")
            quarantined = scalar(dsn, "SELECT count(*) FROM quarantine")
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
            pool.stop()
    return {"kiosks": n, "records": total, "connect_s": connect_s, "stored_s": stored_s, "acked_s": acked_s,
            "closed_s": closed_s,
            "gaps_filled": filled, "gaps_open": open_gaps, "pending": pending, "quarantined": quarantined,
            "resend_requests": resends}


# -- the run ---------------------------------------------------------------------------------

def ingest_part(pg: PgCluster, workdir: Path, key: Path, records: int, repeat: int) -> list[str]:
    """Each rate ``repeat`` times, interleaved, best of each: the machine is shared, and a burst of someone
    else's work during one measurement must not decide a ratio."""
    kiosks = fresh_kiosks(50)
    messages = backlog(kiosks, max(1, records // 50))
    print(f"1. ingest with verification: {len(messages)} records of {len(kiosks)} kiosks "
          f"({statistics.mean(len(p) for _t, p in messages):.0f} bytes each), on {os.cpu_count()} cores, "
          f"best of {repeat} interleaved", flush=True)
    best: dict[str, float] = {}
    for r in range(repeat):
        tag = f"-{r}"
        for name in ("copy", "raw", "1", "2"):
            if name == "copy":
                rate = raw_copy_rate(pg, kiosks, messages)
            elif name == "raw":
                rate = raw_subscriber_rate(workdir, messages, tag)
            else:
                rate = ledger_rate(pg, workdir, key, kiosks, messages, int(name), tag)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"   ({name}: {rate:.0f}/s, load average {load_average()})", flush=True)
    print(f"   raw PostgreSQL COPY         {best['copy']:9.0f} rows/s", flush=True)
    print(f"   raw paho QoS 1 subscriber   {best['raw']:9.0f} msg/s", flush=True)
    lower = min(best["copy"], best["raw"])
    failures = []
    for workers in (1, 2):
        rate = best[str(workers)]
        ratio = rate / lower
        verdict = "ok" if ratio >= BUDGET else "OVER BUDGET"
        print(f"   kiosk-ledger, {workers} worker(s)   {rate:9.0f} tx/s = {ratio:5.1%} of the lower "
              f"(budget >= {BUDGET:.0%}): {verdict}   [ledger.check_processes = {check_processes(workers)}]",
              flush=True)
        if ratio < BUDGET:
            failures.append(f"ingest {workers} worker(s) {ratio:.1%}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="backlog for the ingest rates")
    parser.add_argument("--kiosks", type=int, default=1000, help="light kiosks connected at once")
    parser.add_argument("--quick", action="store_true", help="a small run (smoke test of the bench itself)")
    parser.add_argument("--parts", default="123", help="which parts to run (default 123: all)")
    parser.add_argument("--repeat", type=int, default=3, help="ingest measurements, interleaved, best of each")
    args = parser.parse_args()
    if args.quick:
        args.records, args.kiosks = 2_000, 100
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp, PgCluster() as pg:
        workdir = Path(tmp)
        key = init_key(workdir / "keys", "bench-backoffice")[0].private
        if "1" in args.parts:
            failures += ingest_part(pg, workdir, key, args.records, args.repeat)
        if "2" in args.parts:
            rate, seconds = 200.0, (5.0 if args.quick else 15.0)
            lat = latency(pg, workdir, key, rate, seconds)
            print(f"2. latency at {rate:.0f} tx/s, {lat['count']} records, 2 workers: kiosk -> ledger commit "
                  f"p50 {lat['p50_commit_ms']:.1f} ms, p99 {lat['p99_commit_ms']:.1f} ms; kiosk -> tx/ack at the "
                  f"kiosk p50 {lat['p50_ack_ms']:.1f} ms, p99 {lat['p99_ack_ms']:.1f} ms", flush=True)
        if "3" in args.parts:
            many = thousand(pg, workdir, key, args.kiosks, 3, droppers=max(1, args.kiosks // 100))
            ok = many["gaps_open"] == 0 and many["pending"] == 0 and many["quarantined"] == 0 and \
                many["gaps_filled"] >= max(1, args.kiosks // 100)
            print(f"3. {many['kiosks']} light kiosks connected at once (in {many['connect_s']:.1f} s), "
                  f"{many['records']} records: all stored and linked in {many['stored_s']:.1f} s, all "
                  f"acknowledged at their kiosks in {many['acked_s']:.1f} s, every gap closed in "
                  f"{many['closed_s']:.1f} s; gaps filled {many['gaps_filled']} "
                  f"({many['resend_requests']} tx-resend), open {many['gaps_open']}, pending {many['pending']}, "
                  f"quarantined {many['quarantined']}: {'ok' if ok else 'FAILED'}", flush=True)
            if not ok:
                failures.append("1,000 kiosks: a gap left open or a record not linked")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
