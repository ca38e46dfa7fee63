# SPDX-License-Identifier: Apache-2.0
"""The ledger keeps each kiosk's state, health, alarms and command results for the dashboard.

A real agent (simulated peripherals) publishes through a real Mosquitto to
a real ``kiosk-ledger serve``; PostgreSQL is a private cluster. What the
dashboard will read is asserted row by row: a kiosk killed -9 goes offline
when the broker publishes its Will and comes back online with a new
"since"; a door opened and closed is one closed episode with a duration;
health rows carry the plotted columns; a ``kioskctl cmd ping`` is stored
with its result; a fresh ledger fills the status from what the broker
retains; malformed messages are dropped and logged without their payload,
and the worker goes on; what is past retention is pruned; every change is
NOTIFYed. Two workers split a fleet and keep every episode whatever the
order; a PostgreSQL outage holds the batch unacknowledged and loses
nothing. The ordering rules (an old Will, a raise after its clear, the same
message twice) run in-process against the same SQL.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from corekit import LedgerFactory, LedgerProcess, Publisher, rows, scalar, write_ledger_config
from kiosktest import AgentProcess, wait_until
from pgcluster import PgCluster

from agent.sim.devbroker import DevBroker
from agent.wire.contract import encode, envelope
from agent.wire.signing import public_b64
from fleet.keys import init_key
from fleet.ledger.config import parse_ledger_config
from fleet.ledger.db import connect
from fleet.ledger.errors import LedgerConfigError
from fleet.ledger.history import Dropped, HistoryMessage, HistoryStore, HistoryWorker, check_message
from fleet.ledger.schema import migrate

KIOSK = "k-hist-1"
KIOSKCTL = str(Path(sys.executable).parent / "kioskctl")
NOW = datetime.datetime.now(datetime.UTC)
UTC = datetime.UTC


# -- in-process: the ordering rules on the real SQL ---------------------------------------------

def msg(rest: str, kiosk: str = "k-1", *, received: datetime.datetime | None = None, **fields: Any) -> HistoryMessage:
    """A contract-valid message on ``kiosk/v1/north/{kiosk}/{rest}``, checked as the worker checks it."""
    checked = check_message(f"kiosk/v1/north/{kiosk}/{rest}", encode(envelope(kiosk, **fields)), fleet="north",
                            received=received or datetime.datetime.now(UTC))
    assert isinstance(checked, HistoryMessage), checked
    return checked


def birth(bd: int, ts: int, **extra: Any) -> HistoryMessage:
    return msg("state", ts=ts, online=True, bdSeq=bd, boot_id=f"b{bd}", mode="in_service", site="beijing-01",
               versions={"agent": "0.9.0", "firmware": None}, peripherals={"printer": {"kind": "printer"}}, **extra)


def will(bd: int, received: datetime.datetime) -> HistoryMessage:
    # A Will's ts is when it was built, before its connection: older than the birth of the same bdSeq.
    return msg("state", ts=1_000, online=False, bdSeq=bd, reason="will", received=received)


def alarm(code: str, active: bool, since: int, ts: int, **extra: Any) -> HistoryMessage:
    return msg(f"alarm/{code}", ts=ts, code=code, active=active, since=since, detail=f"{code} detail",
               severity="critical", **extra)


@pytest.fixture
def store(dsn: str) -> Iterator[HistoryStore]:
    conn = psycopg.connect(dsn, autocommit=True)
    yield HistoryStore(conn)
    conn.close()


def status(dsn: str, kiosk: str = "k-1") -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM kiosk_status WHERE kiosk = %s", (kiosk,))
        names = [d.name for d in cur.description or []]
        row = cur.fetchone()
    assert row is not None, f"no kiosk_status row for {kiosk}"
    return dict(zip(names, row, strict=True))


def ms(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1000)


def test_an_old_will_after_a_newer_birth_is_ignored_and_the_same_message_twice_changes_nothing(
        store: HistoryStore, dsn: str) -> None:
    t0 = ms(NOW) - 600_000
    store.apply([birth(5, t0)])
    first = status(dsn)
    assert (first["online"], first["bd_seq"], first["site"], first["mode"]) == (True, 5, "beijing-01", "in_service")
    assert first["online_since"] == first["last_seen"] == datetime.datetime.fromtimestamp(t0 / 1000, UTC)
    # The same birth again (the retained snapshot after a live one): not a byte changes.
    assert store.apply([birth(5, t0)]).changed == set()
    assert status(dsn) == first
    # The Will of the previous connection arrives late: ignored (MQTT contract), recorded as history only.
    store.apply([will(4, NOW)])
    assert status(dsn)["online"] is True and status(dsn)["bd_seq"] == 5
    # The Will of this connection: offline since the broker published it; last_seen stays the kiosk's last word.
    gone = NOW - datetime.timedelta(seconds=30)
    store.apply([will(5, gone)])
    offline = status(dsn)
    assert (offline["online"], offline["bd_seq"], offline["online_since"]) == (False, 5, gone)
    assert offline["last_seen"] == first["last_seen"]
    # Its own birth delivered again after it (another worker, late): older, ignored.
    store.apply([birth(5, t0)])
    assert status(dsn)["online"] is False
    # A kiosk whose store was lost starts bdSeq again; its birth is newer and wins.
    store.apply([birth(1, ms(NOW))])
    assert (status(dsn)["online"], status(dsn)["bd_seq"]) == (True, 1)
    assert rows(dsn, "SELECT bd_seq, online, reason FROM state_history ORDER BY bd_seq, online") == [
        (1, True, None), (4, False, "will"), (5, False, "will"), (5, True, None)]


def test_a_raise_delivered_after_its_clear_is_stored_closed_and_aliases_are_not_stored(
        store: HistoryStore, dsn: str) -> None:
    t = ms(NOW) // 1000 * 1000 - 3_600_000       # whole seconds: extract(epoch ...) compares exactly
    store.apply([birth(1, t)])
    # Two workers: the clear (kiosk ts t+60 s) is committed before its raise (t+10 s).
    store.apply([alarm("door_open", False, t + 60_000, t + 60_000)])
    assert rows(dsn, "SELECT count(*) FROM alarm_history") == [(0,)]
    store.apply([alarm("door_open", True, t + 10_000, t + 10_000)])
    assert rows(dsn, "SELECT extract(epoch FROM cleared_at - raised_at) FROM alarm_history") == [(50,)]
    assert status(dsn)["active_alarms"] == []
    # A latching alarm: raised, latched (same since, newer ts), the old unlatched message late, then cleared.
    raised = alarm("tamper", True, t + 100_000, t + 100_000)
    latched = alarm("tamper", True, t + 100_000, t + 110_000, latched=True)
    store.apply([raised, latched])
    store.apply([raised])
    assert rows(dsn, "SELECT latched, cleared_at FROM alarm_history WHERE code = 'tamper'") == [(True, None)]
    active = status(dsn)["active_alarms"]
    assert [(a["code"], a["severity"]) for a in active] == [("tamper", "critical")]
    assert datetime.datetime.fromisoformat(active[0]["since"]) == datetime.datetime.fromtimestamp(
        (t + 100_000) / 1000, UTC)
    # A deprecated name mirroring a current one is not a second alarm.
    store.apply([alarm("idreader_fault", True, t + 120_000, t + 120_000, alias_of="idcard_offline")])
    assert rows(dsn, "SELECT count(*) FROM alarm_history WHERE code = 'idreader_fault'") == [(0,)]
    store.apply([alarm("tamper", False, t + 200_000, t + 200_000)])
    assert status(dsn)["active_alarms"] == []
    # A raise whose clear never came ends when the next raise of that code begins.
    store.apply([alarm("paper_out", True, t + 300_000, t + 300_000)])
    store.apply([alarm("paper_out", True, t + 400_000, t + 400_000)])
    assert rows(dsn, "SELECT extract(epoch FROM raised_at), extract(epoch FROM cleared_at) FROM alarm_history "
                "WHERE code = 'paper_out' ORDER BY raised_at") == [
        ((t + 300_000) / 1000, (t + 400_000) / 1000), ((t + 400_000) / 1000, None)]
    # ...unless that clear arrives after all: the episode then ends when it really did.
    store.apply([alarm("paper_out", False, t + 350_000, t + 350_000)])
    assert rows(dsn, "SELECT extract(epoch FROM cleared_at) FROM alarm_history WHERE code = 'paper_out' "
                "ORDER BY raised_at")[0] == ((t + 350_000) / 1000,)


def test_malformed_messages_are_named_without_their_payload() -> None:
    secret = "110101199001011234"
    topic = "kiosk/v1/north/k-1/health"
    for payload in (b"{not json " + secret.encode(), encode(envelope("k-2", reason="periodic", note=secret)),
                    encode({"v": 1, "kiosk": "k-1", "ts": secret})):
        dropped = check_message(topic, payload, fleet="north", received=NOW)
        assert isinstance(dropped, Dropped) and dropped.kiosk == "k-1" and dropped.topic == topic
        assert secret not in dropped.reason
    wrong_kiosk = encode(envelope("k-2", code="door_open", active=True, since=1, detail="", severity="critical"))
    dropped = check_message("kiosk/v1/north/k-1/alarm/door_open", wrong_kiosk, fleet="north", received=NOW)
    assert isinstance(dropped, Dropped) and "kiosk" in dropped.reason
    # An empty payload deletes a retained topic: nothing to keep, nothing wrong.
    assert check_message(topic, b"", fleet="north", received=NOW) is None


def test_retention_deletes_old_history_in_bounded_rounds_and_keeps_open_episodes(
        store: HistoryStore, dsn: str) -> None:
    old = ms(NOW - datetime.timedelta(days=100))
    recent = ms(NOW - datetime.timedelta(days=1))
    messages = [birth(1, old)]
    messages += [msg("health", ts=old + i * 1000, **health_fields()) for i in range(5)]
    messages += [msg("health", ts=recent, **health_fields())]
    messages += [alarm("door_open", True, old, old), alarm("door_open", False, old + 5000, old + 5000),
                 alarm("tamper", True, old + 9000, old + 9000)]
    messages += [msg("cmd/ping/result", ts=old, name="ping", status="succeeded", result={"pong": True}),
                 msg("cmd/ping/result", ts=recent, name="ping", status="succeeded", result={"pong": True})]
    store.apply(messages)
    rounds = []
    while (deleted := store.prune(retention_days=90, limit=2)) is not None and any(deleted.values()):
        rounds.append(deleted)
        assert all(n <= 2 for n in deleted.values())
    assert len(rounds) == 3         # five old health rows, two at a time
    assert rows(dsn, "SELECT count(*) FROM health_history") == [(1,)]
    assert rows(dsn, "SELECT count(*) FROM cmd_results") == [(1,)]
    assert rows(dsn, "SELECT code FROM alarm_history") == [("tamper",)], "an open episode is kept however old"
    assert rows(dsn, "SELECT count(*) FROM state_history") == [(0,)]
    assert status(dsn)["online"] is True, "the current status is never pruned"


@pytest.mark.parametrize(("table", "message"), [
    ({"retention_days": 0}, "history.retention_days = 0: expected 1 to 3650"),
    ({"enabled": "yes"}, "history.enabled = 'yes': expected true or false"),
    ({"retention": 30}, "history.retention: unknown key"),
    ({"batch_ms": 1.5}, "history.batch_ms = 1.5: expected an integer"),
])
def test_the_history_table_of_the_configuration_is_checked_by_name(table: dict[str, Any], message: str) -> None:
    base = {"database": {"dsn": "postgresql://x/y"}, "mqtt": {"client_id": "w1"}, "ledger": {"fleet": "north"},
            "acks": {"key_file": "/k.key"}}
    assert parse_ledger_config(base).history.retention_days == 90
    with pytest.raises(LedgerConfigError, match=re.escape(message)):
        parse_ledger_config({**base, "history": table})


class Seen:
    """A HistoryObserver that remembers."""

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        self.malformed: list[str] = []

    def history_received(self, *, kind: str, count: int) -> None:
        self.received[kind] = self.received.get(kind, 0) + count

    def history_malformed(self, *, kind: str) -> None:
        self.malformed.append(kind)


def test_a_message_postgresql_refuses_is_dropped_alone_and_the_batch_goes_on(
        dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_ledger_config({"database": {"dsn": dsn}, "mqtt": {"client_id": "w-test"},
                               "ledger": {"fleet": "north"}, "acks": {"key_file": "/nonexistent.key"}})
    seen = Seen()
    worker = HistoryWorker(cfg, connect=lambda: connect(dsn, autocommit=True), observer=seen)
    t = ms(NOW)
    # Valid JSON, valid by the schema, but a NUL character PostgreSQL's text and jsonb cannot hold.
    nul = alarm("paper_low", True, t, t, device="printer\u0000")
    batch = [birth(1, t - 1000), nul, alarm("door_open", True, t, t)]
    applied = worker._write(threading.Event(), batch)
    assert applied is not None and applied.changed == {("k-1", "state"), ("k-1", "alarm")}
    assert rows(dsn, "SELECT code FROM alarm_history") == [("door_open",)]
    assert seen.malformed == ["alarm"]
    assert "malformed alarm message from k-1 on kiosk/v1/north/k-1/alarm/paper_low dropped" in caplog.text
    assert "printer" not in caplog.text


def health_fields() -> dict[str, Any]:
    return {"reason": "periodic", "uptime_s": 10, "mode": "in_service",
            "system": {"uptime_s": 10, "load": [0, 0, 0], "mem_total_mb": 512, "mem_available_mb": 200,
                       "disk_free_mb": 900, "disk_total_mb": 4000, "cpu_temp_c": 50.5},
            "agent": {"rss_mb": 40, "version": "0.9.0", "connects": 1}, "peripherals": {}, "alarms": [],
            "outbox": {"tx": {"unacked": 3}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def applied_count(port: int) -> float:
    """``ledger_history_messages_total`` of one worker, all kinds (0 until its endpoint answers)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("ledger_history_messages_total{"))


def test_two_workers_sharing_a_fleet_keep_every_kiosks_episodes_whatever_the_order(
        broker: DevBroker, dsn: str, ledger: LedgerFactory) -> None:
    ports = [free_port(), free_port()]
    config = '\n[history]\nbatch_ms = 1\nbatch_max = 7\nsnapshot_quiet_ms = 300\n\n[metrics]\nlisten = "127.0.0.1:{}"\n'
    workers = [ledger(name, extra=config.format(port)) for name, port in (("w1", ports[0]), ("w2", ports[1]))]
    # Once the snapshot's plain subscription is gone, each message reaches one worker only.
    wait_until(lambda: all("history: retained snapshot read" in w.log for w in workers), 30,
               message="both workers subscribed, their snapshots read")
    kiosks, episodes = [f"k-light-{i:02d}" for i in range(20)], 5
    t = ms(NOW) // 1000 * 1000 - 3_600_000
    messages = []
    for n in range(episodes):
        for kiosk in kiosks:
            raised, cleared = t + n * 60_000, t + n * 60_000 + 20_000
            for active, since in ((True, raised), (False, cleared)):
                messages.append((f"kiosk/v1/north/{kiosk}/alarm/paper_out", encode(envelope(
                    kiosk, ts=since, code="paper_out", active=active, since=since, detail="paper out",
                    severity="critical", device="printer"))))
            messages.append((f"kiosk/v1/north/{kiosk}/health", encode(envelope(kiosk, ts=raised, **health_fields()))))
    publisher = Publisher(broker.url)
    try:
        publisher.publish_many(messages)
        expected = len(kiosks) * episodes
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM alarm_history WHERE cleared_at IS NOT NULL") == expected
                   and scalar(dsn, "SELECT count(*) FROM health_history") == expected, 30,
                   message="every episode closed, every health row stored")
        # Redelivered, all of it: nothing changes (the workers' counters say when they have applied it all).
        publisher.publish_many(messages)
    finally:
        publisher.close()
    try:
        wait_until(lambda: sum(applied_count(port) for port in ports) == 2 * len(messages), 30,
                   message="both deliveries applied")
    except AssertionError:
        raise AssertionError(f"applied {[applied_count(port) for port in ports]} of 2 x {len(messages)}") from None
    assert all(applied_count(port) > 0 for port in ports), "the broker split the fleet between the workers"
    assert rows(dsn, "SELECT count(*), count(DISTINCT (kiosk, raised_at)), min(extract(epoch FROM cleared_at - "
                "raised_at)), max(extract(epoch FROM cleared_at - raised_at)) FROM alarm_history") == [
        (expected, expected, 20, 20)]
    assert scalar(dsn, "SELECT count(*) FROM health_history") == expected
    assert rows(dsn, "SELECT DISTINCT active_alarms, health_at FROM kiosk_status") == [
        ([], datetime.datetime.fromtimestamp((t + (episodes - 1) * 60_000) / 1000, UTC))]
    assert all("malformed" not in w.log for w in workers)


def test_a_postgresql_outage_holds_history_unacknowledged_and_nothing_is_lost(
        tmp_path: Path, broker: DevBroker, backoffice_key: Path) -> None:
    with PgCluster() as own:
        dsn = own.create_database("outage")
        with connect(dsn) as conn:
            migrate(conn)
        worker = LedgerProcess(tmp_path, write_ledger_config(
            tmp_path / "w1.toml", dsn=dsn, broker_url=broker.url, client_id="ledger-w1", key_file=backoffice_key,
            extra="\n[history]\nsnapshot_quiet_ms = 300\n")).start()
        publisher = Publisher(broker.url)
        try:
            wait_until(lambda: "history: retained snapshot read" in worker.log, 30, message="the worker subscribed")
            t = ms(NOW) // 1000 * 1000

            def door(active: bool, since: int) -> tuple[str, bytes]:
                return "kiosk/v1/north/k-1/alarm/door_open", encode(envelope(
                    "k-1", ts=since, code="door_open", active=active, since=since, detail="door", severity="critical"))

            publisher.publish_many([door(True, t)])
            wait_until(lambda: scalar(dsn, "SELECT count(*) FROM alarm_history"), 30, message="the raise stored")
            own.halt()
            publisher.publish_many([door(False, t + 30_000), ("kiosk/v1/north/k-1/cmd/ping/result", encode(
                envelope("k-1", ts=t + 31_000, name="ping", status="succeeded", correlation="ab")))])
            wait_until(lambda: "history: PostgreSQL unavailable" in worker.log, 30, message="the outage noticed")
            assert worker.alive()
            own.resume()
            wait_until(lambda: scalar(dsn, "SELECT count(*) FROM cmd_results") == 1, 60,
                       message="the held batch stored after the outage")
            assert rows(dsn, "SELECT extract(epoch FROM cleared_at - raised_at) FROM alarm_history") == [(30,)]
            assert scalar(dsn, "SELECT active_alarms FROM kiosk_status WHERE kiosk = 'k-1'") == []
        finally:
            publisher.close()
            worker.kill()


def test_after_a_broker_restart_the_worker_subscribes_again_and_reads_the_snapshot_once_more(
        broker: DevBroker, dsn: str, ledger: LedgerFactory) -> None:
    worker = ledger("w1", extra="\n[history]\nsnapshot_quiet_ms = 300\n")
    snapshots = "history: retained snapshot read"
    wait_until(lambda: snapshots in worker.log, 30, message="the worker subscribed")
    t = ms(NOW) // 1000 * 1000
    topic = "kiosk/v1/north/k-1/alarm/paper_out"

    def paper_out(active: bool, since: int) -> bytes:
        return encode(envelope("k-1", ts=since, code="paper_out", active=active, since=since, detail="paper",
                               severity="critical"))

    publisher = Publisher(broker.url)
    publisher.client.publish(topic, paper_out(True, t), qos=1, retain=True).wait_for_publish(10)
    publisher.close()
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM alarm_history"), 30, message="the raise stored")
    broker.stop()
    broker.start()
    # Mosquitto keeps the session but not its shared subscriptions: the worker subscribes again, and reads
    # the retained raise again, which changes nothing.
    wait_until(lambda: worker.log.count(snapshots) >= 2, 30, message="the snapshot read after the restart")
    publisher = Publisher(broker.url)
    try:
        publisher.publish(topic, paper_out(False, t + 45_000))
    finally:
        publisher.close()
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM alarm_history WHERE cleared_at IS NOT NULL"), 30,
               message="the clear after the restart stored")
    assert rows(dsn, "SELECT extract(epoch FROM cleared_at - raised_at) FROM alarm_history") == [(45,)]
    assert worker.alive()


# -- a real kiosk, a real ledger ----------------------------------------------------------------

class Listener:
    """LISTEN kiosk_history on its own connection; collects the payloads."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN kiosk_history")
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                self.seen.append(json.loads(note.payload))

    def kinds(self, kiosk: str) -> set[str]:
        return {n["what"] for n in list(self.seen) if n.get("kiosk") == kiosk}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def kiosk_agent(tmp_path: Path, broker: DevBroker, operator_b64: str) -> AgentProcess:
    # keepalive 5: the broker publishes the Will 7.5 s after a kill -9. Health every 5 s.
    agent = AgentProcess(tmp_path / "kiosk", broker_url=broker.url,
                         overrides={"id": f'"{KIOSK}"', "fleet": '"north"', "keepalive": "5", "interval_s": "5"})
    agent.config.write_text(agent.config.read_text() + f'\n[[commands.operators]]\nid = "op-1"\n'
                            f'public_key = "{operator_b64}"\nrole = "operator"\n')
    return agent


def kill_group(agent: AgentProcess) -> None:
    if agent.proc is not None and agent.proc.poll() is None:
        os.killpg(agent.proc.pid, signal.SIGKILL)       # its firmware runner too
        agent.proc.wait(10)


def seed_old_history(dsn: str) -> None:
    """What a ledger kept 100 days ago, for the running worker to prune."""
    old = NOW - datetime.timedelta(days=100)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO health_history (kiosk, fleet, ts, payload) VALUES ('k-old', 'north', %s, '{}')",
                     (old,))
        conn.execute("INSERT INTO alarm_history (kiosk, fleet, code, raised_at, cleared_at, severity) "
                     "VALUES ('k-old', 'north', 'paper_out', %s, %s, 'critical')", (old, old))
        conn.execute("INSERT INTO cmd_results (kiosk, fleet, name, status, ts) VALUES ('k-old', 'north', 'ping', "
                     "'succeeded', %s)", (old,))


def test_a_real_kiosk_seen_through_the_ledger_history(
        tmp_path: Path, broker: DevBroker, dsn: str, pg: PgCluster, ledger: LedgerFactory,
        backoffice_key: Path) -> None:
    seed_old_history(dsn)
    quick = "\n[history]\nprune_interval_s = 0.5\nsnapshot_quiet_ms = 300\n"
    worker = ledger("w1", extra=quick)
    wait_until(lambda: "history: subscribed" in worker.log, 30, message="the history worker subscribed")
    listener = Listener(dsn)
    operator_paths, operator_key = init_key(tmp_path / "keys", "op-1")
    agent = kiosk_agent(tmp_path, broker, public_b64(operator_key))
    fresh: LedgerProcess | None = None
    try:
        agent.start()

        def online() -> dict[str, Any] | None:
            found = rows(dsn, "SELECT online, bd_seq, online_since, site, versions FROM kiosk_status WHERE kiosk = %s",
                         (KIOSK,))
            return {"online": found[0][0], "bd": found[0][1], "since": found[0][2], "site": found[0][3],
                    "versions": found[0][4]} if found and found[0][0] is not None else None

        born = wait_until(lambda: (s := online()) and s["online"] and s, 30, interval=0.1, message="the kiosk online")
        assert born["site"] == "Simulated outlet, bench 1" and born["versions"]["agent"]

        # What is past retention goes; nothing recent does.
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM health_history WHERE kiosk = 'k-old'") == 0
                   and scalar(dsn, "SELECT count(*) FROM alarm_history WHERE kiosk = 'k-old'") == 0
                   and scalar(dsn, "SELECT count(*) FROM cmd_results WHERE kiosk = 'k-old'") == 0, 20,
                   message="the 100-day-old rows pruned")
        assert "history: pruned past 90 days" in worker.log

        # Health: the dashboard's plotted columns are filled from the real payloads.
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM health_history WHERE kiosk = %s AND disk_free_mb > 0 "
                                  "AND outbox_backlog IS NOT NULL AND connects >= 1 AND rss_mb > 0 "
                                  "AND mode = 'in_service'", (KIOSK,)), 30, message="a health row with its columns")
        assert scalar(dsn, "SELECT health->>'kiosk' FROM kiosk_status WHERE kiosk = %s", (KIOSK,)) == KIOSK

        # The door opened and closed: one episode, closed, with a duration; active while open.
        assert agent.sim("door", "open")["ok"]
        wait_until(lambda: scalar(dsn, "SELECT active_alarms FROM kiosk_status WHERE kiosk = %s", (KIOSK,)), 15,
                   message="door_open among the active alarms")
        assert [a["code"] for a in scalar(dsn, "SELECT active_alarms FROM kiosk_status WHERE kiosk = %s",
                                          (KIOSK,))] == ["door_open"]
        assert agent.sim("door", "close")["ok"]
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM alarm_history WHERE kiosk = %s AND code = 'door_open' "
                                  "AND cleared_at IS NOT NULL", (KIOSK,)), 15, message="the door_open episode closed")
        episodes = rows(dsn, "SELECT severity, device, extract(epoch FROM cleared_at - raised_at) FROM alarm_history "
                        "WHERE kiosk = %s AND code = 'door_open'", (KIOSK,))
        assert len(episodes) == 1 and episodes[0][:2] == ("critical", "door") and episodes[0][2] > 0
        wait_until(lambda: scalar(dsn, "SELECT active_alarms FROM kiosk_status WHERE kiosk = %s", (KIOSK,)) == [], 10,
                   message="no active alarm after the clear")

        # A command through kioskctl, as an operator sends it: its results are the kiosk page's "last commands".
        done = subprocess.run([KIOSKCTL, "cmd", "--broker", broker.url, "--fleet", "north", "--key",
                               str(operator_paths.private), "--timeout", "60", KIOSK, "ping"],
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM cmd_results WHERE kiosk = %s AND name = 'ping' "
                                  "AND status = 'succeeded' AND correlation <> '' AND result ? 'pong'", (KIOSK,)), 15,
                   message="the ping's result stored")
        assert {r[0] for r in rows(dsn, "SELECT status FROM cmd_results WHERE kiosk = %s", (KIOSK,))} >= {
            "accepted", "succeeded"}

        # Malformed messages on the kiosk's topics: dropped, logged without their payload; the worker goes on.
        secret = "110101199001011234"
        publisher = Publisher(broker.url)
        publisher.publish(f"kiosk/v1/north/{KIOSK}/health", b"not json " + secret.encode())
        publisher.publish(f"kiosk/v1/north/{KIOSK}/alarm/door_open", encode(envelope(
            "k-someone-else", code="door_open", active=True, since=1, detail=secret, severity="critical")))
        publisher.publish(f"kiosk/v1/north/{KIOSK}/cmd/ping/result", encode(envelope(KIOSK, name="ping",
                                                                                     status=secret)))
        publisher.close()
        wait_until(lambda: "history: malformed" in worker.log, 15, message="the malformed message logged")
        assert secret not in worker.log
        assert worker.log.count("history: malformed") == 1, "once per kiosk per minute"
        assert f"from {KIOSK} on kiosk/v1/north/{KIOSK}/" in worker.log

        # kill -9: the broker publishes the Will after the keepalive; the kiosk is offline since then.
        agent.kill()
        wait_until(lambda: (s := online()) and not s["online"], 30, interval=0.1, message="the kiosk offline (Will)")
        gone = online()
        assert gone is not None and gone["bd"] == born["bd"] and gone["since"] > born["since"]
        assert rows(dsn, "SELECT reason FROM state_history WHERE kiosk = %s AND bd_seq = %s AND NOT online",
                    (KIOSK, born["bd"])) == [("will",)]

        # Back: online again, a newer connection, a new since.
        agent.start()
        back = wait_until(lambda: (s := online()) and s["online"] and s, 30, interval=0.1, message="back online")
        assert back["bd"] > born["bd"] and back["since"] > gone["since"]
        assert listener.kinds(KIOSK) >= {"state", "health", "alarm", "cmd"}

        # The door left open, the kiosk shut down: what the broker retains is all a new ledger will hear.
        assert agent.sim("door", "open")["ok"]
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM alarm_history WHERE kiosk = %s AND code = 'door_open' "
                                  "AND cleared_at IS NULL", (KIOSK,)), 15, message="the door open again")
        assert agent.terminate() == 0
        wait_until(lambda: (s := online()) and not s["online"], 15, message="offline after the shutdown")
        worker.kill()

        # A fresh ledger on an empty database: kiosk_status from the retained state, health and alarms.
        dsn2 = pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
        with connect(dsn2) as conn:
            migrate(conn)
        fresh = LedgerProcess(tmp_path, write_ledger_config(
            tmp_path / "fresh.toml", dsn=dsn2, broker_url=broker.url, client_id="ledger-fresh",
            key_file=backoffice_key, extra=quick)).start()
        wait_until(lambda: "history: retained snapshot read" in fresh.log, 30, message="the snapshot read")
        snap = status(dsn2, KIOSK)
        assert (snap["online"], snap["bd_seq"]) == (False, back["bd"])
        # The retained state is the shutdown message: no site or versions until the kiosk's next birth.
        assert snap["site"] is None and snap["versions"] is None
        assert snap["health"]["kiosk"] == KIOSK and snap["mode"] == "in_service"
        assert [a["code"] for a in snap["active_alarms"]] == ["door_open"]
        assert rows(dsn2, "SELECT reason FROM state_history WHERE kiosk = %s", (KIOSK,)) == [("shutdown",)]
        assert scalar(dsn2, "SELECT count(*) FROM health_history WHERE kiosk = %s", (KIOSK,)) == 1
    finally:
        listener.close()
        kill_group(agent)
        if fresh is not None:
            fresh.kill()
