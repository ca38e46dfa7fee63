# SPDX-License-Identifier: Apache-2.0
"""Gap closing end to end: a real kiosk agent, a real broker, ``kiosk-ledger serve`` and PostgreSQL.

GIVEN a kiosk that published transactions before the ledger had a session at
the broker (so the broker dropped them: they never reached the ledger),
WHEN the ledger stores the kiosk's next records, pending above a run of
missing seqs, THEN after the reorder window it raises the gap and sends the
kiosk a ``tx-resend`` signed with the back-office key; the agent publishes
those records again, the ledger links the whole chain, closes the gap as
filled and acknowledges every record, and the kiosk marks them acknowledged;
the worker's Prometheus endpoint, scraped over HTTP, counts all of it. A
gap of an epoch the kiosk no longer has is answered ``tx.epoch_gone`` and
closed lost.
"""

from __future__ import annotations

import socket
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

from corekit import LedgerProcess, write_ledger_config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber, wait_until
from ledgerkit import LightKiosk

from agent.sim.devbroker import DevBroker
from agent.wire.signing import public_raw
from fleet.keys import load_key
from fleet.ledger.db import connect, load_kiosks, register_kiosk
from fleet.ledger.gaps import GapTracker, GapWatcher, ResendRequester
from fleet.ledger.metrics import LedgerMetrics
from fleet.ledger.store import LedgerStore
from fleet.ledger.verify import check_tx
from fleet.mqtt import FleetClient

FLEET, KIOSK = "dev", "sim-0001"


def _rows(dsn: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """``/metrics`` over HTTP: sample name (with labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in text.splitlines()
                                                       if line and not line.startswith("#"))}


def _acked_seqs(agent: AgentProcess) -> set[int]:
    conn = sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=10)
    try:
        return {int(seq) for (seq,) in conn.execute("SELECT seq FROM journal WHERE acked_ms IS NOT NULL")}
    finally:
        conn.close()


def _registered_agent(agent_factory: type[AgentProcess], dsn: str, backoffice_key: Path, tmp_path: Path,
                      overrides: dict[str, str], extra: str = "") -> AgentProcess:
    """A kiosk registered with the ledger under its own device key, trusting the back-office key.

    The trust is what `kioskctl keys init --role backoffice` tells the fleet office to give each kiosk:
    its ack key for evidence and a `backoffice` operator entry (tx-resend only).
    """
    device = Ed25519PrivateKey.generate()
    device_file = tmp_path / "device.key"
    device_file.write_bytes(device.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    device_file.chmod(0o600)
    with connect(dsn) as conn:
        register_kiosk(conn, KIOSK, FLEET, public_raw(device), source="test")
    backoffice = backoffice_key.with_suffix(".pub").read_text().strip()
    agent = agent_factory("agent", overrides=overrides)
    agent.config.write_text(agent.config.read_text() + f'\n[keys]\nsigning_key = "{device_file}"\n'
                            f'\n[evidence]\nack_public_keys = ["{backoffice}"]\n'
                            f'\n[[commands.operators]]\nid = "{backoffice_key.stem}"\npublic_key = "{backoffice}"\n'
                            'role = "backoffice"\n' + extra)
    return agent


def test_records_dropped_before_the_ledger_are_asked_for_stored_and_acknowledged(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, dsn: str,
        backoffice_key: Path, tmp_path: Path) -> None:
    agent = _registered_agent(agent_factory, dsn, backoffice_key, tmp_path,
                              {"tx_per_minute": "240", "interval_s": "300"})
    agent.start()

    # Published while no ledger session exists: the broker delivers them to nobody.
    wait_until(lambda: len(subscriber.matching(f"/{KIOSK}/tx")) >= 4, 30, message="four transactions")
    dropped = max(m.data["seq"] for m in subscriber.matching(f"/{KIOSK}/tx"))
    port = _free_port()
    config = write_ledger_config(tmp_path / "w1.toml", dsn=dsn, broker_url=broker.url, client_id="ledger-w1",
                                 key_file=backoffice_key, fleet=FLEET,
                                 extra=f'\n[gaps]\nreorder_window_s = 1\ncheck_interval_s = 0.5\n'
                                       f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    worker = LedgerProcess(tmp_path, config).start()
    try:
        _close_the_gap(agent, worker, subscriber, dsn, backoffice_key, dropped)
        # What Prometheus would scrape from this worker.
        metrics = _scrape(port)
        assert metrics['ledger_gaps_closed_total{outcome="filled"}'] >= 1
        assert metrics["ledger_gap_requests_total"] >= 1 and metrics["ledger_gaps_open"] == 0
        stored = _rows(dsn, "SELECT count(*) FROM tx WHERE kiosk = %s", (KIOSK,))[0][0]
        assert metrics['ledger_ingested_total{kind="tx"}'] == stored
        assert metrics["ledger_acked_total"] >= dropped and metrics["ledger_batch_seconds_count"] >= 1
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- kiosk-ledger log ---\n{worker.log[-3000:]}") from None
    finally:
        worker.kill()


def _close_the_gap(agent: AgentProcess, worker: LedgerProcess, subscriber: Subscriber, dsn: str,
                   backoffice_key: Path, dropped: int) -> None:

    # The gap is seen and asked for with the back-office key; the kiosk answers.
    wait_until(lambda: _rows(dsn, "SELECT from_seq, requests FROM gaps WHERE kiosk = %s AND requests > 0",
                             (KIOSK,)), 60, interval=0.2, message="a tx-resend for the gap")
    first, _n = _rows(dsn, "SELECT from_seq, to_seq FROM gaps WHERE kiosk = %s ORDER BY seen_at LIMIT 1",
                      (KIOSK,))[0]
    assert first == 1
    answer = subscriber.wait_for("/cmd/tx-resend/result", lambda d: d["status"] in ("succeeded", "failed",
                                                                                   "refused"), timeout=30).data
    assert (answer["status"], answer["key_id"]) == ("succeeded", backoffice_key.stem), answer
    assert answer["result"]["from_seq"] == 1 and answer["result"]["missing"] == []

    # Filled: every seq up to the newest stored, linked, none pending; the gap closed as filled.
    def whole() -> bool:
        seqs = [s for (s,) in _rows(dsn, "SELECT seq FROM tx WHERE kiosk = %s AND linked_at IS NOT NULL "
                                         "ORDER BY seq", (KIOSK,))]
        pending = _rows(dsn, "SELECT count(*) FROM tx WHERE kiosk = %s AND linked_at IS NULL", (KIOSK,))[0][0]
        return bool(seqs) and seqs == list(range(1, seqs[-1] + 1)) and seqs[-1] > dropped and pending == 0
    wait_until(whole, 60, interval=0.2, message="the chain whole and linked")
    wait_until(lambda: not _rows(dsn, "SELECT 1 FROM gaps WHERE kiosk = %s AND closed_at IS NULL", (KIOSK,)), 30,
               interval=0.2, message="the gap closed")
    assert {o for (o,) in _rows(dsn, "SELECT outcome FROM gaps WHERE kiosk = %s", (KIOSK,))} == {"filled"}
    assert "gap open: sim-0001" in worker.log and "gap closed: sim-0001" in worker.log

    # Acknowledged: the kiosk marked the records it had lost on the way, as any others.
    wait_until(lambda: set(range(1, dropped + 1)) <= _acked_seqs(agent), 60, interval=0.2,
               message=f"seq 1 to {dropped} acknowledged at the kiosk")
    assert not _rows(dsn, "SELECT 1 FROM quarantine")


def test_a_gap_the_kiosk_no_longer_holds_is_closed_lost(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, dsn: str,
        backoffice_key: Path) -> None:
    """Records of an epoch the kiosk's journal no longer has (a lost store): it says so, the gap closes lost."""
    backoffice = backoffice_key.with_suffix(".pub").read_text().strip()
    agent = agent_factory("agent", overrides={"interval_s": "300"})
    agent.config.write_text(agent.config.read_text() + f'\n[[commands.operators]]\nid = "{backoffice_key.stem}"\n'
                            f'public_key = "{backoffice}"\nrole = "backoffice"\n')
    agent.start()
    subscriber.wait_for(f"/{KIOSK}/state", lambda d: d.get("online") is True, timeout=30)
    # The ledger holds seq 3 of an old epoch of sim-0001; seq 1 and 2 never came, and that epoch is gone.
    old = LightKiosk(KIOSK, FLEET)
    with connect(dsn) as conn:
        register_kiosk(conn, KIOSK, FLEET, old.public_key, source="test")
    records = [old.record() for _ in range(3)]
    with connect(dsn, autocommit=True) as conn:
        LedgerStore(conn).write([check_tx(records[2][0], records[2][1], load_kiosks(conn, FLEET))])

    key_id, key = load_key(backoffice_key)
    metrics = LedgerMetrics(FLEET)
    with FleetClient(broker.url, client_id="ledger-gaps-test") as client:
        tracker = GapTracker(FLEET, ResendRequester(client, FLEET, key_id, key), reorder_window_s=0,
                             observer=metrics)
        watcher = GapWatcher(tracker, client, lambda: connect(dsn, autocommit=True), interval_s=0.5).start()
        try:
            answer = subscriber.wait_for("/cmd/tx-resend/result", lambda d: d["status"] == "failed", timeout=30).data
            assert answer["code"] == "tx.epoch_gone" and answer["key_id"] == key_id
            wait_until(lambda: _rows(dsn, "SELECT outcome, detail FROM gaps WHERE kiosk = %s AND closed_at IS NOT "
                                          "NULL", (KIOSK,)), 30, interval=0.2, message="the gap closed")
        finally:
            watcher.stop()
    (outcome, detail), = _rows(dsn, "SELECT outcome, detail FROM gaps WHERE kiosk = %s", (KIOSK,))
    assert outcome == "lost" and detail.startswith("tx.epoch_gone")
    assert metrics.registry.get_sample_value("ledger_gaps_closed_total", {"outcome": "lost"}) == 1.0
    assert metrics.registry.get_sample_value("ledger_gap_requests_total") == 1.0     # asked once: the answer is final


def test_records_lost_at_the_end_of_a_quiet_kiosks_stream_are_found_from_its_health(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, dsn: str,
        backoffice_key: Path, tmp_path: Path) -> None:
    """Nothing is recorded after the lost records (a quiet kiosk): its health's head seq shows the gap."""
    agent = _registered_agent(agent_factory, dsn, backoffice_key, tmp_path, {"tx_per_minute": "600", "interval_s": "5"})
    agent.start()
    wait_until(lambda: len(subscriber.matching(f"/{KIOSK}/tx")) >= 4, 30, message="four transactions")
    agent.kill()            # kill -9; restarted quiet: it records nothing more
    agent.config.write_text(agent.config.read_text().replace("tx_per_minute = 600", "tx_per_minute = 0"))
    agent.start()
    health = subscriber.wait_for(f"/{KIOSK}/health", lambda d: d["outbox"]["tx"]["seq"] >= 4, timeout=30).data
    last = health["outbox"]["tx"]["seq"]
    assert health["outbox"]["tx"]["epoch"] == subscriber.matching(f"/{KIOSK}/tx")[0].data["epoch"]

    config = write_ledger_config(tmp_path / "w1.toml", dsn=dsn, broker_url=broker.url, client_id="ledger-w1",
                                 key_file=backoffice_key, fleet=FLEET,
                                 extra="\n[gaps]\nreorder_window_s = 1\ncheck_interval_s = 0.5\n")
    worker = LedgerProcess(tmp_path, config).start()
    try:
        wait_until(lambda: [s for (s,) in _rows(dsn, "SELECT seq FROM tx WHERE kiosk = %s AND linked_at IS NOT NULL "
                                                     "ORDER BY seq", (KIOSK,))] == list(range(1, last + 1)), 60,
                   interval=0.2, message=f"seq 1 to {last} stored and linked")
        wait_until(lambda: _rows(dsn, "SELECT outcome FROM gaps WHERE kiosk = %s", (KIOSK,)) == [("filled",)], 30,
                   interval=0.2, message="the gap at the end closed filled")
        (from_seq, to_seq), = _rows(dsn, "SELECT from_seq, to_seq FROM gaps WHERE kiosk = %s", (KIOSK,))
        assert (from_seq, to_seq) == (1, last)
        wait_until(lambda: set(range(1, last + 1)) <= _acked_seqs(agent), 60, interval=0.2,
                   message="acknowledged at the kiosk")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- kiosk-ledger log ---\n{worker.log[-3000:]}") from None
    finally:
        worker.kill()


def test_bundles_lost_with_their_records_come_back_and_the_kiosk_erases_them_after_the_ack(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, dsn: str,
        backoffice_key: Path, tmp_path: Path) -> None:
    """Citizen sessions (records and sealed bundles) published while no ledger listened: asked for, both come."""
    import os
    import subprocess
    import sys

    agent = _registered_agent(agent_factory, dsn, backoffice_key, tmp_path, {"interval_s": "5"},
                              extra="\n[devices.idcard]\npoll_interval_s = 0.2\n")
    sim = subprocess.run([sys.executable, "-m", "agent", "simulate", "--config", str(agent.config), "--sessions", "2",
                          "--service", "pension_record_print"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert sim.returncode == 0, sim.stdout + sim.stderr[-2000:]
    bundles = {m.data["tx"] for m in subscriber.matching(f"/{KIOSK}/evidence")}
    assert bundles, "the simulated sessions sealed no evidence"
    agent.start()
    health = subscriber.wait_for(f"/{KIOSK}/health", lambda d: d["outbox"]["tx"]["seq"] >= 2, timeout=30).data
    last = health["outbox"]["tx"]["seq"]

    config = write_ledger_config(tmp_path / "w1.toml", dsn=dsn, broker_url=broker.url, client_id="ledger-w1",
                                 key_file=backoffice_key, fleet=FLEET,
                                 extra="\n[gaps]\nreorder_window_s = 1\ncheck_interval_s = 0.5\n")
    worker = LedgerProcess(tmp_path, config).start()
    try:
        wait_until(lambda: {t for (t,) in _rows(dsn, "SELECT tx_id FROM evidence WHERE kiosk = %s", (KIOSK,))}
                   == bundles, 60, interval=0.2, message="every bundle stored in the ledger")
        wait_until(lambda: set(range(1, last + 1)) <= _acked_seqs(agent), 60, interval=0.2,
                   message="every record acknowledged at the kiosk")

        def kiosk_bundles() -> int:
            conn = sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=10)
            try:
                return int(conn.execute("SELECT count(*) FROM evidence").fetchone()[0])
            finally:
                conn.close()
        wait_until(lambda: kiosk_bundles() == 0, 30, interval=0.2, message="the kiosk erased the acknowledged bundles")
        wait_until(lambda: not _rows(dsn, "SELECT 1 FROM gaps WHERE kiosk = %s AND closed_at IS NULL", (KIOSK,)), 30,
                   interval=0.2, message="the gap closed at the next scan")
        assert {o for (o,) in _rows(dsn, "SELECT outcome FROM gaps WHERE kiosk = %s", (KIOSK,))} == {"filled"}
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- kiosk-ledger log ---\n{worker.log[-3000:]}") from None
    finally:
        worker.kill()
