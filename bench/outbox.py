# SPDX-License-Identifier: Apache-2.0
"""bench/outbox: the durable path against raw paho, all in one run, one broker.

Prints, with the limit each is held to (DESIGN section 10, issue 3):

1. publish rate: raw paho QoS 1 (in-flight 50) vs durable transactions
   (journal record -> fsync -> outbox -> PUBACK -> delivery mark); >= 50 %;
2. drain of a 100,000-message backlog: raw paho vs the outbox; >= 50 %;
3. latency from ``record()`` (raw: ``publish()``) to the subscriber at
   200 tx/s, p50/p99; added p99 <= 3 fsyncs + 3 ms, with the fsync time
   measured on this disk in the same run;
4. fsyncs per transaction when they arrive one at a time, counted with
   ``strace -f -c -e trace=fsync,fdatasync`` around a child process (its
   start-up, measured with 0 transactions, subtracted); <= 1.1.

    .venv/bin/python bench/outbox.py [--quick] [--stock-paho]

``--stock-paho`` runs the durable path on stock paho's public API (the
fall-back when the installed paho is not the one ``_BatchedClient`` was
written for) instead of the batched client.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config import MqttConfig
from agent.runtime.keys import load_or_create
from agent.sim.devbroker import DevBroker
from agent.store.database import Store
from agent.store.journal import Journal, synthetic_tx
from agent.store.outbox import Outbox
from agent.uplink.connection import Uplink, paho_version

TOPIC = "kiosk/v1/bench/k-1/tx"
BATCHED = True                # --stock-paho: the durable path on paho's public API only
PAYLOAD = b"x" * 560          # about a signed synthetic record


def _cfg(port: int, client_id: str) -> MqttConfig:
    return MqttConfig(url=f"mqtt://127.0.0.1:{port}", host="127.0.0.1", port=port, tls_enabled=False,
                      client_id=client_id, reconnect_min_s=0.05, reconnect_max_s=0.2, max_inflight=50)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# -- fsync on this disk ---------------------------------------------------------------

def fsync_ms(directory: Path, n: int = 200) -> tuple[float, float]:
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"y" * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times), _pct(times, 99)


# -- raw paho -------------------------------------------------------------------------

def raw_publish(port: int, n: int, rate: float | None = None,
                stamp: dict[str, float] | None = None) -> float:
    """Publish n QoS 1 messages (in-flight 50); seconds until the last PUBACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{os.getpid()}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(50)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]

    def on_publish(*_a: object) -> None:
        acked[0] += 1
        if acked[0] >= n:
            done.set()
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    for i in range(n):
        # paho numbers messages 1..65535 and keys its queue by that id: more
        # than 65,535 queued at once would overwrite each other.
        while i - acked[0] > 30_000:
            time.sleep(0.001)
        if rate:
            target = t0 + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if stamp is not None:
            tag = f"r{i}"
            stamp[tag] = time.monotonic()
            client.publish(TOPIC, json.dumps({"id": tag, "pad": "x" * 500}).encode(), qos=1)
        else:
            client.publish(TOPIC, PAYLOAD, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return elapsed


# -- the durable path -------------------------------------------------------------------

class Kiosk:
    def __init__(self, state: Path, port: int) -> None:
        self.store = Store.open(state)
        key = load_or_create(None, state, production=False)
        self.journal = Journal(self.store, key, "k-1", fleet="bench")
        self.uplink = Uplink(_cfg(port, "k-1"), batched=BATCHED)
        self.outbox = Outbox(self.store, self.uplink, max_inflight=50)

    async def start(self, connect: bool = True) -> None:
        await self.outbox.start()
        if connect:
            await self.uplink.start()
            await self.uplink.wait_connected(10)

    async def stop(self) -> None:
        await self.outbox.stop()
        await self.uplink.stop()
        self.store.close()


async def durable_rate(state: Path, port: int, n: int, concurrency: int = 200) -> float:
    kiosk = Kiosk(state, port)
    await kiosk.start()
    import random
    rng = random.Random(1)
    queue = iter(range(n))
    t0 = time.perf_counter()

    async def caller() -> None:
        for i in queue:
            await kiosk.journal.record(synthetic_tx(rng, i))
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await kiosk.outbox.wait_drained(600)
    elapsed = time.perf_counter() - t0
    await kiosk.stop()
    return elapsed


async def durable_drain(state: Path, port: int, n: int) -> float:
    kiosk = Kiosk(state, port)
    await kiosk.start(connect=False)
    import random
    rng = random.Random(2)
    queue = iter(range(n))

    async def caller() -> None:
        for i in queue:
            await kiosk.journal.record(synthetic_tx(rng, i))
    await asyncio.gather(*(caller() for _ in range(500)))
    t0 = time.perf_counter()
    await kiosk.uplink.start()
    await kiosk.outbox.wait_drained(1200)
    elapsed = time.perf_counter() - t0
    await kiosk.stop()
    return elapsed


async def durable_latency(state: Path, port: int, n: int, rate: float, stamp: dict[str, float]) -> None:
    kiosk = Kiosk(state, port)
    await kiosk.start()
    import random
    rng = random.Random(3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []

    async def one(i: int) -> None:
        tx = synthetic_tx(rng, i)
        tag = f"d{i}"
        tx["tag"] = tag
        stamp[tag] = time.monotonic()
        await kiosk.journal.record(tx)
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    await kiosk.outbox.wait_drained(60)
    await kiosk.stop()


class Arrivals:
    """A subscriber noting when each tagged message arrives (same monotonic clock)."""

    def __init__(self, port: int) -> None:
        self.at: dict[str, float] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lat-{os.getpid()}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        ready = threading.Event()
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(TOPIC, qos=1)
        ready.wait(10)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        doc = json.loads(msg.payload)
        tag = doc.get("data", {}).get("tag") if "data" in doc else doc.get("id")
        if tag is not None:
            self.at.setdefault(tag, now)

    def latencies(self, stamp: dict[str, float]) -> list[float]:
        return [(self.at[t] - s) * 1000 for t, s in stamp.items() if t in self.at]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- fsyncs per transaction (child under strace) -----------------------------------------

async def one_at_a_time(state: Path, port: int, n: int, gap: float) -> None:
    kiosk = Kiosk(state, port)
    await kiosk.start()
    import random
    rng = random.Random(4)
    for i in range(n):
        await kiosk.journal.record(synthetic_tx(rng, i))
        await asyncio.sleep(gap)
    await kiosk.outbox.wait_drained(60)
    await asyncio.sleep(0.5)       # let the last delivery marks commit
    await kiosk.stop()


def count_fsyncs(port: int, n: int, gap: float, work: Path) -> int:
    out = work / f"strace-{n}.txt"
    state = work / f"fsync-state-{n}"
    subprocess.run(["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out),
                    sys.executable, __file__, "--child-one-at-a-time", str(port), str(n), str(gap), str(state)]
                   + ([] if BATCHED else ["--stock-paho"]),
                   check=True, stdout=subprocess.DEVNULL)
    total = 0
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$", line)
        if m:
            total += int(m.group(1))
    return total


# -- main ------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--stock-paho", action="store_true",
                        help="the durable path on stock paho (the fall-back), not the batched client")
    parser.add_argument("--child-one-at-a-time", nargs=4, metavar=("PORT", "N", "GAP", "STATE"))
    args = parser.parse_args()
    global BATCHED
    BATCHED = not args.stock_paho
    faulthandler.register(__import__("signal").SIGUSR1)     # kill -USR1 <pid>: where is it stuck?
    if args.child_one_at_a_time:
        port, n, gap, state = args.child_one_at_a_time
        asyncio.run(one_at_a_time(Path(state), int(port), int(n), float(gap)))
        return 0
    n_rate, n_drain, n_lat, n_one = (5_000, 20_000, 600, 300) if args.quick else (20_000, 100_000, 2_000, 1_000)
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-", dir=ROOT / ".run" if (ROOT / ".run").exists() else None))
    broker = DevBroker(work / "broker", persistence=False).start()
    rows: list[tuple[str, str, str, bool]] = []
    try:
        f50, f99 = fsync_ms(work)
        print(f"durable path on {'the batched client' if BATCHED else 'stock paho (public API)'}, "
              f"paho-mqtt {paho_version()}")
        print(f"fsync on this disk: p50 {f50:.2f} ms, p99 {f99:.2f} ms")

        raw = raw_publish(broker.port, n_rate)
        dur = asyncio.run(durable_rate(work / "s-rate", broker.port, n_rate))
        ratio = (n_rate / dur) / (n_rate / raw)
        rows.append(("publish rate", f"raw {n_rate / raw:,.0f}/s, durable {n_rate / dur:,.0f} tx/s",
                     f"{ratio:.0%} of raw (limit >= 50%)", ratio >= 0.5))

        raw_d = raw_publish(broker.port, n_drain)
        dur_d = asyncio.run(durable_drain(work / "s-drain", broker.port, n_drain))
        ratio = raw_d / dur_d
        rows.append((f"drain {n_drain:,}", f"raw {raw_d:.1f} s, outbox {dur_d:.1f} s",
                     f"{ratio:.0%} of raw speed (limit >= 50%)", ratio >= 0.5))

        arrivals = Arrivals(broker.port)
        raw_stamp: dict[str, float] = {}
        raw_publish(broker.port, n_lat, rate=200, stamp=raw_stamp)
        time.sleep(0.5)
        raw_lat = arrivals.latencies(raw_stamp)
        dur_stamp: dict[str, float] = {}
        asyncio.run(durable_latency(work / "s-lat", broker.port, n_lat, 200, dur_stamp))
        time.sleep(0.5)
        dur_lat = arrivals.latencies(dur_stamp)
        arrivals.close()
        added = _pct(dur_lat, 99) - _pct(raw_lat, 99)
        limit = 3 * f50 + 3
        rows.append(("latency @200/s", (f"raw p50 {_pct(raw_lat, 50):.2f} p99 {_pct(raw_lat, 99):.2f} ms; "
                                        f"durable p50 {_pct(dur_lat, 50):.2f} p99 {_pct(dur_lat, 99):.2f} ms "
                                        f"({len(dur_lat)}/{n_lat} seen)"),
                     f"added p99 {added:.2f} ms (limit 3 fsyncs + 3 ms = {limit:.2f} ms)", added <= limit))

        if shutil.which("strace"):
            base = count_fsyncs(broker.port, 0, 0.005, work)
            total = count_fsyncs(broker.port, n_one, 0.005, work)
            per = (total - base) / n_one
            counted = f"{total - base} fsync/fdatasync for {n_one} tx one at a time (start-up {base} excluded)"
            rows.append(("fsyncs per tx", counted, f"{per:.3f} per tx (limit <= 1.1)", per <= 1.1))
        else:
            rows.append(("fsyncs per tx", "strace not installed", "not measured", False))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    for name, figures, verdict, ok in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {name:16s} {figures}\n      {'':16s} {verdict}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
