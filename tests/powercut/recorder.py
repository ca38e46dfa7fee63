# SPDX-License-Identifier: Apache-2.0
"""The store under load, for the power-cut test: records until it is cut off.

Opens the store in ``--state`` (on the LazyFS mount), records synthetic
transactions from ``--workers`` concurrent tasks (so group commit is in
play), and after each ``record()`` returns appends ``<id> <seq>`` to
``--log`` (on the real disk, outside the mount). It also marks outbox rows
delivered, as the pump does (the lazy, NORMAL-commit delete), so the
power cut also lands among delivery marks and checkpoints. Prints
``running`` once the first record is on disk.

    python tests/powercut/recorder.py --state /mnt/lazy/state --log ids.log --sync FULL
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from pathlib import Path

from agent.runtime.keys import load_or_create
from agent.store.database import Store
from agent.store.journal import Journal, synthetic_tx
from agent.store.outbox import _DoneJob


async def main(args: argparse.Namespace) -> None:
    state = Path(args.state)
    store = Store.open(state, synchronous=args.sync)
    if store.recovered_from is not None:
        print(f"RECOVERED {store.recovered_from}", flush=True)
    key = load_or_create(None, state, production=False)
    journal = Journal(store, key, "k-1", fleet="f")
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rng = random.Random(args.seed)
    first = asyncio.Event()

    async def worker() -> None:
        n = 0
        while True:
            rec = await journal.record(synthetic_tx(rng, n))
            os.write(fd, f"{rec.id} {rec.seq}\n".encode())
            first.set()
            n += 1
            if rng.random() < 0.3:
                # "Delivered": the lazy delete the outbox does at PUBACK.
                store.writer.submit(_DoneJob([rec.seq]))
            await asyncio.sleep(rng.uniform(0, args.pause))

    tasks = [asyncio.create_task(worker()) for _ in range(args.workers)]
    await first.wait()
    print("running", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--sync", default="FULL")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=None, help="for the synthetic records and pauses")
    try:
        asyncio.run(main(parser.parse_args()))
    except Exception as exc:  # noqa: BLE001 - after the cut every call fails; say so and go
        print(f"stopped: {exc.__class__.__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)
