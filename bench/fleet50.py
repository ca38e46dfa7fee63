# SPDX-License-Identifier: Apache-2.0
"""50 simulated kiosks on one machine, and ``kioskctl fleet`` / ``cmd --all`` over them.

    .venv/bin/python bench/fleet50.py            # 50 kiosks
    .venv/bin/python bench/fleet50.py -n 10      # fewer, for a quick look

Starts a private broker and N real agent processes (every peripheral
simulated), waits for all births, then puts some kiosks into maintenance
(signed ``cmd``) and opens some doors (simulator control), and checks that
``kioskctl fleet --json`` shows every kiosk's true state (online, mode,
alarms; the truth read from each agent's simulator socket) within 2 s.
Prints start-up time, memory (RSS per agent and in all), idle CPU, and the
wall time of ``fleet`` and ``cmd --all ping``. Exit 1 if the table is wrong.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "commands"))

from cmdkit import KIOSKCTL, Keys
from kiosktest import AgentProcess, Subscriber, wait_until

from agent.sim.devbroker import DevBroker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    args = parser.parse_args(argv)
    keys = Keys()
    with tempfile.TemporaryDirectory(prefix="fleet50-") as tmp, DevBroker(Path(tmp) / "broker") as broker:
        root = Path(tmp)
        key_paths = keys.write(root / "keys")
        births = Subscriber(broker.url, "kiosk/v1/dev/+/state")
        agents: list[AgentProcess] = []
        ids = [f"k-{i:04d}" for i in range(args.n)]
        t0 = time.monotonic()
        try:
            for kiosk in ids:
                agent = AgentProcess(root / kiosk, broker_url=broker.url,
                                     overrides={"id": f'"{kiosk}"', "interval_s": "300"})
                agent.config.write_text(agent.config.read_text() + keys.config())
                agents.append(agent.start())
            wait_until(lambda: len({m.topic for m in births.matching("/state", lambda d: d.get("online"))})
                       == args.n, 300, 0.2, "every birth")
            started_s = time.monotonic() - t0
            procs = [psutil.Process(a.proc.pid) for a in agents if a.proc]
            rss = [p.memory_info().rss / 2**20 for p in procs]
            uss = [p.memory_full_info().uss / 2**20 for p in procs]     # private: what N more kiosks cost
            cpu0 = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            time.sleep(args.idle)
            cpu1 = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            idle_pct = 100 * (cpu1 - cpu0) / args.idle / args.n

            maint = ids[::5]
            base = ["--broker", broker.url, "--fleet", "dev", "--key", str(key_paths["admin"])]
            for kiosk in maint:
                done = subprocess.run([KIOSKCTL, "cmd", *base, kiosk, "set-mode", "mode=maintenance"],
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stderr
            doors = ids[1::7]
            for agent in agents:
                if agent.config.parent.name in doors:
                    agent.sim("door", "open")
            time.sleep(0.5)      # let the last alarm reach the broker
            truth = {}
            for kiosk, agent in zip(ids, agents, strict=True):
                mode = agent.sim("light_tower", "status")["mode"]
                door = agent.sim("door", "status")["active"]
                truth[kiosk] = (True, mode, ["door_open"] if door else [])

            t = time.monotonic()
            table = subprocess.run([KIOSKCTL, "fleet", "--broker", broker.url, "--fleet", "dev", "--json"],
                                   capture_output=True, text=True, timeout=120)
            fleet_s = time.monotonic() - t
            rows = {r["kiosk"]: (r["online"], r["mode"], r["alarms"]) for r in json.loads(table.stdout)}
            wrong = {k: (rows.get(k), truth[k]) for k in ids if rows.get(k) != truth[k]}

            t = time.monotonic()
            ping = subprocess.run([KIOSKCTL, "cmd", *base, "--all", "ping", "--json"], capture_output=True,
                                  text=True, timeout=300)
            ping_s = time.monotonic() - t
            pings = json.loads(ping.stdout) if ping.stdout else {}
            ok = sum(1 for r in pings.values() if r and r.get("status") == "succeeded")
        finally:
            for agent in agents:
                agent.kill()
            births.close()
    print(f"kiosks:                 {args.n} agent processes, {psutil.cpu_count()} CPUs")
    print(f"all online after:       {started_s:.1f} s (sequential start)")
    print(f"RSS per agent:          mean {sum(rss) / len(rss):.1f} MB, max {max(rss):.1f} MB; "
          f"all {sum(rss):.0f} MB; private (USS) mean {sum(uss) / len(uss):.1f} MB, all {sum(uss):.0f} MB")
    print(f"idle CPU per agent:     {idle_pct:.2f} % of one core (over {args.idle:g} s)")
    print(f"kioskctl fleet:         {fleet_s:.2f} s wall (process start included), "
          f"{len(rows)} rows, {len(wrong)} wrong")
    print(f"kioskctl cmd --all ping: {ping_s:.2f} s wall, {ok}/{args.n} succeeded")
    for kiosk, (seen, real) in sorted(wrong.items()):
        print(f"  WRONG {kiosk}: table {seen}, truth {real}")
    return 0 if not wrong and len(rows) == args.n and ok == args.n and fleet_s <= 2.0 + 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
