# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger serve`` workers against a real Mosquitto and PostgreSQL: crashes, restarts, bad records.

Light kiosks (real keys, real chains, built with ``agent.wire``) publish
over MQTT; the claims are about the ledger: every record in PostgreSQL
exactly once, every one acknowledged in a signed ``tx/ack``, never an ack
for a record not committed when the ack was seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from corekit import (
    AckWatcher,
    CoreKiosk,
    LedgerFactory,
    LedgerProcess,
    Publisher,
    rows,
    scalar,
    write_ledger_config,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import wait_until
from pgcluster import PgCluster

from agent.sim.devbroker import DevBroker
from agent.wire.signing import public_raw
from agent.wire.txformat import verify_ack
from fleet.keys import load_key
from fleet.ledger.db import connect, register_kiosk
from fleet.ledger.ingest import FAULT_ENV
from fleet.ledger.schema import migrate


@pytest.fixture
def acks(broker: DevBroker, dsn: str) -> Iterator[AckWatcher]:
    watcher = AckWatcher(broker.url, "north", dsn)
    yield watcher
    watcher.close()


@pytest.fixture
def publisher(broker: DevBroker) -> Iterator[Publisher]:
    pub = Publisher(broker.url)
    yield pub
    pub.close()


def connected(*workers: LedgerProcess) -> None:
    """Until every worker has its broker session (its log says so); the logs if not."""
    try:
        wait_until(lambda: all("subscribed to the fleet's tx and evidence" in w.log for w in workers), 30,
                   interval=0.05,
                   message="the workers connected")
    except AssertionError:
        raise AssertionError("workers did not connect:\n" + "\n".join(w.log[-3000:] for w in workers)) from None


def kiosks(dsn: str, n: int) -> list[CoreKiosk]:
    out = [CoreKiosk(f"k-{i:03d}") for i in range(n)]
    with connect(dsn) as conn:
        for k in out:
            register_kiosk(conn, k.kiosk, k.fleet, k.public_raw, source="test")
    return out


def stream(fleet: list[CoreKiosk], per_kiosk: int) -> tuple[list[tuple[str, bytes]], dict[str, set[str]]]:
    """Interleaved records of every kiosk (and evidence for every third); the ids per kiosk."""
    messages: list[tuple[str, bytes]] = []
    ids: dict[str, set[str]] = {k.kiosk: set() for k in fleet}
    for n in range(per_kiosk):
        for k in fleet:
            with_evidence = n % 3 == 0
            rid, payload = k.record({"type": "synthetic", "n": n, "evidence": with_evidence})
            messages.append((k.topics.tx, payload))
            if with_evidence:
                messages.append((k.topics.evidence, k.evidence(rid, k.seq)))
            ids[k.kiosk].add(rid)
    return messages, ids


def assert_exactly_once_and_acked(dsn: str, acks: AckWatcher, ids: dict[str, set[str]], timeout: float = 60) -> None:
    expected = {(k, i) for k, s in ids.items() for i in s}
    wait_until(lambda: expected <= acks.all_acked(), timeout, interval=0.1,
               message=f"tx/ack for all {len(expected)} records (have {len(expected & acks.all_acked())}; in db "
                       f"{rows(dsn, 'SELECT count(*), count(linked_at), count(acked_at) FROM tx')}; seqs "
                       f"{rows(dsn, 'SELECT kiosk, array_agg(seq ORDER BY seq) FROM tx GROUP BY kiosk')})")
    stored = rows(dsn, "SELECT kiosk, id, linked_at IS NOT NULL FROM tx")
    assert len(stored) == len({(k, i) for k, i, _l in stored}) == len(expected), "every record exactly once"
    assert {(k, i) for k, i, _l in stored} == expected
    assert all(linked for _k, _i, linked in stored), "every record linked in its chain"
    assert acks.uncommitted == [], "an id was acknowledged before it was committed"
    assert scalar(dsn, "SELECT count(*) FROM quarantine") == 0


def test_two_workers_store_link_and_acknowledge_every_record_once(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, publisher: Publisher, backoffice_key: Path) -> None:
    fleet = kiosks(dsn, 5)
    w1, w2 = ledger("w1"), ledger("w2")
    messages, ids = stream(fleet, 40)
    connected(w1, w2)
    publisher.publish_many(messages)
    assert_exactly_once_and_acked(dsn, acks, ids)
    assert scalar(dsn, "SELECT count(*) FROM evidence") == sum(1 for t, _p in messages if t.endswith("/evidence"))
    # Both workers took a share, and each ack is signed by the back-office key for its kiosk.
    assert "consuming $share/ledger/kiosk/v1/north/+/tx" in w1.log
    _kid, key = load_key(backoffice_key)
    for doc in acks.docs[:5]:
        raw = json.dumps(doc).encode()
        assert verify_ack(raw, doc["kiosk"], [public_raw(key)]) == doc["ids"]
    assert w1.terminate() == 0 and w2.terminate() == 0


def test_a_worker_killed_between_commit_and_puback_loses_and_doubles_nothing(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, publisher: Publisher) -> None:
    fleet = kiosks(dsn, 5)
    w1 = ledger("w1", env={FAULT_ENV: "exit_after_commit"})
    w2 = ledger("w2")
    connected(w1, w2)
    messages, ids = stream(fleet, 40)
    publisher.publish_many(messages)
    wait_until(lambda: not w1.alive(), 30, message="worker 1 to kill itself after a commit")
    assert "SIGKILL after commit, before PUBACK" in w1.log
    w1.start(env={})        # the same client id: its session's unacknowledged messages come back
    assert_exactly_once_and_acked(dsn, acks, ids)


def test_kill_9_mid_stream_and_a_broker_restart(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, broker: DevBroker) -> None:
    fleet = kiosks(dsn, 5)
    w1, w2 = ledger("w1"), ledger("w2")
    connected(w1, w2)
    messages, ids = stream(fleet, 60)
    third = len(messages) // 3
    pub = Publisher(broker.url, client_id="light-kiosks")
    pub.publish_many(messages[:third])
    w1.kill()                                           # kill -9 mid-stream
    pub.publish_many(messages[third:2 * third])         # its share of these waits in its session
    pub.close()
    broker.stop()                                       # a real broker restart; sessions are persisted
    mark = "subscribed to the fleet's tx and evidence"
    marks = (w1.log.count(mark), w2.log.count(mark))
    broker.start()
    w1.start()
    # Mosquitto 2.0 restores sessions and their messages, but not shared subscriptions: what is
    # published before a worker subscribes again has no subscriber (see docs). So the kiosks wait.
    wait_until(lambda: w1.log.count(mark) > marks[0] and w2.log.count(mark) > marks[1], 30,
               message="both workers subscribed again")
    pub = Publisher(broker.url, client_id="light-kiosks")
    pub.publish_many(messages[2 * third:])
    pub.close()
    assert_exactly_once_and_acked(dsn, acks, ids, timeout=60)


def test_bad_records_are_quarantined_alerted_never_acked_and_the_kiosk_goes_on(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, publisher: Publisher) -> None:
    (k,) = kiosks(dsn, 1)
    w1 = ledger("w1")
    connected(w1)
    good = [k.record() for _ in range(3)]
    publisher.publish_many([(k.topics.tx, p) for _r, p in good])
    forged_id, forged = k.record(key=Ed25519PrivateKey.generate())            # valid JSON, wrong signature
    k.rewind(1, good[0][1])
    changed_id, changed = k.record({"type": "synthetic", "replayed": True}, record_id=good[1][0])
    k.rewind(3, good[2][1])
    broken_id, broken = k.record(prev="ef" * 32)                               # chain break at seq 4
    stranger = CoreKiosk("k-unregistered")
    stranger_id, stranger_rec = stranger.record()
    publisher.publish_many([(k.topics.tx, forged), (k.topics.tx, changed), (k.topics.tx, broken),
                            (stranger.topics.tx, stranger_rec), (k.topics.tx, good[0][1])])   # + an exact replay
    k.rewind(3, good[2][1])
    later = [k.record() for _ in range(3)]
    publisher.publish_many([(k.topics.tx, p) for _r, p in later])
    ok_ids = {r for r, _p in good + later}
    wait_until(lambda: ok_ids <= acks.acked(k.kiosk), 30, interval=0.1, message="the good records acknowledged")
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM quarantine") == 4, 30, message="four quarantine rows")
    reasons = dict(rows(dsn, "SELECT reason, record_id FROM quarantine"))
    assert reasons == {"bad_signature": forged_id, "id_conflict": changed_id, "chain_break": broken_id,
                       "unknown_kiosk": stranger_id}
    assert [r[0] for r in rows(dsn, "SELECT seq FROM tx ORDER BY seq")] == [1, 2, 3, 4, 5, 6]
    all_acked = acks.all_acked()
    assert (stranger.kiosk, stranger_id) not in all_acked and (k.kiosk, broken_id) not in all_acked
    assert (k.kiosk, forged_id) not in all_acked
    # Alerted: one ERROR line per quarantined message, naming the reason and never the payload.
    for reason in ("bad_signature", "id_conflict", "chain_break", "unknown_kiosk"):
        assert f": {reason}: " in w1.log and "QUARANTINED" in w1.log
    assert '"replayed"' not in w1.log


def test_a_new_epoch_is_recorded_and_the_ledger_goes_on(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, publisher: Publisher) -> None:
    (k,) = kiosks(dsn, 1)
    w1 = ledger("w1")
    connected(w1)
    old_epoch = k.epoch
    first = [k.record() for _ in range(4)]
    after = [k.new_epoch()] + [k.record() for _ in range(4)]
    publisher.publish_many([(k.topics.tx, p) for _r, p in first + after])
    wait_until(lambda: {r for r, _p in first + after} <= acks.acked(k.kiosk), 30, message="all acknowledged")
    assert rows(dsn, "SELECT prev_epoch, prev_last_seq, reason FROM epochs WHERE epoch = %s", (k.epoch,)) == \
        [(old_epoch, 4, "store_lost")]
    assert f"kiosk {k.kiosk} began a new journal epoch" in w1.log


def test_a_kiosk_registered_while_the_worker_runs_is_not_unknown(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, publisher: Publisher) -> None:
    w1 = ledger("w1")
    connected(w1)
    (k,) = kiosks(dsn, 1)
    rid, payload = k.record()
    publisher.publish(k.topics.tx, payload)
    wait_until(lambda: rid in acks.acked(k.kiosk), 30, message="the new kiosk's record acknowledged")
    assert scalar(dsn, "SELECT count(*) FROM quarantine") == 0


def test_a_record_announcing_evidence_is_acknowledged_only_once_its_bundle_is_stored(
        ledger: LedgerFactory, dsn: str, acks: AckWatcher, publisher: Publisher) -> None:
    (k,) = kiosks(dsn, 1)
    w1 = ledger("w1")
    connected(w1)
    with_evidence, payload = k.record({"type": "session", "evidence": True})
    later, later_payload = k.record({"type": "receipt", "evidence": False})
    publisher.publish_many([(k.topics.tx, payload), (k.topics.tx, later_payload)])
    # The later record is linked only after the first, so the round that acknowledged it saw both.
    wait_until(lambda: later in acks.acked(k.kiosk), 30, message="the record without evidence acknowledged")
    assert with_evidence not in acks.acked(k.kiosk), "acknowledged (the kiosk erases) before the ledger had the bundle"
    publisher.publish(k.topics.evidence, k.evidence(with_evidence, 1))
    wait_until(lambda: with_evidence in acks.acked(k.kiosk), 30, message="acknowledged once its bundle is stored")
    assert acks.uncommitted == []


def test_a_postgresql_outage_holds_the_batch_and_nothing_is_lost(
        tmp_path: Path, broker: DevBroker, backoffice_key: Path) -> None:
    """PostgreSQL stops under a running worker: nothing is PUBACKed or acknowledged meanwhile; all lands after."""
    with PgCluster() as own:
        dsn = own.create_database("outage")
        with connect(dsn) as conn:
            migrate(conn)
        (k,) = kiosks(dsn, 1)
        config = write_ledger_config(tmp_path / "w1.toml", dsn=dsn, broker_url=broker.url, client_id="ledger-w1",
                                     key_file=backoffice_key)
        w1 = LedgerProcess(tmp_path, config).start()
        try:
            connected(w1)
            watcher = AckWatcher(broker.url, "north", dsn)
            publisher = Publisher(broker.url)
            before = [k.record() for _ in range(5)]
            publisher.publish_many([(k.topics.tx, p) for _r, p in before])
            wait_until(lambda: {r for r, _p in before} <= watcher.acked(k.kiosk), 30, message="first records acked")
            watcher.close()             # its database connection goes with the outage
            own.halt()
            during = [k.record() for _ in range(5)]
            publisher.publish_many([(k.topics.tx, p) for _r, p in during])
            wait_until(lambda: "PostgreSQL unavailable" in w1.log, 30, message="the worker noticing the outage")
            assert w1.alive()
            own.resume()
            watcher = AckWatcher(broker.url, "north", dsn)
            try:
                wait_until(lambda: {r for r, _p in during} <= watcher.acked(k.kiosk), 60,
                           message="the records held through the outage acknowledged")
                assert watcher.uncommitted == []
            finally:
                watcher.close()
            assert [r[0] for r in rows(dsn, "SELECT seq FROM tx WHERE linked_at IS NOT NULL ORDER BY seq")] == \
                list(range(1, 11))
            publisher.close()
        finally:
            w1.kill()


def test_a_tx_ack_the_broker_refuses_is_not_counted_as_sent(tmp_path: Path, dsn: str, backoffice_key: Path) -> None:
    """An ACL that denies the ledger's tx/ack (PUBACK 0x87): the records stay due, and the log says why."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite kiosk/v1/north/+/tx\ntopic readwrite kiosk/v1/north/+/evidence\n"
                   "topic read #\n")
    with DevBroker(tmp_path / "acl-broker", extra_conf=f"acl_file {acl}") as denying:
        (k,) = kiosks(dsn, 1)
        config = write_ledger_config(tmp_path / "w1.toml", dsn=dsn, broker_url=denying.url, client_id="ledger-w1",
                                     key_file=backoffice_key)
        w1 = LedgerProcess(tmp_path, config).start()
        try:
            connected(w1)
            publisher = Publisher(denying.url)
            publisher.publish_many([(k.topics.tx, k.record()[1]) for _ in range(3)])
            publisher.close()
            wait_until(lambda: "the broker refused a tx/ack" in w1.log, 30, message="the refused tx/ack logged")
            assert "(Not authorized)" in w1.log
            assert rows(dsn, "SELECT count(*), count(linked_at), count(acked_at) FROM tx") == [(3, 3, 0)]
        finally:
            w1.kill()
