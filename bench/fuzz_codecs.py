# SPDX-License-Identifier: Apache-2.0
"""Long-mode fuzzing of every peripheral codec: a million inputs each, by default.

Inputs are random bytes of random length and mutations (bit flips, cuts,
insertions, duplicated spans, spliced preambles) of valid encodings made by
the codecs themselves. The only exception a codec may raise is its own
ProtocolError subclass; anything else is printed and the run exits 1.

    .venv/bin/python bench/fuzz_codecs.py                  # 10^6 per codec
    .venv/bin/python bench/fuzz_codecs.py --count 20000 --seed 7
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hal.camera import SimCamera, jpeg_size
from hal.exc import CameraError
from hal.protocols import escpos, sam
from hal.protocols import scanner as codec
from hal.sim.idcard import SAMPLE_KINDS, sample_card


def mutate(rng: random.Random, data: bytes, extras: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)):]
        elif op == 2:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.randint(1, 32))
            buf[i:i] = buf[i:j]
        elif op == 4 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0x00, 0x0A, 0x0D, 0x10, 0x1B, 0x1D, 0xAA, 0xFF))
        elif op == 5:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.choice(extras)
        elif op == 6 and buf:
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randint(1, 16)]
    return bytes(buf)


def sam_targets() -> tuple[list[bytes], list[Callable[[bytes], object]]]:
    seeds = [sam.encode_response(sam.build_read_response(sample_card(k))) for k in SAMPLE_KINDS]
    seeds += [sam.encode_command(c) for c in (sam.FIND_CARD, sam.SELECT_CARD, sam.READ_TEXT_PHOTO)]
    seeds += [sam.encode_response(sam.Response(sw)) for sw in (0x90, 0x9F, 0x80, 0x41)]
    seeds += [sam.encode_text_block(sample_card(k)) for k in SAMPLE_KINDS]

    def deframe(data: bytes) -> object:
        d = sam.Deframer()
        for i in range(0, len(data), 61):
            for item in d.feed(data[i:i + 61]):
                if not isinstance(item, (sam.Response, sam.SamProtocolError)):
                    raise TypeError(f"deframer yielded {type(item)}")
        return None

    def read_reply(data: bytes) -> object:
        return sam.parse_read_response(sam.Response(0x90, data[14:-1] if len(data) > 15 else data))

    def text(data: bytes) -> object:
        return sam.parse_text_block(data[:256].ljust(256, b" ") if len(data) >= 200 else data)

    return seeds, [sam.decode_response, sam.decode_command, deframe, read_reply, text]


def escpos_targets() -> tuple[list[bytes], list[Callable[[bytes], object]]]:
    seeds = [escpos.Receipt().line("回执号 Receipt 42").line("交易 tx-1").qr("https://example.invalid/r/1").cut()
             .encode(), escpos.Receipt().line("ascii only").cut(partial=False).encode(),
             b"\x10\x04\x01\x10\x04\x04\x1d\x72\x01"]

    def strict(data: bytes) -> object:
        return escpos.EscposParser(strict=True).feed(data)

    def lenient(data: bytes) -> object:
        for item in escpos.EscposParser().feed(data):
            if isinstance(item, Exception) and not isinstance(item, escpos.EscposError):
                raise TypeError(f"parser yielded {type(item)}")
        return None

    def status(data: bytes) -> object:
        return escpos.decode_status(data[0] % 6 if data else 1, data[1] if len(data) > 1 else 0)

    return seeds, [strict, lenient, status]


def scanner_targets() -> tuple[list[bytes], list[Callable[[bytes], object]]]:
    seeds = [codec.encode_scan("134567890123456789", "CRLF"), codec.encode_scan("https://example.invalid/q"),
             codec.encode_scan("6901234567892", "CR") * 3, "二维码内容".encode() + b"\r"]

    def lines(data: bytes) -> object:
        for item in codec.LineDecoder().feed(data):
            if not isinstance(item, (str, codec.ScannerProtocolError)):
                raise TypeError(f"decoder yielded {type(item)}")
        return None

    return seeds, [lines, codec.decode_line]


def jpeg_targets() -> tuple[list[bytes], list[Callable[[bytes], object]]]:
    return [SimCamera().capture_still().jpeg[:600]], [jpeg_size]


CODECS = {
    "sam": (sam_targets, sam.SamProtocolError),
    "escpos": (escpos_targets, escpos.EscposError),
    "scanner": (scanner_targets, codec.ScannerProtocolError),
    "jpeg_header": (jpeg_targets, CameraError),
}


def run(name: str, count: int, seed: int) -> tuple[int, float, int]:
    make, allowed = CODECS[name]
    seeds, targets = make()
    extras = [sam.PREAMBLE, b"\x10\x04", b"\x1d\x28\x6b", b"\x1c\x26", b"\r\n", b"\xff\xd8\xff\xc0"]
    rng = random.Random(seed)
    failures = 0
    start = time.perf_counter()
    for n in range(count):
        if n % 4 == 0:
            data = rng.randbytes(rng.choice((0, 1, 3, 8, 16, 64, 256, 300, 1295)))
        else:
            data = mutate(rng, rng.choice(seeds), extras)
        target = targets[n % len(targets)]
        try:
            target(data)
        except allowed:
            pass
        except Exception:  # noqa: BLE001 - this is what we hunt
            failures += 1
            if failures <= 5:
                print(f"{name}: {target.__name__} raised on {data[:80].hex()}", file=sys.stderr)
                traceback.print_exc()
    return count, time.perf_counter() - start, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="inputs per codec")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("codecs", nargs="*", default=list(CODECS))
    args = ap.parse_args()
    bad = 0
    print(f"{'codec':<12} {'inputs':>10} {'seconds':>9} {'inputs/s':>10} {'failures':>9}")
    for name in args.codecs:
        count, secs, failures = run(name, args.count, args.seed)
        bad += failures
        print(f"{name:<12} {count:>10,} {secs:>9.1f} {count / secs:>10,.0f} {failures:>9}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
