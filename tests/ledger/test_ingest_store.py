# SPDX-License-Identifier: Apache-2.0
"""LedgerStore's two ways in: a batch of new records COPYed straight into ``tx``, and a batch holding a
record already stored, which must fall back whole (nothing of the failed COPY left behind) and give the
same rows the general path always gave."""

from __future__ import annotations

from corekit import CoreKiosk, rows, scalar

from fleet.ledger.db import connect, load_kiosks, register_kiosk
from fleet.ledger.store import LedgerStore
from fleet.ledger.verify import check_tx


def setup(dsn: str, *kiosks: CoreKiosk) -> LedgerStore:
    with connect(dsn) as conn:
        for k in kiosks:
            register_kiosk(conn, k.kiosk, k.fleet, k.public_raw)
    return LedgerStore(connect(dsn, autocommit=True))


def checked(store: LedgerStore, messages: list[tuple[str, bytes]]) -> list:
    kiosks = load_kiosks(store.conn, "north")
    return [check_tx(t, p, kiosks) for t, p in messages]


def test_new_records_are_copied_in_linked_at_the_commits_time(dsn: str) -> None:
    a, b = CoreKiosk("k-a"), CoreKiosk("k-b")
    store = setup(dsn, a, b)
    first = [(k.topics.tx, k.record()[1]) for _ in range(30) for k in (a, b)]
    out = store.write(checked(store, first))
    assert (out.inserted, out.linked, out.duplicates, out.quarantined) == (60, 60, 0, [])
    # Linked in the transaction that stored them: linked_at is that transaction's now(), like received_at.
    assert rows(dsn, "SELECT count(*) FROM tx WHERE linked_at = received_at AND skipped = 0") == [(60,)]
    # The next batch links to the first through the database (its predecessors are not in it).
    out = store.write(checked(store, [(k.topics.tx, k.record()[1]) for _ in range(5) for k in (a, b)]))
    assert (out.inserted, out.linked) == (10, 10)
    assert scalar(dsn, "SELECT count(*) FROM tx WHERE linked_at IS NULL") == 0


def test_a_batch_holding_a_stored_record_falls_back_whole_and_stores_the_rest_once(dsn: str) -> None:
    k = CoreKiosk("k-a")
    store = setup(dsn, k)
    msgs = [(k.topics.tx, k.record()[1]) for _ in range(10)]
    store.write(checked(store, msgs[:4]))
    # seq 3 again (a redelivery) among new ones: the direct COPY fails on its key and must leave nothing.
    out = store.write(checked(store, [msgs[2], *msgs[4:]]))
    assert (out.inserted, out.duplicates, out.quarantined) == (6, 1, [])
    assert rows(dsn, "SELECT seq, count(*) FROM tx GROUP BY seq ORDER BY seq") == [(s, 1) for s in range(1, 11)]
    assert scalar(dsn, "SELECT count(*) FROM tx WHERE linked_at IS NOT NULL") == 10
    stored = rows(dsn, "SELECT payload FROM tx ORDER BY seq")
    assert [bytes(r[0]) for r in stored] == [p for _t, p in msgs]
