# SPDX-License-Identifier: Apache-2.0
"""Footprint of the agent against a bare interpreter, measured in one run.

Starts a private broker; then, one after the other:

- a *bare* interpreter importing the agent's runtime dependencies (paho,
  pyserial, cryptography, psutil, sqlite3, asyncio, tomllib) that connects
  one MQTT 5 client and idles — the limit the budgets are ratios of;
- the agent itself (``kiosk-agent run``) with every peripheral simulated.

For each it prints the idle resident memory (after settling), CPU used over
the idle window, and the time from process start to MQTT connected. For the
agent it also measures the latency from a simulated door edge to the
``alarm/door_open`` message at a subscriber, and the start to connected with
a 90-day journal (160,000 acknowledged records) against an empty one, each a
median of three starts after a clean stop.

    python bench/footprint.py [--idle 30] [--door-toggles 20] [--journal 160000]

Budgets (DESIGN.md §10): RSS <= 1.25 x bare; idle CPU <= 0.5 % of one core;
start to connected <= 0.7 s, and <= 1.5 x that with the 160,000-record
journal; door alarm within 200 ms of the edge; SIGTERM to exit within 5 s
(moved here from tests/test_daemon.py, issue 14 #9).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from kiosktest import Subscriber, wait_until

from agent.sim.devbroker import DevBroker
from agent.sim.devrun import write_sim_config

# Which modules "the same imports" are: everything the agent's modules load
# that is not the project's own code (stdlib and third-party alike).
LIST_IMPORTS = textwrap.dedent("""
    import importlib, sys
    import agent.runtime.daemon, agent.cli, agent.runtime.selftest   # the daemon imports its components
    import hal.idcard, hal.printer, hal.scanner, hal.camera, hal.coproc, hal.sim, hal.sim.coproc
    # The local API imports websockets when its server starts, not at import: name what it loads then.
    import websockets.asyncio.server, websockets.http11, websockets.datastructures, websockets.exceptions
    own = ("agent", "hal", "firmware", "fleet", "provisioning")
    print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] not in own and not m.startswith("_")
                          and ("." not in m or m.startswith(("cryptography.", "nacl.", "paho.", "serial.",
                                                             "websockets."))))))
""")

BARE = textwrap.dedent("""
    import importlib, os, sys, time, threading
    for name in os.environ["BARE_IMPORTS"].split():
        try:
            importlib.import_module(name)
        except Exception:
            pass
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    t0 = float(sys.argv[3])
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bare", protocol=MQTTProtocolVersion.MQTTv5)
    c.on_connect = lambda *a: (print("CONNECTED", time.time() - t0, flush=True), done.set())
    c.connect(sys.argv[1], int(sys.argv[2]), keepalive=60)
    c.loop_start()
    done.wait(10)
    time.sleep(3600)
""")


def measure(proc: subprocess.Popen[bytes], idle_s: float) -> tuple[float, float]:
    """(RSS MB after settling, % of one core over ``idle_s``)."""
    ps = psutil.Process(proc.pid)
    time.sleep(3.0)
    cpu0 = ps.cpu_times()
    t0 = time.monotonic()
    time.sleep(idle_s)
    cpu1 = ps.cpu_times()
    elapsed = time.monotonic() - t0
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    rss = ps.memory_info().rss / 2**20
    return rss, 100.0 * used / elapsed


def agent_imports() -> str:
    return subprocess.run([sys.executable, "-c", LIST_IMPORTS], capture_output=True, text=True, check=True,
                          cwd=str(ROOT)).stdout.strip()


def run_bare(broker: DevBroker, idle_s: float) -> dict[str, float]:
    env = {**os.environ, "BARE_IMPORTS": agent_imports()}
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-c", BARE, "127.0.0.1", str(broker.port), repr(start)],
                            stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        connected = float(line.split()[1])
        rss, cpu = measure(proc, idle_s)
    finally:
        proc.kill()
        proc.wait()
    return {"rss_mb": rss, "cpu_pct": cpu, "connect_s": connected}


def run_agent(broker: DevBroker, idle_s: float, toggles: int, workdir: Path) -> dict[str, float]:
    config = write_sim_config(workdir / "agent.toml", broker.url, workdir / "state",
                              overrides={"interval_s": "300"})
    sub = Subscriber(broker.url, "kiosk/#")
    start = time.time()
    t_mono = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
    try:
        birth = sub.wait_for("/state", lambda d: d.get("online") is True, timeout=30)
        connected = birth.at - t_mono
        rss, cpu = measure(proc, idle_s)
        latencies = door_latency(sub, workdir / "state", toggles)
    finally:
        stopping = time.monotonic()
        proc.terminate()
        proc.wait(10)
        stop_s = time.monotonic() - stopping
        sub.close()
    _ = start
    return {"rss_mb": rss, "cpu_pct": cpu, "connect_s": connected, "stop_s": stop_s,
            "door_p50_ms": statistics.median(latencies), "door_max_ms": max(latencies)}


def fill_journal(state_dir: Path, records: int) -> None:
    """A kiosk's 90 days: ``records`` signed records, all acknowledged, none queued."""
    import asyncio
    import random

    from agent.runtime.keys import load_or_create
    from agent.store.database import Store
    from agent.store.journal import Journal, synthetic_tx

    key = load_or_create(None, state_dir, production=False)
    store = Store.open(state_dir)

    async def record() -> None:
        journal = Journal(store, key, "sim-0001", fleet="dev")
        rng = random.Random(7)
        for at in range(0, records, 2000):
            await asyncio.gather(*(journal.record(synthetic_tx(rng, n)) for n in range(at, min(at + 2000, records))))
    try:
        asyncio.run(record())
        with store.conn:
            store.conn.execute("UPDATE journal SET acked_ms = ts")
            store.conn.execute("DELETE FROM outbox")
    finally:
        store.close()


def start_to_connected(broker: DevBroker, workdir: Path, records: int, runs: int = 3) -> float:
    """Median seconds from ``kiosk-agent run`` to its birth, with ``records`` in the journal."""
    config = write_sim_config(workdir / "agent.toml", broker.url, workdir / "state",
                              overrides={"interval_s": "300"})
    fill_journal(workdir / "state", records)
    times = []
    for attempt in range(runs + 1):          # the first start creates keys: not counted
        sub = Subscriber(broker.url, "kiosk/+/+/sim-0001/state")
        t_mono = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
        try:
            birth = sub.wait_for("/state", lambda d: d.get("online") is True, timeout=60)
            if attempt:
                times.append(birth.at - t_mono)
        finally:
            proc.terminate()
            proc.wait(30)
            sub.close()
    return statistics.median(times)


def door_latency(sub: Subscriber, state_dir: Path, toggles: int) -> list[float]:
    from agent.sim.simcontrol import send_sim_command, socket_path

    out = []
    for i in range(toggles):
        active = i % 2 == 0
        before = len(sub.matching("/alarm/door_open"))
        t0 = time.monotonic()
        reply = send_sim_command(socket_path(state_dir), "door", "open" if active else "close")
        edge = t0  # the pin changes inside the request; the reply adds the socket round trip only
        assert reply["ok"], reply
        msg = wait_until(lambda b=before: sub.matching("/alarm/door_open")[b:], 5, message="door alarm")[0]
        assert msg.data["active"] is active
        out.append((msg.at - edge) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=30.0, help="idle window for CPU, seconds")
    parser.add_argument("--door-toggles", type=int, default=20)
    parser.add_argument("--journal", type=int, default=160_000, help="records for the start-up measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, DevBroker(Path(tmp) / "broker") as broker:
        bare = run_bare(broker, args.idle)
        agent = run_agent(broker, args.idle, args.door_toggles, Path(tmp) / "agent")
        start_empty = start_to_connected(broker, Path(tmp) / "empty", 0)
        start_full = start_to_connected(broker, Path(tmp) / "full", args.journal)
    ratio_rss = agent["rss_mb"] / bare["rss_mb"]
    ratio_start = start_full / start_empty
    result = {"bare": bare, "agent": agent, "rss_ratio": ratio_rss, "start_empty_journal_s": start_empty,
              "start_full_journal_s": start_full, "journal_records": args.journal, "start_ratio": ratio_start}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'':24}{'bare imports':>14}{'agent':>12}{'ratio':>9}{'budget':>12}")
    print(f"{'idle RSS (MB)':24}{bare['rss_mb']:14.1f}{agent['rss_mb']:12.1f}{ratio_rss:9.2f}{'<= 1.25x':>12}")
    print(f"{'idle CPU (% of a core)':24}{bare['cpu_pct']:14.3f}{agent['cpu_pct']:12.3f}{'':9}{'<= 0.5 %':>12}")
    print(f"{'start to connected (s)':24}{bare['connect_s']:14.3f}{agent['connect_s']:12.3f}"
          f"{agent['connect_s'] / bare['connect_s']:9.2f}{'<= 0.7 s':>12}")
    print(f"start to connected, journal of 0 / {args.journal:,} records: {start_empty:.3f} s / {start_full:.3f} s, "
          f"ratio {ratio_start:.2f} (budget <= 1.5x)")
    print(f"door edge to alarm at subscriber: p50 {agent['door_p50_ms']:.1f} ms, "
          f"max {agent['door_max_ms']:.1f} ms over {args.door_toggles} edges (budget 200 ms)")
    print(f"SIGTERM to exit (clean stop, offline state published): {agent['stop_s']:.2f} s (budget 5 s)")
    ok = ratio_rss <= 1.25 and agent["cpu_pct"] <= 0.5 and agent["connect_s"] <= 0.7 and agent["door_max_ms"] <= 200 \
        and ratio_start <= 1.5 and agent["stop_s"] <= 5.0
    print("within budget" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
