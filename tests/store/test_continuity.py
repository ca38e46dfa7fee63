# SPDX-License-Identifier: Apache-2.0
"""What outlives the database: journal epochs, the start-up check, file modes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber

from agent.store.database import CONTINUITY_NAME, DB_NAME, Store
from agent.store.journal import GENESIS, Journal, verify_epochs
from agent.wire.contract import validate


def _record(store: Store, key: Ed25519PrivateKey, count: int) -> list[bytes]:
    async def go() -> list[bytes]:
        journal = Journal(store, key, "k-1", fleet="f")
        return [(await journal.record({"type": "synthetic", "n": i, "pad": "z" * 400})).payload
                for i in range(count)]
    return asyncio.run(go())


def _lose_store(state: Path, how: str) -> None:
    db = state / DB_NAME
    if how == "truncated":
        db.write_bytes(b"")
    else:      # the 16-byte header ("SQLite format 3\0") destroyed
        with open(db, "r+b") as f:
            f.write(os.urandom(16))


@pytest.mark.parametrize("how", ["truncated", "header"])
def test_a_lost_store_starts_a_new_epoch_that_names_the_last_one(tmp_path: Path, how: str) -> None:
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    before = _record(store, key, 5)
    store.close()
    _lose_store(tmp_path, how)

    store = Store.open(tmp_path)
    try:
        after = _record(store, key, 2)
        first = json.loads(next(Journal(store, key, "k-1").payloads()))
    finally:
        store.close()
    old, new = json.loads(before[-1]), [json.loads(p) for p in after]
    # The new journal opens with a record of its own, before the two transactions.
    assert first["data"] == {"type": "epoch", "reason": "store_lost", "prev_epoch": old["epoch"],
                             "prev_last_seq": 5, "prev_last_seq_exact": True}
    assert (first["seq"], first["prev"]) == (1, GENESIS) and first["epoch"] != old["epoch"]
    assert [r["seq"] for r in new] == [2, 3] and {r["epoch"] for r in new} == {first["epoch"]}
    for rec in (old, first, *new):
        validate("tx", rec)
    stream = before + [canonical_bytes(first)] + after
    reports = verify_epochs(stream, key.public_key())
    assert [(r.epoch, r.chain.ok, r.chain.count) for r in reports] == [(old["epoch"], True, 5),
                                                                       (first["epoch"], True, 3)]
    assert reports[1].start is not None and reports[1].start["prev_last_seq"] == 5


def canonical_bytes(rec: dict) -> bytes:
    from agent.store.journal import canonical
    return canonical(rec)


def test_kioskctl_verify_checks_each_epoch_and_names_what_was_lost(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    state = tmp_path / "state"
    store = Store.open(state)
    before = _record(store, key, 6)
    store.close()
    _lose_store(state, "truncated")
    store = Store.open(state)
    _record(store, key, 2)
    after = list(Journal(store, key, "k-1").payloads())        # the epoch record and the two
    store.close()
    pub = tmp_path / "kiosk.pub"
    pub.write_bytes(base64.b64encode(key.public_key().public_bytes_raw()))

    def verify(name: str, lines: list[bytes]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / name
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return subprocess.run([sys.executable, "-m", "fleet.cli", "verify", "--public-key", str(pub), str(path)],
                              capture_output=True, text=True, timeout=60, check=False)

    whole = verify("whole.jsonl", before + after)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert whole.stdout.count("OK: ") == 2 and "began after the kiosk lost its store" in whole.stdout
    assert "ended at seq exactly 6" in whole.stdout
    # The back office never got seq 5-6 of the old epoch: the new epoch's first record says they existed.
    short = verify("short.jsonl", before[:4] + after)
    assert short.returncode == 1 and "MISSING" in short.stdout and "seq 5-6" in short.stdout, short.stdout


def test_an_epoch_goes_on_across_restarts_and_salvage(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    epochs = set()
    for _ in range(3):
        store = Store.open(tmp_path)
        epochs |= {json.loads(p)["epoch"] for p in _record(store, key, 2)}
        store.close()
    assert len(epochs) == 1


def _damage_outbox_after_a_clean_stop(state: Path) -> None:
    db = state / DB_NAME
    root = sqlite3.connect(db).execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[(root - 1) * 4096:(root - 1) * 4096 + 400] = os.urandom(400)
    db.write_bytes(bytes(data))


def test_after_a_clean_stop_the_check_runs_in_the_background_then_sets_the_file_aside(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    _record(store, key, 300)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    _damage_outbox_after_a_clean_stop(tmp_path)      # a dying SD card, while the kiosk was off

    store = Store.open(tmp_path)
    assert store.recovered_from is None and not store.checked_at_open    # no quick_check on the start-up path

    async def background() -> str:
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        store.check_in_background(found.set_result)
        return await asyncio.wait_for(found, 60)
    assert "malformed" in asyncio.run(background()) or store.check_problem
    store.close()                                    # no clean-stop marker after a failed check

    store = Store.open(tmp_path)
    try:
        assert store.checked_at_open and store.recovered_from is not None
        assert store.salvage is not None and "outbox" in store.salvage.damaged_tables
    finally:
        store.close()


def test_after_an_unclean_stop_the_check_runs_at_open(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.bump_counter("bdSeq")
    store.conn.close()                  # as kill -9 leaves it: no clean-stop marker
    assert Store.open(tmp_path).checked_at_open


def test_storage_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        store = Store.open(state)
        _record(store, Ed25519PrivateKey.generate(), 3)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
        store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", CONTINUITY_NAME} <= set(modes)
    assert modes == dict.fromkeys(modes, 384), modes


def test_damage_found_by_the_background_check_sets_the_store_aside_while_serving(
        agent_factory: type[AgentProcess], subscriber: Subscriber) -> None:
    """After a clean stop the start-up path does not read every page; the background check does."""
    from agent.runtime.keys import load_or_create

    agent = agent_factory()
    key = load_or_create(None, agent.state_dir, production=False)
    store = Store.open(agent.state_dir)

    async def record() -> None:
        journal = Journal(store, key, "sim-0001", fleet="dev")
        for i in range(300):
            await journal.record({"type": "synthetic", "n": i, "pad": "z" * 400})
    asyncio.run(record())
    with store.conn:            # acknowledged long ago: nothing at start reads these rows
        store.conn.execute("UPDATE journal SET acked_ms = ts")
        store.conn.execute("DELETE FROM outbox")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    leaves = [r[0] for r in store.conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'journal' AND pagetype = 'leaf' ORDER BY pageno")]
    store.close()
    db = agent.state_dir / DB_NAME
    middle = leaves[len(leaves) // 2]
    data = bytearray(db.read_bytes())
    data[(middle - 1) * 4096:middle * 4096] = os.urandom(4096)     # a card that died while the kiosk was off
    db.write_bytes(bytes(data))

    agent.start()
    alarm = subscriber.wait_for("/alarm/store_corrupt", lambda d: d["active"], timeout=60).data
    assert "kept as agent.db.corrupt-" in alarm["detail"] and "salvaged" in alarm["detail"], alarm
    assert "failed its background check" in agent.log
    assert list(agent.state_dir.glob("agent.db.corrupt-*"))
    assert agent.proc is not None and agent.proc.poll() is None       # still serving
