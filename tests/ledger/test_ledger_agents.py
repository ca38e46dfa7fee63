# SPDX-License-Identifier: Apache-2.0
"""Real kiosks (``kiosk-agent run`` on simulated peripherals, citizens in a trickle) and two ledger workers.

The claims are the kiosk's: every record in its journal ends up in
PostgreSQL exactly once and linked, every one acknowledged (the kiosk's own
journal says so), and the sealed evidence on the kiosk is erased once the
ledger acknowledged it -- with a worker killed -9 mid-stream, another killed
between a commit and its PUBACK (the fault hook), and (long run) the broker
restarted under them. Light kiosks publish beside them, so the workers also
see load from kiosks that are not agents.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corekit import AckWatcher, CoreKiosk, LedgerFactory, Publisher, rows, scalar
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, wait_until

from agent.sim.devbroker import DevBroker
from agent.wire.sealing import X25519PrivateKey, public_key_b64
from agent.wire.signing import public_b64, public_raw
from fleet.keys import load_key
from fleet.ledger.db import connect, register_kiosk
from fleet.ledger.ingest import FAULT_ENV


class Kiosk:
    """One real agent with its own device key, registered with the ledger before it starts."""

    def __init__(self, workdir: Path, broker_url: str, dsn: str, name: str, *, ack_key_b64: str,
                 evidence_b64: str, sessions_per_minute: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        key = Ed25519PrivateKey.generate()
        key_file = workdir / "device-ed25519.pem"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        with connect(dsn) as conn:
            register_kiosk(conn, name, "north", public_raw(key), source="test")
        self.public_b64 = public_b64(key)
        self.args = {"broker_url": broker_url}
        # The back-office key signs tx/ack and may ask for records again (tx-resend, ledger-ops' gap watcher).
        self.extra = (f'\n[keys]\nsigning_key = "{key_file}"\n\n[evidence]\nrecipient_public_key = "{evidence_b64}"\n'
                      f'ack_public_keys = ["{ack_key_b64}"]\n\n[[commands.operators]]\nid = "backoffice-1"\n'
                      f'public_key = "{ack_key_b64}"\nrole = "backoffice"\n')
        self.workdir = workdir
        self.agent = self._agent(sessions_per_minute)

    def _agent(self, sessions_per_minute: int) -> AgentProcess:
        agent = AgentProcess(self.workdir, broker_url=self.args["broker_url"],
                             overrides={"id": f'"{self.name}"', "fleet": '"north"',
                                        "sessions_per_minute": str(sessions_per_minute)})
        # Back within seconds of a broker restart (the default backoff reaches 120 s).
        text = agent.config.read_text().replace("\n[mqtt]\n", "\n[mqtt]\nreconnect_max_s = 3\n", 1)
        agent.config.write_text(text + self.extra)
        return agent

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=10)

    def journal(self) -> list[tuple[str, int, int | None]]:
        with self.db() as conn:
            return conn.execute("SELECT id, seq, acked_ms FROM journal ORDER BY seq").fetchall()

    def evidence_ids(self) -> set[str]:
        """Bundles the kiosk still holds."""
        with self.db() as conn:
            return {r[0] for r in conn.execute("SELECT tx_id FROM evidence")}

    def evidence_seen(self) -> set[str]:
        """Transactions whose record says sealed evidence follows."""
        with self.db() as conn:
            return {r[0] for r in conn.execute(
                "SELECT id FROM journal WHERE json_extract(CAST(payload AS TEXT), '$.data.evidence')")}


@pytest.fixture
def acks(broker: DevBroker, dsn: str) -> Iterator[AckWatcher]:
    watcher = AckWatcher(broker.url, "north", dsn)
    yield watcher
    watcher.close()


def run_fleet(*args: Any, **kwargs: Any) -> None:
    """``_run_fleet``; its agents (and their firmware runners) are killed whatever happens."""
    kiosks: list[Kiosk] = []
    try:
        _run_fleet(kiosks, *args, **kwargs)
    finally:
        for k in kiosks:
            proc = k.agent.proc
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)     # its own session: the firmware runner goes too
                proc.wait(10)


def _run_fleet(kiosks: list[Kiosk], tmp_path: Path, broker: DevBroker, dsn: str, ledger: LedgerFactory,
               acks: AckWatcher, backoffice_key: Path, *, agents: int, light: int, per_light: int,
               sessions_per_minute: int = 120, broker_restart: bool = False) -> None:
    _kid, ack_key = load_key(backoffice_key)
    evidence_key = X25519PrivateKey.generate()
    kiosks += [Kiosk(tmp_path / f"kiosk-{i}", broker.url, dsn, f"k-real-{i}", ack_key_b64=public_b64(ack_key),
                     evidence_b64=public_key_b64(evidence_key), sessions_per_minute=sessions_per_minute)
               for i in range(agents)]
    lights = [CoreKiosk(f"k-light-{i:03d}") for i in range(light)]
    with connect(dsn) as conn:
        for k in lights:
            register_kiosk(conn, k.kiosk, k.fleet, k.public_raw, source="test")
    quick_gaps = "\n[gaps]\nreorder_window_s = 2\ncheck_interval_s = 1\nretry_s = 5\n"
    w1, w2 = ledger("w1", extra=quick_gaps), ledger("w2", extra=quick_gaps)
    wait_until(lambda: all("subscribed to the fleet's tx and evidence" in w.log for w in (w1, w2)), 30,
               message="the workers subscribed")
    for k in kiosks:
        k.agent.start()
    publisher = Publisher(broker.url)
    light_ids: dict[str, set[str]] = {k.kiosk: set() for k in lights}

    def publish_light(n: int) -> None:
        batch = []
        for k in lights:
            for _ in range(n):
                rid, payload = k.record()
                light_ids[k.kiosk].add(rid)
                batch.append((k.topics.tx, payload))
        publisher.publish_many(batch)

    publish_light(per_light // 2)
    # Citizens are being served: wait until bundles reach the ledger, then kill -9 a worker mid-stream.
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM evidence") >= agents, 90, interval=0.2,
               message="evidence from the kiosks in the ledger")
    w1.kill()
    publish_light(per_light - per_light // 2)
    w1.start()
    publisher.close()
    # A real broker restart under the running kiosks. Mosquitto keeps sessions but not shared
    # subscriptions: what a kiosk publishes before the workers subscribe again has no subscriber,
    # and ledger-ops' gap watcher asks the kiosk for its records again (tx-resend). A sealed bundle
    # lost there is not asked for yet (known, see the report), so only the long run restarts the
    # broker under real kiosks; test_ledger_flow restarts it under light ones.
    if broker_restart:
        mark = "subscribed to the fleet's tx and evidence"
        marks = (w1.log.count(mark), w2.log.count(mark))
        broker.stop()
        broker.start()
        wait_until(lambda: w1.log.count(mark) > marks[0] and w2.log.count(mark) > marks[1], 30,
                   message="both workers subscribed again")
    # A worker killed between a commit and its PUBACK (the test-only fault hook), then back.
    w2.kill()
    w2.start(env={FAULT_ENV: "exit_after_commit"})
    wait_until(lambda: not w2.alive(), 60, message="worker 2 killing itself after a commit")
    w2.start(env={})
    # The kiosks keep serving citizens; take what each journal holds now (with the evidence it sealed)
    # and wait until all of it is in PostgreSQL, acknowledged by the kiosk, and its evidence erased.
    wait_until(lambda: all(k.evidence_seen() for k in kiosks), 60, interval=0.2,
               message="every kiosk sealed evidence")
    snapshot = {k.name: k.journal() for k in kiosks}
    sealed = {k.name: k.evidence_seen() for k in kiosks}

    def settled() -> bool:
        for k in kiosks:
            acked = {i for i, _s, a in k.journal() if a is not None}
            if not {i for i, _s, _a in snapshot[k.name]} <= acked or sealed[k.name] & k.evidence_ids():
                return False
        return all(ids <= acks.acked(kiosk) for kiosk, ids in light_ids.items())

    try:
        wait_until(settled, 180, interval=0.5, message="the kiosks' records acknowledged and their evidence erased")
    except AssertionError:
        detail = [(k.name, len(snapshot[k.name]), sum(a is None for *_x, a in k.journal()),
                   len(sealed[k.name] & k.evidence_ids())) for k in kiosks]
        raise AssertionError(f"not settled: (kiosk, records, unacked now, sealed evidence left) {detail}; ledger "
                             f"{rows(dsn, 'SELECT count(*), count(linked_at), count(acked_at) FROM tx')}\n"
                             f"{w1.log[-2000:]}") from None
    for k in kiosks:
        assert k.agent.terminate() == 0
        assert "tx/ack refused" not in k.agent.log
    # Every record of every journal that reached PostgreSQL is there once, in its place, linked.
    for k in kiosks:
        journal = [(i, s) for i, s, _a in k.journal()]
        stored = rows(dsn, "SELECT id, seq, linked_at IS NOT NULL FROM tx WHERE kiosk = %s ORDER BY seq", (k.name,))
        assert [(i, s) for i, s, _l in stored] == journal[:len(stored)], f"{k.name}: exactly once, in order"
        assert len(stored) >= len(snapshot[k.name]) and all(linked for *_x, linked in stored)
        assert scalar(dsn, "SELECT count(*) FROM evidence WHERE kiosk = %s AND tx_id = ANY(%s)",
                      (k.name, list(sealed[k.name]))) == len(sealed[k.name]), "the sealed bundles, in the ledger"
    for kiosk, ids in light_ids.items():
        assert {r[0] for r in rows(dsn, "SELECT id FROM tx WHERE kiosk = %s", (kiosk,))} == ids
    assert acks.uncommitted == [], "an id was acknowledged before it was committed"
    assert scalar(dsn, "SELECT count(*) FROM quarantine") == 0


def test_real_kiosks_and_light_ones_through_kill_9_and_a_kill_between_commit_and_puback(
        tmp_path: Path, broker: DevBroker, dsn: str, ledger: LedgerFactory, acks: AckWatcher,
        backoffice_key: Path) -> None:
    run_fleet(tmp_path, broker, dsn, ledger, acks, backoffice_key, agents=3, light=20, per_light=20)


@pytest.mark.long
def test_fifty_real_kiosks_through_kill_9_a_broker_restart_and_a_kill_between_commit_and_puback(
        tmp_path: Path, broker: DevBroker, dsn: str, ledger: LedgerFactory, acks: AckWatcher,
        backoffice_key: Path) -> None:
    run_fleet(tmp_path, broker, dsn, ledger, acks, backoffice_key, agents=50, light=200, per_light=50,
              sessions_per_minute=20, broker_restart=True)
