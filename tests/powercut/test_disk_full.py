# SPDX-License-Identifier: Apache-2.0
"""A full disk (a real ENOSPC from the filesystem) fails writes cleanly and corrupts nothing.

The store runs on LazyFS with a byte quota: once the files would grow past
it, ``write()`` fails with ENOSPC, as on a full SD card. ``record()`` and
``enqueue()`` must raise StoreFull, the process goes on, the database stays
intact with every record that was acknowledged, and when room returns
recording resumes on the same chain.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import PowerCutRig

from agent.errors import StoreFull
from agent.store.database import DB_NAME, Store
from agent.store.journal import Journal, verify_chain
from agent.store.outbox import Outbox

pytestmark = pytest.mark.skipif(shutil.which("fusermount3") is None or not Path("/dev/fuse").exists(),
                                reason="needs FUSE (/dev/fuse, fusermount3 from the fuse3 package)")


class _NoUplink:
    """Never connected: the outbox only queues (the broker plays no part here)."""

    connected = False

    def add_connect_listener(self, cb: object) -> None:
        pass

    def add_disconnect_listener(self, cb: object) -> None:
        pass


def test_enospc_raises_store_full_and_keeps_the_store_intact(tmp_path: Path) -> None:
    quota = tmp_path / "quota"
    quota.write_text(str(10**9))
    rig = PowerCutRig(tmp_path, quota_file=quota)
    rig.mount_fs()
    try:
        state = rig.mount / "state"
        store = Store.open(state)
        key = Ed25519PrivateKey.generate()

        async def go() -> tuple[list[bytes], int]:
            journal = Journal(store, key, "k-1", fleet="f")
            outbox = Outbox(store, _NoUplink(), min_free_bytes=0)
            await outbox.start()
            kept = [(await journal.record({"n": i})).payload for i in range(20)]
            used = sum(p.stat().st_size for p in (rig.backing / "state").iterdir())
            quota.write_text(str(used + 256 * 1024))            # about 60 more records' room
            failures = 0
            for i in range(2000):
                try:
                    kept.append((await journal.record({"pad": "q" * 400, "n": i})).payload)
                except StoreFull as exc:
                    assert exc.code == "agent.store.full"
                    failures += 1
                    if failures >= 5:
                        break
            assert failures >= 5, "the quota never filled"
            with pytest.raises(StoreFull):
                await outbox.enqueue("evidence", "kiosk/v1/f/k-1/evidence", b"e" * 200_000)
            assert store.integrity_check() == "ok"
            quota.write_text(str(10**9))                         # room again
            kept.append((await journal.record({"after": True})).payload)
            await outbox.stop()
            return kept, failures
        kept, _failures = asyncio.run(go())
        store.close()
        conn = sqlite3.connect(state / DB_NAME)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [bytes(r[0]) for r in conn.execute("SELECT payload FROM journal ORDER BY seq")]
        conn.close()
        assert stored == kept
        assert verify_chain(stored, key.public_key()).ok
    finally:
        rig.power_off()
