# SPDX-License-Identifier: Apache-2.0
"""Schema versions: a released agent's database upgrades whole; a newer release's is refused, untouched.

``data/release-817af0e.db`` was written by the released code (commit
817af0e) with ``data/make_release_db.py``; today's code never wrote it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from kiosktest import AgentProcess

from agent.control.commands import claim_nonce
from agent.errors import StoreError
from agent.runtime.alarms import Alarms
from agent.sessions.evidence import EvidenceStore
from agent.store import schema
from agent.store.database import DB_NAME, Store, get_setting
from agent.store.journal import Journal, verify_chain, verify_epochs
from agent.store.schema import SCHEMA_VERSION, StoreTooNew
from agent.wire.contract import Topics
from agent.wire.sealing import Bundle, open_bundle
from agent.wire.signing import CommandRefused

DATA = Path(__file__).parent / "data"
RELEASE_DB = DATA / "release-817af0e.db"
sys.path.insert(0, str(DATA))
from make_release_db import FLEET, KIOSK, NONCES, PENDING, RECIPIENT_SEED, SIGNING_SEED  # noqa: E402

SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(SIGNING_SEED)


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read without touching the file (``immutable``)."""
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


def _shape(conn: sqlite3.Connection) -> dict[str, Any]:
    """Tables with their columns, and index names: what a schema is, whitespace aside."""
    names = conn.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                         "ORDER BY name").fetchall()
    return {name: (kind, table, [tuple(c[1:]) for c in conn.execute(f'PRAGMA table_info("{name}")')]
                   if kind == "table" else None) for kind, name, table in names}


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _release_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700, parents=True)
    shutil.copyfile(RELEASE_DB, state / DB_NAME)
    return state


def test_the_fixture_is_a_release_database() -> None:
    before = _rows(RELEASE_DB)
    conn = sqlite3.connect(f"file:{RELEASE_DB}?immutable=1", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0      # the release never set one
    finally:
        conn.close()
    assert RELEASE_DB.read_bytes()[18:20] == b"\x02\x02"       # WAL mode, as every kiosk runs it
    assert not Path(f"{RELEASE_DB}-wal").exists()
    assert len(before["journal"]) == 5 and len(before["outbox"]) == 8
    assert all("epoch" not in json.loads(row[4]) for row in before["journal"])     # written before epochs


def test_a_release_database_upgrades_with_everything_it_held(tmp_path: Path) -> None:
    state = _release_state(tmp_path)
    before = _rows(state / DB_NAME)

    store = Store.open(state)
    try:
        assert schema.user_version(store.conn) == SCHEMA_VERSION
        after = _rows(state / DB_NAME)
        for table, rows in before.items():
            missing = set(rows) - set(after[table])
            assert not missing, f"{table}: rows lost in the upgrade: {missing}"
        for table in ("journal", "outbox", "nonces", "alarms", "evidence", "command_audit"):
            assert after[table] == before[table], table

        # Journal: the five records, two acknowledged, and the chain verifies with the release's key.
        payloads = [row[4] for row in after["journal"]]
        report = verify_chain(payloads, SIGNING_KEY.public_key())
        assert report.ok and report.count == 5, report
        assert [row[5] is not None for row in after["journal"]] == [True, True, False, False, False]

        # Queued messages: every tx row still finds its journal record; the others keep their bytes.
        queued: dict[str, list[tuple[Any, ...]]] = {}
        for row in after["outbox"]:
            queued.setdefault(row[1], []).append(row)
        assert {cls: len(rows) for cls, rows in queued.items()} == {"tx": 5, "alarm": 1, "evidence": 1, "result": 1}
        by_seq = {row[0]: row[4] for row in after["journal"]}
        assert [by_seq[row[4]] for row in queued["tx"]] == payloads
        assert all(row[3] for cls, rows in queued.items() if cls != "tx" for row in rows)

        # Nonces: a replay of a command the release accepted is still refused.
        for nonce, expires in NONCES.items():
            with pytest.raises(CommandRefused) as refused:
                claim_nonce(store, nonce, store.created_ms + 1, expires, 60_000)
            assert refused.value.code == "cmd.replayed"

        # The active alarm comes back into today's Alarms.
        alarms = Alarms(KIOSK, Topics(FLEET, KIOSK), lambda _topic, _payload: None, conn=store.conn)
        assert alarms.codes() == ["paper_low"]
        assert alarms.active["paper_low"].device == "printer"

        # Pending config apply and service mode.
        assert json.loads(get_setting(store.conn, "config_pending") or "null") == PENDING
        assert get_setting(store.conn, "mode") == "maintenance"
        assert store.counter("bdSeq") == 2

        # Evidence: stored, and the back office can still open it.
        evidence = EvidenceStore(store.path, retention_days=30)
        try:
            tx_id = json.loads(payloads[4])["id"]
            assert evidence.ids() == [tx_id]
            sealed = json.loads(evidence.get(tx_id) or b"null")
            plain = open_bundle(X25519PrivateKey.from_private_bytes(RECIPIENT_SEED),
                                Bundle.from_dict(sealed["bundle"]), tx_id)
            assert json.loads(plain)["card"] == {"name": "测试"}
        finally:
            evidence.close()

        # The journal goes on after the release's last record; the stream still verifies.
        async def record() -> bytes:
            journal = Journal(store, SIGNING_KEY, KIOSK, fleet=FLEET)
            assert journal.head_seq == 5
            return (await journal.record({"service": "after_upgrade"})).payload
        new = asyncio.run(record())
        assert json.loads(new)["seq"] == 6
        epochs = verify_epochs([*payloads, new], SIGNING_KEY.public_key())
        assert all(e.chain.ok for e in epochs), [str(e.chain) for e in epochs]
    finally:
        store.close()

    # Opened again: already current, nothing to do, nothing lost.
    again = Store.open(state)
    try:
        assert schema.migrate(again.conn) == SCHEMA_VERSION
        assert again.conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 6
    finally:
        again.close()


def test_an_upgraded_release_database_has_the_shape_of_a_new_one(tmp_path: Path) -> None:
    upgraded = Store.open(_release_state(tmp_path / "old"))
    new = Store.open(tmp_path / "new")
    try:
        assert schema.user_version(new.conn) == SCHEMA_VERSION
        assert _shape(upgraded.conn) == _shape(new.conn)
        assert "outbox_cls_id" in _shape(new.conn)
    finally:
        upgraded.close()
        new.close()


def test_a_migration_that_fails_leaves_the_file_at_its_old_version(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state = _release_state(tmp_path)
    broken = schema.Migration(SCHEMA_VERSION + 1, "a step that fails half way", (
        "CREATE TABLE half_done (a INTEGER)", "INSERT INTO no_such_table VALUES (1)"))
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as failed:
        Store.open(state)
    assert "no_such_table" in str(failed.value)
    conn = sqlite3.connect(state / DB_NAME)
    try:
        # Not even the release's version 0 -> 2 steps are kept: the ladder is one transaction.
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in names and "outbox_cls_id" not in names
    finally:
        conn.close()
    assert not list(state.glob("*.corrupt-*"))


def _make_too_new(state: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.close()
    assert not Path(f"{state / DB_NAME}-wal").exists()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_database_from_a_newer_release_is_refused_and_left_untouched(tmp_path: Path, journal_mode: str) -> None:
    state = _release_state(tmp_path)
    _make_too_new(state, journal_mode)
    before = _digest(state)

    with pytest.raises(StoreTooNew) as refused:
        Store.open(state)
    assert refused.value.code == "agent.store.too_new"
    assert (refused.value.found, refused.value.known) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this agent knows ({SCHEMA_VERSION})" in str(refused.value)
    assert _digest(state) == before          # same files, same bytes: not moved aside, not upgraded

    # The other ways in refuse it too.
    with pytest.raises(StoreTooNew):
        EvidenceStore(state / DB_NAME, retention_days=30)
    assert _digest(state) == before


def test_the_agent_reports_a_store_from_a_newer_release_and_leaves_it(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", broker_url="mqtt://127.0.0.1:9")     # never reached
    agent.state_dir.mkdir(mode=0o700)
    shutil.copyfile(RELEASE_DB, agent.state_dir / DB_NAME)
    _make_too_new(agent.state_dir, "wal")
    db_before = hashlib.sha256((agent.state_dir / DB_NAME).read_bytes()).hexdigest()
    agent.start()
    try:
        assert agent.proc is not None
        assert agent.proc.wait(30) == 1
    finally:
        agent.kill()
    reported = (f"agent.store.too_new: {agent.state_dir / DB_NAME} has schema version {SCHEMA_VERSION + 1}, "
                f"newer than this agent knows ({SCHEMA_VERSION})")
    assert reported in agent.log, agent.log[-2000:]
    assert "corrupt" not in agent.log
    assert hashlib.sha256((agent.state_dir / DB_NAME).read_bytes()).hexdigest() == db_before
    assert not list(agent.state_dir.glob("*.corrupt-*"))


def test_verify_epochs_tells_an_upgrade_from_a_fresh_start_after_a_release(tmp_path: Path) -> None:
    """After pre-epoch records, an epoch at the next seq must link to them; one at seq 1 starts its own chain."""
    released = [row[4] for row in _rows(RELEASE_DB)["journal"]]

    async def record(store: Store) -> bytes:
        return (await Journal(store, SIGNING_KEY, KIOSK, fleet=FLEET).record({"service": "next"})).payload

    fresh = Store.open(tmp_path / "fresh")        # the release's store lost: a new journal at seq 1
    try:
        restarted = asyncio.run(record(fresh))
    finally:
        fresh.close()
    assert json.loads(restarted)["seq"] == 1
    assert all(e.chain.ok for e in verify_epochs([*released, restarted], SIGNING_KEY.public_key()))

    upgraded = Store.open(_release_state(tmp_path / "upgraded"))
    try:
        going_on = asyncio.run(record(upgraded))
    finally:
        upgraded.close()
    # Without the release's last record the link is missing: a gap, not a new start.
    reports = verify_epochs([*released[:4], going_on], SIGNING_KEY.public_key())
    assert reports[0].chain.ok and not reports[1].chain.ok
    assert "seq 6, expected 5" in reports[1].chain.reason
