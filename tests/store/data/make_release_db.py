# SPDX-License-Identifier: Apache-2.0
"""Write ``release-817af0e.db``: a store as the released agent (commit 817af0e) leaves it.

Run against that commit's code, never today's: the point of the file is
that today's code did not write it.

    git worktree add /tmp/rel 817af0e
    PYTHONPATH=/tmp/rel .venv/bin/python tests/store/data/make_release_db.py tests/store/data
    git worktree remove /tmp/rel

What it holds (tests/store/test_migrations.py checks each survives an
upgrade): five journal records (two acknowledged) with their queued ``tx``
rows, a result and an alarm queued, an active alarm, two command nonces and
an audit row, sealed evidence for one transaction (stored and queued), the
service mode and a pending remote-config apply in ``agent_settings``, and
the ``bdSeq`` counter. Keys are fixed seeds (below) so the test can verify
signatures and unseal; they guard nothing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

SIGNING_SEED = bytes(range(32))              # the kiosk's Ed25519 key in this fixture
RECIPIENT_SEED = bytes(range(32, 64))        # the back office's X25519 key in this fixture
FLEET, KIOSK = "f", "k-1"
NONCES = {"9f1c0d3a6b2e4f5a8c7d6e5f4a3b2c1d": 4_102_444_800_000,      # expires 2100-01-01
          "0a1b2c3d4e5f60718293a4b5c6d7e8f9": 4_102_444_800_000}
PENDING = {"version": 7, "previous": 6, "sha256": "ab" * 32, "at_ms": 1_764_460_800_000,
           "confirm_within_s": 120, "source": "desired", "boot_id": "release-boot"}


class _Offline:
    """An uplink that never connects: the release's outbox keeps everything queued."""

    connected = False

    def add_connect_listener(self, cb: Any) -> None:
        pass

    def add_disconnect_listener(self, cb: Any) -> None:
        pass


async def _fill(state: Path) -> None:
    # The release's flat modules, imported here so that the test can import
    # this file's constants under today's code.
    from agent.alarms import Alarms
    from agent.commands import audit, claim_nonce, ensure_schema, put_setting
    from agent.contract import Topics, encode, envelope
    from agent.evidence import EvidenceContent, EvidenceStore, evidence_payload, seal_content
    from agent.journal import Journal
    from agent.outbox import Outbox

    from agent.store import Store

    store = Store.open(state)
    topics = Topics(FLEET, KIOSK)
    outbox = Outbox(store, _Offline())
    await outbox.start()
    store.bump_counter("bdSeq")
    store.bump_counter("bdSeq")
    journal = Journal(store, Ed25519PrivateKey.from_private_bytes(SIGNING_SEED), KIOSK, fleet=FLEET)
    records = []
    for n in range(5):
        records.append(await journal.record({"service": "pension_record_print", "outcome": "completed",
                                             "n": n, "note": "养老金"}))
    await journal.mark_acked([records[0].id, records[1].id])

    conn = store.conn
    ensure_schema(conn)
    for nonce, expires in NONCES.items():
        assert claim_nonce(conn, nonce, expires)
    audit(conn, name="reboot", outcome="refused", key_id="op-1", nonce="dead" * 8, code="cmd.expired",
          message="expired")
    put_setting(conn, "mode", "maintenance")
    put_setting(conn, "config_version", "6")
    put_setting(conn, "config_pending", json.dumps(PENDING))

    alarms = Alarms(KIOSK, topics, lambda topic, payload: outbox.enqueue_nowait("alarm", topic, payload, True),
                    conn=conn)
    alarms.raise_("paper_low", "near end", device="printer")

    recipient = X25519PrivateKey.from_private_bytes(RECIPIENT_SEED).public_key().public_bytes_raw()
    tx = records[4]
    content = EvidenceContent(service="pension_record_print", card={"name": "测试"}, photo_wlt=bytearray(b"WLT" * 8))
    bundle = seal_content(recipient, tx.id, content)
    payload = evidence_payload(KIOSK, tx.id, tx.seq, "pension_record_print", bundle, ["card", "photo_wlt"])
    evidence = EvidenceStore(store.path, retention_days=30)
    evidence.put(tx.id, payload)
    evidence.close()
    await outbox.enqueue("evidence", topics.evidence, payload)
    await outbox.enqueue("result", topics.cmd_result("reboot"),
                         encode(envelope(KIOSK, status="succeeded", name="reboot")))
    await outbox.stop()
    store.close()


def main(out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        asyncio.run(_fill(state))
        db = state / "agent.db"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()          # the last connection: SQLite removes the emptied -wal (the file stays in WAL mode)
        assert not Path(f"{db}-wal").exists()
        target = out_dir / "release-817af0e.db"
        shutil.copyfile(db, target)
    return target


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)))
