# SPDX-License-Identifier: Apache-2.0
"""The agent's threads share one malloc arena (agent/runtime/memory.py): counted in /proc/<pid>/maps.

glibc's arena heaps are anonymous mappings starting at a 64 MiB boundary (HEAP_MAX_SIZE on 64-bit),
which thread stacks and mmap'd blocks practically never do.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kiosktest import AgentProcess, Subscriber

from agent.sim.devbroker import DevBroker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, /proc")

ARENA_HEAPS = textwrap.dedent("""
    def arena_heaps(pid):
        heaps = 0
        for line in open(f"/proc/{pid}/maps"):
            fields = line.split()
            if len(fields) == 5 and int(fields[0].split("-")[0], 16) % (64 << 20) == 0:
                heaps += 1
        return heaps
""")

# Threads that each allocate past pymalloc (> 512 bytes) and hold it, after asking (or not) for one arena.
PROBE = ARENA_HEAPS + textwrap.dedent("""
    import sys, threading
    from agent.runtime.memory import one_malloc_arena
    if sys.argv[1] == "one":
        assert one_malloc_arena()
    held, ready, done = [], threading.Barrier(9), threading.Event()
    def work():
        held.append([bytearray(4096) for _ in range(64)])
        ready.wait()
        done.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    ready.wait()
    print(arena_heaps("self"))
    done.set()
""")


def arena_heaps(pid: int) -> int:
    namespace: dict[str, object] = {}
    exec(ARENA_HEAPS, namespace)
    count = namespace["arena_heaps"]
    assert callable(count)
    return int(count(pid))


def probe(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


def test_threads_allocate_from_one_arena_once_asked() -> None:
    assert probe("default") >= 2          # the count does see glibc's per-thread arenas when they are there
    assert probe("one") == 0


def test_the_running_agent_has_no_arena_but_the_main_one(tmp_path: Path, broker: DevBroker) -> None:
    sub = Subscriber(broker.url, "kiosk/#")
    agent = AgentProcess(tmp_path / "kiosk", broker_url=broker.url).start()
    try:
        sub.wait_for("/state", lambda doc: doc.get("online") is True, timeout=30)
        assert agent.proc is not None
        assert arena_heaps(agent.proc.pid) == 0
    finally:
        agent.terminate()
        sub.close()
