# SPDX-License-Identifier: Apache-2.0
"""Driver overhead on an ID card read, against the bytes' transfer time.

A full read is find-card, select and read text+photo: three commands out,
three replies back (1,295 bytes for the read). The simulator answers at once
over a pty (which moves bytes at memory speed, whatever the baud rate), so
the time measured here is the driver's own cost plus the simulator's; the
limit is 5 ms beyond what the same bytes take on the wire at the configured
baud rate (10 bits a byte, 8N1).

    .venv/bin/python bench/idcard_read.py [--reads 300] [--baud 115200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hal.idcard import IdCardReader
from hal.protocols import sam
from hal.serial import open_port
from hal.sim.idcard import IdCardSim, sample_card

LIMIT_MS = 5.0


def wire_bytes(card: sam.IdCard) -> int:
    out = sum(len(sam.encode_command(c)) for c in (sam.FIND_CARD, sam.SELECT_CARD, sam.READ_TEXT_PHOTO))
    back = (len(sam.encode_response(sam.Response(sam.SW_FOUND, bytes(4))))
            + len(sam.encode_response(sam.Response(sam.SW_OK, bytes(8))))
            + len(sam.encode_response(sam.build_read_response(card))))
    return out + back


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--baud", type=int, default=115200)
    args = ap.parse_args()
    card = sample_card("resident")
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        sim = IdCardSim(dev_dir=tmp)
        sim.start()
        port = open_port(sim.url, baudrate=args.baud)
        reader = IdCardReader(port)
        reader.sam_status()
        times = []
        for _ in range(args.reads + 20):
            sim.place(card)
            t0 = time.perf_counter()
            got = reader.read()
            times.append(time.perf_counter() - t0)
            assert got == card
        times = times[20:]          # warm-up
        # The simulator's share (building the reply) is inside the measurement; show it too.
        t0 = time.perf_counter()
        for _ in range(200):
            sam.encode_response(sam.build_read_response(card))
        sim_ms = (time.perf_counter() - t0) / 200 * 1000
        port.close()
        sim.stop()
    nbytes = wire_bytes(card)
    wire_ms = nbytes * 10 / args.baud * 1000
    med, p95 = statistics.median(times) * 1000, sorted(times)[int(len(times) * 0.95)] * 1000
    print(f"reads                      {args.reads}")
    print(f"bytes on the wire per read {nbytes}")
    print(f"transfer time at {args.baud} baud  {wire_ms:.2f} ms")
    print(f"measured read over a pty   median {med:.2f} ms, p95 {p95:.2f} ms "
          f"(simulator's reply building ~{sim_ms:.2f} ms of it)")
    print(f"driver overhead (median)   {med:.2f} ms, limit {LIMIT_MS:.1f} ms -> ratio {med / LIMIT_MS:.2f}")
    print(f"driver overhead (p95)      {p95:.2f} ms -> ratio {p95 / LIMIT_MS:.2f}")
    print(f"read time vs wire time     {(wire_ms + med) / wire_ms:.3f} x the bytes' transfer time")
    return 0 if med <= LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
