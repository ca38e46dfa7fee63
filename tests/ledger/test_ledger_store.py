# SPDX-License-Identifier: Apache-2.0
"""Verification and storage against a real PostgreSQL: what each kind of record becomes.

The records are real (signed with the kiosk's key, chained, with an epoch);
the batches go through the same ``check_tx`` / ``LedgerStore.write`` the
worker runs.
"""

from __future__ import annotations

import random
import threading

import psycopg
import pytest
from corekit import CoreKiosk, rows, scalar
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.ledger.db import connect, load_kiosks, register_kiosk
from fleet.ledger.errors import SchemaTooNew
from fleet.ledger.schema import SCHEMA_VERSION, current_version, migrate
from fleet.ledger.store import BatchOutcome, LedgerStore
from fleet.ledger.verify import check_evidence, check_tx


class Ledger:
    """check + write on one connection, as a worker does."""

    def __init__(self, dsn: str, fleet: str = "north") -> None:
        self.dsn = dsn
        self.fleet = fleet
        self.conn = connect(dsn, autocommit=True)
        self.store = LedgerStore(self.conn)

    def register(self, kiosk: CoreKiosk) -> None:
        with connect(self.dsn) as conn:
            register_kiosk(conn, kiosk.kiosk, kiosk.fleet, kiosk.public_raw)

    def write(self, messages: list[tuple[str, bytes]]) -> BatchOutcome:
        kiosks = load_kiosks(self.conn, self.fleet)
        items = [check_evidence(t, p, kiosks) if t.endswith("/evidence") else check_tx(t, p, kiosks)
                 for t, p in messages]
        return self.store.write(items)

    def linked(self, kiosk: str) -> list[int]:
        return [r[0] for r in rows(self.dsn, "SELECT seq FROM tx WHERE kiosk = %s AND linked_at IS NOT NULL "
                                             "ORDER BY seq", (kiosk,))]

    def pending(self, kiosk: str) -> list[int]:
        return [r[0] for r in rows(self.dsn, "SELECT seq FROM tx WHERE kiosk = %s AND linked_at IS NULL "
                                             "ORDER BY seq", (kiosk,))]

    def quarantine(self) -> list[tuple[str, str, int | None]]:
        return [(r[0], r[1], r[2]) for r in rows(self.dsn, "SELECT kiosk, reason, seq FROM quarantine ORDER BY qid")]


@pytest.fixture
def led(dsn: str) -> Ledger:
    return Ledger(dsn)


def test_in_order_records_are_stored_once_and_linked(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    msgs = [(k.topics.tx, k.record()[1]) for _ in range(20)]
    out = led.write(msgs)
    assert (out.inserted, out.linked, out.quarantined) == (20, 20, [])
    again = led.write(msgs[5:12] + msgs[5:7])       # the broker delivering again, twice within a batch too
    assert (again.inserted, again.duplicates) == (0, 9)
    assert led.linked("k-1") == list(range(1, 21))
    stored = rows(led.dsn, "SELECT payload FROM tx WHERE kiosk = 'k-1' ORDER BY seq")
    assert [bytes(r[0]) for r in stored] == [p for _t, p in msgs], "payloads byte for byte as received"


def test_out_of_order_records_wait_as_pending_and_link_when_the_predecessor_arrives(led: Ledger, rng: random.Random
                                                                                    ) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    msgs = [(k.topics.tx, k.record()[1]) for _ in range(30)]
    shuffled = msgs[1:]
    rng.shuffle(shuffled)
    for start in range(0, len(shuffled), 7):
        led.write(shuffled[start:start + 7])
    assert led.linked("k-1") == [], "nothing links without seq 1"
    assert led.pending("k-1") == list(range(2, 31))
    out = led.write(msgs[:1])
    assert out.linked == 30
    assert led.linked("k-1") == list(range(1, 31)) and led.pending("k-1") == []


def test_a_gap_keeps_later_records_pending(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    msgs = [(k.topics.tx, k.record()[1]) for _ in range(10)]
    led.write(msgs[:4] + msgs[5:])
    assert led.linked("k-1") == [1, 2, 3, 4] and led.pending("k-1") == [6, 7, 8, 9, 10]
    led.write(msgs[4:5])
    assert led.linked("k-1") == list(range(1, 11))


def test_forged_unknown_changed_and_broken_records_are_quarantined_and_the_rest_flows(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    good = [k.record() for _ in range(3)]
    led.write([(k.topics.tx, p) for _r, p in good])
    # Forged: valid JSON in the contract's form, under the kiosk's key id, signed by another key.
    _fid, forged = k.record(key=Ed25519PrivateKey.generate())
    # Changed: id 2 again with other bytes (a replay of a changed record, a rolled-back journal).
    k.rewind(1, good[0][1])
    _r, changed = k.record({"type": "synthetic", "service": "changed"}, record_id=good[1][0])
    # Seq conflict: another record at seq 3, properly chained to seq 2.
    k.rewind(2, good[1][1])
    _s, seq_conflict = k.record({"type": "synthetic", "service": "other"})
    # Chain break: a seq 4 that does not name seq 3.
    k.rewind(3, good[2][1])
    _b, broken = k.record(prev="ab" * 32)
    stranger = CoreKiosk("k-9")            # never registered
    out = led.write([(k.topics.tx, forged), (stranger.topics.tx, stranger.record()[1]), (k.topics.tx, changed),
                     (k.topics.tx, broken), (k.topics.tx, seq_conflict),
                     (CoreKiosk("k-1", "south").topics.tx, good[0][1]),      # another fleet's topic
                     (k.topics.tx, b'{"not": "a record"}')])
    reasons = sorted(r.reason for r in out.quarantined)
    assert reasons == sorted(["bad_signature", "unknown_kiosk", "id_conflict", "chain_break", "seq_conflict",
                              "fleet_mismatch", "malformed"])
    assert out.inserted == 0
    # The kiosk's real records still flow.
    k.rewind(3, good[2][1])
    assert led.write([(k.topics.tx, k.record()[1]) for _ in range(2)]).linked == 2
    assert led.linked("k-1") == [1, 2, 3, 4, 5]
    # The same bad message again is one alert, not two.
    assert led.write([(k.topics.tx, forged)]).quarantined == []
    assert scalar(led.dsn, "SELECT count(*) FROM quarantine") == 7


def test_a_chain_break_arriving_before_its_predecessor_is_caught_when_it_links(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    first = k.record()
    _b, broken = k.record(prev="cd" * 32)
    out = led.write([(k.topics.tx, broken)])
    assert out.quarantined == [] and led.pending("k-1") == [2]
    out = led.write([(k.topics.tx, first[1])])
    assert [r.reason for r in out.quarantined] == ["chain_break"] and led.pending("k-1") == []


def test_a_replayed_old_record_is_one_row_and_due_for_acknowledgement_again(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    msgs = [(k.topics.tx, k.record()[1]) for _ in range(3)]
    led.write(msgs)
    led.conn.execute("UPDATE tx SET acked_at = now()")
    out = led.write(msgs[:1])
    assert (out.inserted, out.duplicates, out.quarantined) == (0, 1, [])
    assert scalar(led.dsn, "SELECT count(*) FROM tx") == 3
    assert [r[0] for r in rows(led.dsn, "SELECT seq FROM tx WHERE acked_at IS NULL")] == [1]


def test_a_record_from_another_kiosks_topic_is_quarantined(led: Ledger) -> None:
    a, b = CoreKiosk("k-1"), CoreKiosk("k-2")
    led.register(a)
    led.register(b)
    _rid, payload = a.record()
    out = led.write([(b.topics.tx, payload)])
    assert [r.reason for r in out.quarantined] == ["unknown_key"]   # k-2's keys do not include k-1's
    led.register(CoreKiosk("k-2", key=a.key))                        # k-2 now also holds k-1's key
    out = led.write([(b.topics.tx, payload)])
    assert [r.reason for r in out.quarantined] == ["kiosk_mismatch"]


def test_a_new_epoch_is_recorded_and_goes_on(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    first_epoch = k.epoch
    led.write([(k.topics.tx, k.record()[1]) for _ in range(5)])
    msgs = [(k.topics.tx, k.new_epoch()[1])] + [(k.topics.tx, k.record()[1]) for _ in range(3)]
    out = led.write(msgs)
    assert out.epochs == [("k-1", k.epoch, "store_lost")] and out.linked == 4 and out.quarantined == []
    assert rows(led.dsn, "SELECT prev_epoch, prev_last_seq, prev_last_seq_exact, reason FROM epochs "
                         "WHERE epoch = %s", (k.epoch,)) == [(first_epoch, 5, True, "store_lost")]
    assert scalar(led.dsn, "SELECT count(*) FROM tx WHERE linked_at IS NOT NULL") == 9


def test_evidence_is_stored_sealed_once_and_a_changed_bundle_is_quarantined(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    rid, rec = k.record({"type": "session", "evidence": True})
    ev = k.evidence(rid, 1)
    out = led.write([(k.topics.tx, rec), (k.topics.evidence, ev), (k.topics.evidence, ev)])
    assert (out.inserted, out.evidence, out.duplicates) == (1, 1, 1)
    assert bytes(rows(led.dsn, "SELECT payload FROM evidence")[0][0]) == ev
    other = k.evidence(rid, 1)
    out = led.write([(k.topics.evidence, other)])
    assert [r.reason for r in out.quarantined] == ["evidence_conflict"]


def test_two_writers_racing_on_one_kiosk_link_everything(dsn: str, rng: random.Random) -> None:
    """Records of one kiosk split across two connections in small shuffled batches: all linked."""
    k = CoreKiosk("k-1")
    Ledger(dsn).register(k)
    msgs = [(k.topics.tx, k.record()[1]) for _ in range(200)]
    order = msgs[:]
    rng.shuffle(order)
    halves = [order[0::2], order[1::2]]
    errors: list[BaseException] = []

    def run(part: list[tuple[str, bytes]]) -> None:
        led = Ledger(dsn)
        try:
            for i in range(0, len(part), 5):
                led.write(part[i:i + 5])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert Ledger(dsn).linked("k-1") == list(range(1, 201))


def test_migrations_refuse_a_newer_database_and_change_nothing(dsn: str) -> None:
    with connect(dsn) as conn:
        assert current_version(conn) == SCHEMA_VERSION
        assert migrate(conn) == (SCHEMA_VERSION, SCHEMA_VERSION)
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
        conn.commit()
        with pytest.raises(SchemaTooNew, match="newer than this kiosk-ledger"):
            migrate(conn)
        conn.rollback()
        assert current_version(conn) == SCHEMA_VERSION + 1


def test_migrate_builds_an_empty_database_step_by_step(pg: object) -> None:
    url = pg.create_database("t_empty_migrate")      # type: ignore[attr-defined]
    with psycopg.connect(url) as conn:
        assert current_version(conn) == 0
        assert migrate(conn) == (0, SCHEMA_VERSION)
        assert {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")} >= \
            {"schema_version", "kiosks", "kiosk_keys", "tx", "epochs", "evidence", "quarantine"}


def test_a_pending_record_that_breaks_the_chain_gives_way_to_the_one_that_links(led: Ledger) -> None:
    k = CoreKiosk("k-1")
    led.register(k)
    good = [k.record() for _ in range(3)]
    k.rewind(3, good[2][1])
    broken_id, broken = k.record(prev="ab" * 32)        # seq 4, pending: seq 3 is not here yet
    k.rewind(3, good[2][1])
    real = [k.record() for _ in range(2)]               # the real seq 4 and 5
    led.write([(k.topics.tx, p) for _r, p in good[:2]] + [(k.topics.tx, broken)])
    assert led.pending("k-1") == [4]
    out = led.write([(k.topics.tx, real[0][1]), (k.topics.tx, good[2][1]), (k.topics.tx, real[1][1])])
    assert [(r.reason, r.record_id) for r in out.quarantined] == [("chain_break", broken_id)]
    assert led.linked("k-1") == [1, 2, 3, 4, 5]
    assert {r[0] for r in rows(led.dsn, "SELECT id FROM tx")} == {r for r, _p in good + real}


def test_nothing_links_through_a_record_of_the_batch_that_was_not_stored(led: Ledger) -> None:
    """A changed record (id conflict) and one chained on it, in one batch with a redelivery: neither links."""
    k = CoreKiosk("k-1")
    led.register(k)
    good = [k.record() for _ in range(4)]
    led.write([(k.topics.tx, p) for _r, p in good])
    k.rewind(3, good[2][1])
    _c, changed = k.record({"type": "synthetic", "changed": True}, record_id=good[3][0])   # seq 4, same id
    after_id, after_changed = k.record()                                                  # seq 5 on it
    out = led.write([(k.topics.tx, good[2][1]), (k.topics.tx, changed), (k.topics.tx, after_changed)])
    assert sorted((r.reason, r.seq) for r in out.quarantined) == [("chain_break", 5), ("id_conflict", 4)]
    assert (out.duplicates, out.linked) == (1, 0)
    assert led.linked("k-1") == [1, 2, 3, 4] and led.pending("k-1") == []
    assert after_id not in {r[0] for r in rows(led.dsn, "SELECT id FROM tx")}
