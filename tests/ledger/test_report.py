# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger status`` and ``export``, and the metrics, against a real ledger database.

GIVEN two kiosks whose signed records went through the ledger's own
verification and store into a private PostgreSQL cluster (one record of
k-1 never arrived, one forged record was quarantined), WHEN an operator runs
``kiosk-ledger status``, THEN each kiosk's line shows its last seq, what is
pending, the open gap and the quarantine; ``kiosk-ledger export --since``
gives every record as JSON Lines or CSV with masked forms only and
withholds, by name, a record that carries something a citizen could be
identified by; the Prometheus endpoint, scraped over HTTP, shows the gap
opened and closed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ledgerkit import LightKiosk

from fleet.ledger.db import load_kiosks, register_kiosk
from fleet.ledger.gaps import GapTracker
from fleet.ledger.metrics import LedgerMetrics
from fleet.ledger.report import EXIT_WITHHELD, export, parse_since, pii_problems, status_rows
from fleet.ledger.schema import migrate
from fleet.ledger.store import LedgerStore
from fleet.ledger.verify import check_tx

FLEET = "north"
KIOSK_LEDGER = [sys.executable, "-m", "fleet.ledger.cli"]
# The standard's example ID number (GB 11643): never in an export.
CLEAR_ID = "11010519491231002X"


class Ledger:
    """A migrated database and the ledger's own verification and store, fed by light kiosks."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        with psycopg.connect(dsn) as conn:
            migrate(conn)
        self.store = LedgerStore(self.conn)

    def register(self, *kiosks: LightKiosk) -> None:
        with psycopg.connect(self.dsn) as conn:
            for k in kiosks:
                register_kiosk(conn, k.kiosk, k.fleet, k.public_key, source="test")

    def ingest(self, *messages: tuple[str, bytes]) -> None:
        with psycopg.connect(self.dsn) as conn:
            known = load_kiosks(conn, FLEET)
        self.store.write([check_tx(topic, payload, known) for topic, payload in messages])


@pytest.fixture
def books(dsn: str) -> Iterator[Ledger]:
    """A fresh migrated database (conftest's ``dsn``, on the session's private cluster)."""
    made = Ledger(dsn)
    try:
        yield made
    finally:
        made.conn.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KIOSK_LEDGER, *args], capture_output=True, text=True, timeout=60, check=False)


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_status_shows_each_kiosks_last_seq_pending_gap_and_quarantine(books: Ledger) -> None:
    k1, k2, stranger = LightKiosk("k-1", FLEET), LightKiosk("k-2", FLEET), LightKiosk("k-9", FLEET)
    books.register(k1, k2)
    first = [k1.record() for _ in range(5)]
    lost = first.pop(2)                         # seq 3 never reaches the ledger
    forged = (k1.topic, first[0][1].replace(b'"n":1', b'"n":7'))    # valid JSON, signature no longer holds
    books.ingest(*first, forged, *[k2.record() for _ in range(3)], stranger.record())

    metrics = LedgerMetrics(FLEET)
    server = metrics.serve("127.0.0.1:0")
    try:
        tracker = GapTracker(FLEET, None, reorder_window_s=0, observer=metrics)
        assert [(g.kiosk, g.epoch, g.from_seq, g.to_seq) for g in tracker.scan(books.conn)] == \
            [("k-1", k1.epoch, 3, 3)]
        rows = {r["kiosk"]: r for r in status_rows(books.conn, FLEET)}
        one, two = rows["k-1"], rows["k-2"]
        assert (one["epoch"], one["last_seq"], one["linked_seq"], one["pending"], one["unacked"]) == \
            (k1.epoch, 5, 2, 2, 2)
        assert (one["gaps_open"], one["missing"], one["quarantined"]) == (1, 1, 1)
        assert (two["last_seq"], two["linked_seq"], two["pending"], two["gaps_open"], two["quarantined"]) == \
            (3, 3, 0, 0, 0)
        assert rows[None]["quarantined"] == 1       # the unregistered kiosk's record
        assert one["idle_s"] is not None and one["delay_s"] is not None
        scraped = _scrape(server.port)
        assert scraped["ledger_gaps_open"] == 1.0
        # Quarantined: the forged record and the unregistered kiosk's; linked and not yet acknowledged (no acks
        # are sent here): k-1's seq 1 and 2, k-2's three.
        assert scraped["ledger_quarantine_rows"] == 2.0 and scraped["ledger_unacked_records"] == 5.0

        # What an operator types, and reads.
        shown = _run("status", "--db", books.dsn, "--fleet", FLEET)
        assert shown.returncode == 1, shown.stderr          # something wants a look
        line = next(x for x in shown.stdout.splitlines() if x.startswith("k-1 "))
        # LAST SEQ 5, LINKED 2, PENDING 2, UNACKED 2 (no ack sent here), ..., GAPS 1 (1 seq), QUARANTINE 1
        assert line.split()[:7] == ["k-1", FLEET, k1.epoch[:8], "5", "2", "2", "2"], line
        assert line.endswith("1 (1 seq)  1") and "(unregistered)" in shown.stdout, line
        as_json = json.loads(_run("status", "--db", books.dsn, "--json").stdout)
        assert {r["kiosk"] for r in as_json} == {"k-1", "k-2", None}
        listed = _run("gaps", "--db", books.dsn, "--fleet", FLEET)
        assert listed.returncode == 1 and listed.stdout.splitlines()[1].split()[:3] == ["k-1", k1.epoch[:8], "3-3"]
        assert "OPEN" in listed.stdout

        books.ingest(lost)                          # the kiosk sent it again
        assert tracker.scan(books.conn) == []
        rows = {r["kiosk"]: r for r in status_rows(books.conn, FLEET)}
        assert (rows["k-1"]["linked_seq"], rows["k-1"]["pending"], rows["k-1"]["gaps_open"]) == (5, 0, 0)
        scraped = _scrape(server.port)
        assert scraped["ledger_gaps_open"] == 0.0 and scraped['ledger_gaps_closed_total{outcome="filled"}'] == 1.0
        outcome = books.conn.execute("SELECT outcome FROM gaps WHERE kiosk = 'k-1'").fetchone()
        assert outcome == ("filled",)
        assert _run("gaps", "--db", books.dsn).stdout.splitlines()[1:] == []      # none open
        closed = _run("gaps", "--db", books.dsn, "--all", "--json")
        assert closed.returncode == 0 and [(g["from_seq"], g["to_seq"], g["outcome"]) for g in
                                           json.loads(closed.stdout)] == [(3, 3, "filled")]
    finally:
        server.close()


def test_export_gives_masked_records_and_withholds_one_that_is_not(books: Ledger, tmp_path: Path) -> None:
    k1 = LightKiosk("k-1", FLEET)
    books.register(k1)
    before = dt.datetime.now(dt.UTC)
    clean = [k1.record() for _ in range(3)]
    # Signed by the kiosk, so verification stores it: the export is the last check before a department.
    leaky = k1.record({"type": "session", "service": "pension-print", "outcome": "completed",
                       "id_masked": CLEAR_ID, "note": f"holder {CLEAR_ID}"})
    books.ingest(*clean, leaky, k1.record())

    out, errors = io.StringIO(), io.StringIO()
    written, withheld = export(books.conn, FLEET, before, out, errors=errors)
    assert (written, withheld) == (4, 1)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 5]
    assert all(x["kiosk"] == "k-1" and x["epoch"] == k1.epoch and x["data"]["id_masked"].startswith("11*")
               for x in lines)
    assert CLEAR_ID not in out.getvalue()
    assert "withheld k-1" in errors.getvalue() and "seq 4" in errors.getvalue()
    assert "data.id_masked: not a masked form" in errors.getvalue() and CLEAR_ID not in errors.getvalue()

    # The command line: CSV to a file, exit 3 because one was withheld; nothing later than "now".
    target = tmp_path / "export.csv"
    done = _run("export", "--db", books.dsn, "--fleet", FLEET, "--since", "1h", "--format", "csv",
                "--out", str(target))
    assert done.returncode == EXIT_WITHHELD, done.stderr
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "5"] and rows[0]["id_masked"].startswith("11*")
    assert CLEAR_ID not in target.read_text() and "4 record(s)" in done.stderr
    later = _run("export", "--db", books.dsn, "--since", (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
                 .isoformat())
    assert later.returncode == 0 and later.stdout == ""
    bad = _run("export", "--db", books.dsn, "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr


def test_pii_screen_and_since_forms() -> None:
    assert pii_problems({"type": "session", "id_masked": "11************002X", "receipt": "R-20261130-0001"}) == []
    problems: list[str] = pii_problems({"id_masked": "11**", "payment": {"ref": "6222 0212 3456 7890 123"},
                                        "name": "张三", "steps": [{"code": CLEAR_ID}]})
    assert len(problems) == 4 and any("data.steps[0].code" in p for p in problems)
    now = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    assert parse_since("90m", now=now) == now - dt.timedelta(minutes=90)
    assert parse_since("2026-11-30", now=now) == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    parsed: Any = parse_since("2026-11-30T08:00:00+08:00")
    assert parsed.utcoffset() == dt.timedelta(hours=8)


def test_kioskctl_unseal_opens_a_bundle_the_ledger_stored_sealed(books: Ledger, tmp_path: Path) -> None:
    import base64

    from agent.wire.contract import Topics, encode, envelope
    from agent.wire.sealing import CONTENT_FORMAT, X25519PrivateKey, save_private_key, seal
    from fleet.ledger.verify import check_evidence

    office = X25519PrivateKey.generate()
    save_private_key(office, tmp_path / "backoffice.pem")
    k1 = LightKiosk("k-1", FLEET)
    books.register(k1)
    topic, payload = k1.record({"type": "session", "service": "pension-print", "outcome": "completed",
                                "id_masked": "11************002X", "evidence": True})
    tx_id = json.loads(payload)["id"]
    card = {"name": "测试", "id_number": CLEAR_ID}      # the test identity of GB 11643's example
    content = json.dumps({"format": CONTENT_FORMAT, "tx": tx_id, "service": "pension-print", "card": card,
                          "photo_wlt": base64.b64encode(b"WLT" * 10).decode()}).encode()
    bundle = seal(office.public_key().public_bytes_raw(), tx_id, content)
    message = encode(envelope("k-1", tx=tx_id, seq=1, service="pension-print", contents=["card", "photo_wlt"],
                              bundle=bundle.to_dict()))
    books.ingest((topic, payload))
    with psycopg.connect(books.dsn) as conn:
        known = load_kiosks(conn, FLEET)
    books.store.write([check_evidence(Topics(FLEET, "k-1").evidence, message, known)])
    stored = books.conn.execute("SELECT payload FROM evidence WHERE tx_id = %s", (tx_id,)).fetchone()
    assert stored is not None and CLEAR_ID.encode() not in bytes(stored[0])     # sealed, as received

    kioskctl = [sys.executable, "-m", "fleet.cli"]
    opened = subprocess.run([*kioskctl, "unseal", "--key", str(tmp_path / "backoffice.pem"), "--ledger", books.dsn,
                             "--tx", tx_id, "--tx", "0" * 32, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert opened.returncode == 1, opened.stderr            # one opened, one the ledger does not hold
    assert json.loads(opened.stdout.splitlines()[0])["card"] == card
    assert (tmp_path / "out" / tx_id / "photo.wlt").read_bytes() == b"WLT" * 10
    assert f"ledger tx {'0' * 32}: the ledger holds no evidence" in opened.stderr
    assert "unsealed 1 bundle(s), 1 failed" in opened.stderr
    usage = subprocess.run([*kioskctl, "unseal", "--key", str(tmp_path / "backoffice.pem"), "--tx", tx_id],
                           capture_output=True, text=True, timeout=60, check=False)
    assert usage.returncode == 2 and "--ledger DSN with --tx" in usage.stderr


def test_a_record_stored_without_its_bundle_is_a_gap_until_the_bundle_comes(books: Ledger) -> None:
    from agent.wire.contract import Topics, encode, envelope
    from fleet.ledger.verify import check_evidence

    k1 = LightKiosk("k-1", FLEET)
    books.register(k1)
    topic, payload = k1.record({"type": "session", "service": "pension-print", "outcome": "completed",
                                "id_masked": "11************002X", "evidence": True})
    books.ingest((topic, payload))
    tracker = GapTracker(FLEET, None, reorder_window_s=0)
    (gap,) = tracker.scan(books.conn)
    assert (gap.kiosk, gap.from_seq, gap.to_seq, gap.kind) == ("k-1", 1, 1, "evidence")
    listed = _run("gaps", "--db", books.dsn)
    assert listed.returncode == 1 and "1-1 bundle" in listed.stdout

    tx_id = json.loads(payload)["id"]
    bundle = {"format": "kiosk-evidence/1", "alg": "X25519-HKDF-SHA256-AES-256-GCM", "kid": "0" * 16,
              "epk": "A" * 43 + "=", "salt": "A" * 43 + "=", "nonce": "A" * 16, "ct": "A" * 24}
    message = encode(envelope("k-1", tx=tx_id, seq=1, service="pension-print", contents=["card"], bundle=bundle))
    with psycopg.connect(books.dsn) as conn:
        known = load_kiosks(conn, FLEET)
    books.store.write([check_evidence(Topics(FLEET, "k-1").evidence, message, known)])
    assert tracker.scan(books.conn) == []
    assert books.conn.execute("SELECT kind, outcome FROM gaps").fetchall() == [("evidence", "filled")]
