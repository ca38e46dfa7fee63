# SPDX-License-Identifier: Apache-2.0
"""Journal and store: encoding, chain, restarts, corruption, keys."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import wait_until_async

from agent.errors import AgentError
from agent.runtime.keys import DEVICE_KEY_NAME, KeyError_, fast_signer, key_id, load_or_create
from agent.store.database import DB_NAME, Store
from agent.store.journal import (
    GENESIS,
    Journal,
    JournalError,
    ack_document,
    canonical,
    parse_ack,
    record_hash,
    synthetic_load,
    verify_ack,
    verify_chain,
)


def _record(store: Store, key: Ed25519PrivateKey, txs: list[dict]) -> list:
    async def go() -> list:
        journal = Journal(store, key, "k-1", fleet="f")
        return list(await asyncio.gather(*(journal.record(tx) for tx in txs)))
    return asyncio.run(go())


def test_records_are_canonical_signed_and_chained(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    recs = sorted(_record(store, key, [{"n": i, "名": "数据", "x": [1.5, None]} for i in range(50)]),
                  key=lambda r: r.seq)
    assert [r.seq for r in recs] == list(range(1, 51))
    assert recs[0].prev == GENESIS
    for a, b in itertools.pairwise(recs):
        assert b.prev == a.hash == record_hash(a.payload)
    for r in recs:
        assert canonical(json.loads(r.payload)) == r.payload      # the spliced bytes are canonical
        assert r.data["kid"] == key_id(key.public_key())
    report = verify_chain([r.payload for r in recs], key.public_key())
    assert report.ok and report.last_seq == 50
    stored = list(Journal(store, key, "k-1").payloads())
    assert stored == [r.payload for r in recs]                   # stored once, byte for byte
    store.close()


def test_verify_chain_names_the_first_break(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    payloads = [r.payload for r in sorted(_record(store, key, [{"n": i} for i in range(10)]), key=lambda r: r.seq)]
    store.close()
    tampered = json.loads(payloads[4])
    tampered["data"]["n"] = 99
    cases = {
        "altered": payloads[:4] + [canonical(tampered)] + payloads[5:],
        "dropped": payloads[:4] + payloads[5:],
        "reordered": payloads[:4] + [payloads[5], payloads[4]] + payloads[6:],
        "reencoded": payloads[:4] + [json.dumps(json.loads(payloads[4]), indent=1).encode()] + payloads[5:],
    }
    for name, seq in cases.items():
        report = verify_chain(seq, key.public_key())
        assert not report.ok and report.break_at == 4, (name, report)
    other = Ed25519PrivateKey.generate().public_key()
    assert verify_chain(payloads, other).break_at == 0
    assert verify_chain(payloads, {key_id(key.public_key()): key.public_key()}).ok
    tail = verify_chain(payloads[5:], key.public_key(), prev=record_hash(payloads[4]))
    assert tail.ok and tail.count == 5


def test_seq_and_chain_continue_across_restarts(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    for _ in range(3):
        store = Store.open(tmp_path)
        _record(store, key, [{"n": 1}, {"n": 2}])
        store.close()
    store = Store.open(tmp_path)
    payloads = list(Journal(store, key, "k-1").payloads())
    assert verify_chain(payloads, key.public_key()).last_seq == 6
    assert store.counter("bdSeq") == 0 and store.bump_counter("bdSeq") == 1
    store.close()


def test_unencodable_transaction_is_refused_and_the_chain_does_not_move(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)

    async def go() -> None:
        journal = Journal(store, key, "k-1")
        with pytest.raises(JournalError) as err:
            await journal.record({"bad": float("nan")})
        assert isinstance(err.value, AgentError) and err.value.code == "agent.journal.invalid"
        with pytest.raises(JournalError):
            await journal.record({"bad": object()})
        rec = await journal.record({"ok": True})
        assert rec.seq == 1 and rec.prev == GENESIS
    asyncio.run(go())
    store.close()


def test_one_failing_record_in_a_group_commit_fails_alone(tmp_path: Path) -> None:
    """Records committed together go in one multi-row statement; when that fails, each is
    tried alone: only the bad one fails, the rest are on disk and the chain has no hole."""
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    # A row the database refuses (as a constraint or a full disk would): payloads with "poison".
    store.conn.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON journal "
                       "WHEN instr(NEW.payload, 'poison') > 0 BEGIN SELECT RAISE(ABORT, 'refused'); END")

    async def go() -> list:
        journal = Journal(store, key, "k-1", fleet="f")
        txs = [{"n": i, "what": "poison" if i == 17 else "ok"} for i in range(40)]
        return list(await asyncio.gather(*(journal.record(tx) for tx in txs), return_exceptions=True))

    outcomes = asyncio.run(go())
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [17] and isinstance(outcomes[17], AgentError)
    stored = list(Journal(store, key, "k-1").payloads())
    assert len(stored) == 39 and not any(b"poison" in p for p in stored)
    report = verify_chain(stored, key.public_key())
    assert report.ok and report.last_seq == 39, report
    assert store.conn.execute("SELECT count(*) FROM outbox WHERE cls = 'tx'").fetchone()[0] == 39
    assert store.writer.commits < 10          # they did share commits
    store.close()


def test_garbage_file_is_moved_aside_and_a_fresh_store_started(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(os.urandom(8192))
    (tmp_path / f"{DB_NAME}-wal").write_bytes(b"junk")
    store = Store.open(tmp_path)
    assert store.recovered_from is not None and store.recovered_from.exists()
    assert Path(f"{store.recovered_from}-wal").read_bytes() == b"junk"      # kept, never deleted
    assert store.bump_counter("bdSeq") == 1
    assert store.integrity_check() == "ok"
    store.close()
    assert Store.open(tmp_path).recovered_from is None


def _damage_root(tmp_path: Path, table: str, *, header: bool = False) -> None:
    """Scribble over the root page of ``table``'s b-tree (an interior page once it has grown).

    Without ``header`` half of its child pointers go; with it the whole page
    is unreadable and so is every row below it.
    """
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    # Damage comes with a power cut: no clean-stop marker, so the next open checks the file.
    with conn:
        conn.execute("DELETE FROM counters WHERE name = 'clean_stop'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    start = (root - 1) * 4096
    span = slice(start, start + 400) if header else slice(start + 100, start + 400)
    data[span] = os.urandom(span.stop - span.start)
    db.write_bytes(bytes(data))


def _recorded_300(tmp_path: Path, key: Ed25519PrivateKey) -> list:
    store = Store.open(tmp_path)
    recs = _record(store, key, [{"pad": "z" * 400, "n": i} for i in range(300)])
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return sorted(recs, key=lambda r: r.seq)


def test_damaged_journal_is_salvaged_and_the_chain_goes_on(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    recs = _recorded_300(tmp_path, key)
    _damage_root(tmp_path, "journal")
    kept = (tmp_path / DB_NAME).read_bytes()
    store = Store.open(tmp_path)
    try:
        assert store.recovered_from is not None and store.recovered_from.read_bytes() == kept   # kept as it was
        report = store.salvage
        assert report is not None and report.error is None and "journal" in report.damaged_tables
        assert 0 < report.journal_rows < 300 and report.unreadable_seqs == 300 - report.journal_rows
        assert f"{report.journal_rows} journal records" in report.summary() and "unreadable" in report.summary()
        salvaged = list(Journal(store, key, "k-1").payloads())
        by_seq = {r.seq: r.payload for r in recs}
        assert all(by_seq[json.loads(p)["seq"]] == p for p in salvaged)        # byte for byte, nothing altered
        # No seq is handed out twice: the chain goes on after the highest one
        # ever used (even when the damage took the last records), linking to
        # the last record kept.
        assert report.highest_seq == 300
        nxt = _record(store, key, [{"n": "after"}])[0]
        assert (nxt.seq, nxt.prev) == (301, record_hash(salvaged[-1]))
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_damaged_outbox_queues_every_unacknowledged_record_again(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    recs = _recorded_300(tmp_path, key)
    store = Store.open(tmp_path)
    asyncio.run(Journal(store, key, "k-1").mark_acked([r.id for r in recs[:100]]))
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    _damage_root(tmp_path, "outbox", header=True)
    store = Store.open(tmp_path)
    try:
        assert store.salvage is not None and "outbox" in store.salvage.damaged_tables
        assert store.salvage.journal_rows == 300
        journal = Journal(store, key, "k-1", fleet="f")
        assert store.salvage.requeued == 200
        queued = store.conn.execute("SELECT ref, topic FROM outbox WHERE cls = 'tx' ORDER BY id").fetchall()
        assert queued == [(seq, journal.topic) for seq in range(101, 301)]     # in seq order, acked ones not
        assert store.counter("salvage_requeue") == 0                            # done once, not at every start
    finally:
        store.close()
    again = Store.open(tmp_path)
    Journal(again, key, "k-1", fleet="f")
    assert again.conn.execute("SELECT count(*) FROM outbox WHERE cls = 'tx'").fetchone()[0] == 200
    again.close()


def test_unreadable_file_salvages_nothing_and_says_so(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(os.urandom(8192))
    store = Store.open(tmp_path)
    assert store.salvage is not None and store.salvage.error is not None
    assert "nothing salvaged" in store.salvage.summary() and "seq 1" in store.salvage.summary()
    store.close()


def test_device_key_generated_once_0600_and_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = load_or_create(None, tmp_path, production=True)
    path = tmp_path / DEVICE_KEY_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert "generated device key" in caplog.text and caplog.records[-1].levelname == "WARNING"
    again = load_or_create(None, tmp_path, production=True)
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    os.chmod(path, 0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        load_or_create(None, tmp_path, production=True)
    with pytest.raises(KeyError_):
        load_or_create(tmp_path / "missing.pem", tmp_path, production=True)


def test_the_journal_signer_gives_the_signatures_of_the_device_key(tmp_path: Path) -> None:
    # libsodium signs the journal (speed); anyone verifying holds the key's
    # public half and cryptography. Ed25519 is deterministic: same bytes.
    key = load_or_create(None, tmp_path, production=False)
    sign = fast_signer(key)
    for message in (b"", b"x", os.urandom(300), os.urandom(70_000)):
        assert sign(message) == key.sign(message)
    other = fast_signer(Ed25519PrivateKey.generate())
    assert other(b"x") != sign(b"x")


def test_ack_parsing() -> None:
    assert parse_ack(b'{"v":1,"ts":1,"ids":["a","b"]}') == ["a", "b"]
    for bad in (b'{"ids":"a"}', b'{"ids":[1]}', b'[]', b'{"ids":[""]}'):
        with pytest.raises(ValueError):
            parse_ack(bad)


def test_synthetic_load_records_without_pii(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    seen = []

    async def go() -> int:
        journal = Journal(store, key, "k-1")
        stop = asyncio.Event()
        task = asyncio.create_task(synthetic_load(journal, 6000, stop, on_record=seen.append))
        await wait_until_async(lambda: len(seen) >= 20, 30, message="20 synthetic records")
        stop.set()
        return await task
    assert asyncio.run(go()) >= 20
    for rec in seen:
        data = rec.data["data"]
        assert re.fullmatch(r"11\*{12}\d{4}", data["id_masked"])
        assert not re.search(rb"\d{14,}", canonical(data))      # nothing ID-number-like
    store.close()


def test_signed_acks_are_checked_for_key_kiosk_content_and_domain() -> None:
    from agent.wire.signing import KIND_ACK, KIND_CMD, public_raw, sign

    backoffice, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = [public_raw(Ed25519PrivateKey.generate()), public_raw(backoffice)]

    def signed(doc: dict, key: Ed25519PrivateKey = backoffice, kind: str = KIND_ACK) -> bytes:
        return json.dumps(sign(doc, "bo-1", key, kind)).encode()

    assert verify_ack(signed(ack_document("k-1", ["a", "b"])), "k-1", keys) == ["a", "b"]
    refusals = {
        "unsigned": json.dumps(ack_document("k-1", ["a"])).encode(),
        "not verify": signed(ack_document("k-1", ["a"]), stranger),
        "not 'k-1'": signed(ack_document("k-2", ["a"])),
        "does not verify": signed(ack_document("k-1", ["a"]), kind=KIND_CMD),      # a command's signature
    }
    tampered = json.loads(signed(ack_document("k-1", ["a"])))
    tampered["ids"] = ["a", "someone-elses"]
    refusals["verify"] = json.dumps(tampered).encode()
    for words, payload in refusals.items():
        with pytest.raises(ValueError, match=words):
            verify_ack(payload, "k-1", keys)


def test_production_kiosk_without_ack_keys_marks_nothing(tmp_path: Path) -> None:
    from agent.uplink.connection import Message

    key = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    recs = _record(store, key, [{"n": 1}])

    async def go() -> None:
        strict = Journal(store, key, "k-1", accept_unsigned_acks=False)     # production, no keys configured
        ack = json.dumps(ack_document("k-1", [recs[0].id])).encode()
        await strict.on_tx_ack(Message("kiosk/v1/f/k-1/tx/ack", ack, 1, False, None, None))
        assert strict.acks_refused == 1
        assert store.conn.execute("SELECT count(*) FROM journal WHERE acked_ms IS NOT NULL").fetchone()[0] == 0
        lenient = Journal(store, key, "k-1")                                 # development
        await lenient.on_tx_ack(Message("kiosk/v1/f/k-1/tx/ack", ack, 1, False, None, None))
        assert lenient.acks_refused == 0
    asyncio.run(go())
    marked = store.conn.execute("SELECT count(*) FROM journal WHERE acked_ms IS NOT NULL").fetchone()[0]
    assert marked == 1          # only the development journal's ack counted
    store.close()
