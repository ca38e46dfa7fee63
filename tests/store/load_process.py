# SPDX-License-Identifier: Apache-2.0
"""A kiosk under steady load, in a real process, for the crash and outage tests.

Store, journal, outbox and the real uplink (agent.uplink.Uplink) against a
broker; records ``--rate`` transactions a second and, after each
``record()`` returns, appends ``<id> <seq>`` to ``--log`` with one
``write()`` (so a ``kill -9`` cannot lose it: the kernel has it) and an
fsync every 50 lines. With ``--drain`` it records nothing, waits until the
outbox is empty, prints ``drained`` and exits 0.

    python tests/store/load_process.py --state D --port 1883 --log ids.log --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from storekit import mqtt_config

from agent.runtime.keys import load_or_create
from agent.store.database import Store
from agent.store.journal import Journal, synthetic_tx
from agent.store.outbox import Outbox
from agent.uplink.connection import Uplink


async def main(args: argparse.Namespace) -> int:
    state = Path(args.state)
    store = Store.open(state, synchronous=args.sync)
    key = load_or_create(None, state, production=False)
    journal = Journal(store, key, "k-1", fleet="f")
    uplink = Uplink(mqtt_config(args.port))
    outbox = Outbox(store, uplink, max_inflight=args.inflight)
    await uplink.start()
    await outbox.start()
    if args.drain:
        ok = await outbox.wait_drained(args.timeout)
        print("drained" if ok else f"NOT drained: {outbox.pending_count()} left", flush=True)
        await outbox.stop()
        await uplink.stop()
        store.close()
        return 0 if ok else 1
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lines = 0
    import random
    rng = random.Random(args.seed)

    async def one(n: int) -> None:
        nonlocal lines
        rec = await journal.record(synthetic_tx(rng, n))
        os.write(fd, f"{rec.id} {rec.seq}\n".encode())
        lines += 1
        if lines % 50 == 0:
            os.fsync(fd)

    tasks: set[asyncio.Task[None]] = set()
    n = 0
    interval = 1.0 / args.rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    print("running", flush=True)
    while True:
        n += 1
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", default=os.devnull)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--sync", default="FULL")
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None, help="for the synthetic records")
    sys.exit(asyncio.run(main(parser.parse_args())))
