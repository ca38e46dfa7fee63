# SPDX-License-Identifier: Apache-2.0
"""``tx-resend``: the back office asks a kiosk to publish a range of its journal again.

GIVEN a kiosk that published transactions, WHEN the ledger's key (role
``backoffice``) signs ``tx-resend {epoch, from_seq, to_seq}``, THEN the same
records, byte for byte, arrive on ``tx`` again; that key can do nothing
else; a range of another epoch, beyond the head or too long gets a failed
result with a stable code and queues nothing. ``kioskctl tx resend`` does
the same from a shell. The journal's side (pruned ranges, idempotence)
runs on a real store in-process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cmdkit import FLEET, KIOSK, KIOSKCTL, Keys, Sender, by_corr, start_agent, wait_online
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import AgentProcess, Subscriber, wait_until

from agent.sessions.evidence import EvidenceStore
from agent.sim.devbroker import DevBroker
from agent.store.database import Store
from agent.store.journal import MAX_RESEND, Journal, ResendRefused
from agent.wire.signing import KIND_CMD, ROLE_COMMANDS, command_envelope, public_b64, sign


class Ledger:
    """The back office's key, trusted by the kiosk for tx/ack and, as role backoffice, for tx-resend."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()

    def trust(self) -> str:
        return (f'\n[evidence]\nack_public_keys = ["{public_b64(self.key)}"]\n'
                f'\n[[commands.operators]]\nid = "ledger-1"\npublic_key = "{public_b64(self.key)}"\n'
                'role = "backoffice"\n')

    def envelope(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return sign(command_envelope(name, args, fleet=FLEET, kiosk=KIOSK), "ledger-1", self.key, KIND_CMD)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        path.chmod(0o600)
        return path


def _result(sender: Sender, subscriber: Subscriber, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    corr = sender.send(name, doc)
    return subscriber.wait_for(f"/cmd/{name}/result", by_corr(corr, terminal=True), timeout=20).data  # type: ignore[no-any-return]


def _published(subscriber: Subscriber, seq: int) -> list[bytes]:
    return [m.payload for m in subscriber.matching(f"/{KIOSK}/tx") if m.data.get("seq") == seq]


def test_the_ledger_key_gets_a_range_again_byte_for_byte_and_nothing_else(
        agent_factory: type[AgentProcess], broker: DevBroker, subscriber: Subscriber, tmp_path: Path) -> None:
    keys, ledger = Keys(), Ledger()
    start_agent(agent_factory, keys, overrides={"tx_per_minute": "600"}, extra=ledger.trust())
    sender = Sender(broker.url)
    try:
        wait_online(subscriber)
        # Ten out: seq 2 to 4 were acknowledged by the broker long enough ago to have left the outbox.
        wait_until(lambda: len(subscriber.matching(f"/{KIOSK}/tx")) >= 10, 30, message="ten transactions")
        first = {m.data["seq"]: m for m in subscriber.matching(f"/{KIOSK}/tx")}
        epoch = first[1].data["epoch"]
        originals = {seq: first[seq].payload for seq in (2, 3, 4)}

        done = _result(sender, subscriber, "tx-resend",
                       ledger.envelope("tx-resend", {"epoch": epoch, "from_seq": 2, "to_seq": 4}))
        assert done["status"] == "succeeded", done
        assert {k: done["result"][k] for k in ("epoch", "from_seq", "to_seq", "queued", "missing")} == \
            {"epoch": epoch, "from_seq": 2, "to_seq": 4, "queued": 3, "missing": []}
        for seq, payload in originals.items():
            wait_until(lambda s=seq: len(_published(subscriber, s)) >= 2, 20, message=f"seq {seq} again")
            assert set(_published(subscriber, seq)) == {payload}, "a resent record must be the same bytes"
        assert len(_published(subscriber, 5)) == 1, "only the range asked for goes again"

        # The ledger's key may ask for records, never run anything else.
        refused = _result(sender, subscriber, "reboot", ledger.envelope("reboot", {}))
        assert (refused["status"], refused["code"]) == ("refused", "cmd.forbidden")
        assert ROLE_COMMANDS["backoffice"] == {"tx-resend"}

        # A range it cannot serve: a failed result naming why, nothing queued.
        other_epoch = _result(sender, subscriber, "tx-resend",
                              ledger.envelope("tx-resend", {"epoch": "0" * 32, "from_seq": 1, "to_seq": 2}))
        assert (other_epoch["status"], other_epoch["code"]) == ("failed", "tx.epoch_gone")
        assert other_epoch["result"]["epoch"] == epoch      # tells the ledger which epoch it has now
        beyond = _result(sender, subscriber, "tx-resend",
                         ledger.envelope("tx-resend", {"epoch": epoch, "from_seq": 10**12 - 5, "to_seq": 10**12}))
        assert (beyond["status"], beyond["code"]) == ("failed", "tx.range_not_recorded")
        too_long = _result(sender, subscriber, "tx-resend", ledger.envelope(
            "tx-resend", {"epoch": epoch, "from_seq": 1, "to_seq": MAX_RESEND + 1}))
        assert (too_long["status"], too_long["code"]) == ("failed", "tx.range_too_large")
        backwards = _result(sender, subscriber, "tx-resend",
                            ledger.envelope("tx-resend", {"epoch": epoch, "from_seq": 5, "to_seq": 4}))
        assert (backwards["status"], backwards["code"]) == ("failed", "tx.range_invalid")
        bad_epoch = _result(sender, subscriber, "tx-resend",
                            ledger.envelope("tx-resend", {"epoch": "not-hex", "from_seq": 1, "to_seq": 1}))
        assert (bad_epoch["status"], bad_epoch["code"]) == ("refused", "cmd.bad_arguments")
        assert len(_published(subscriber, 1)) == 1

        # kioskctl tx resend, as an operator would type it (exit 0, a line saying what went).
        done_cli = subprocess.run(
            [KIOSKCTL, "tx", "resend", KIOSK, "--epoch", epoch, "--from", "1", "--to", "1", "--broker", broker.url,
             "--fleet", FLEET, "--key", str(ledger.write(tmp_path / "ledger-1.key")), "--timeout", "30"],
            capture_output=True, text=True, timeout=60, check=False)
        assert done_cli.returncode == 0, done_cli.stderr
        assert "1 record(s) queued again" in done_cli.stdout
        wait_until(lambda: len(_published(subscriber, 1)) == 2, 20, message="seq 1 again")
        gone = subprocess.run(
            [KIOSKCTL, "tx", "resend", KIOSK, "--epoch", "0" * 32, "--from", "1", "--to", "1", "--broker",
             broker.url, "--fleet", FLEET, "--key", str(tmp_path / "ledger-1.key"), "--json"],
            capture_output=True, text=True, timeout=60, check=False)
        assert gone.returncode == 1 and json.loads(gone.stdout)["code"] == "tx.epoch_gone", gone
    finally:
        sender.close()


def _journal(tmp_path: Path) -> tuple[Store, Journal]:
    store = Store.open(tmp_path / "state")
    return store, Journal(store, Ed25519PrivateKey.generate(), "k-1", fleet="f")


def _queued(store: Store) -> list[int]:
    return [int(r[0]) for r in store.conn.execute("SELECT ref FROM outbox WHERE cls = 'tx' ORDER BY id")]


def test_resend_is_idempotent_and_names_what_the_journal_no_longer_holds(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, journal = _journal(tmp_path)
        try:
            records = [await journal.record({"n": n}) for n in range(1, 9)]
            # Still queued (never published): nothing is queued twice.
            again = await journal.resend(journal.epoch, 1, 8)
            assert (again["queued"], again["already_queued"]) == (0, 8)
            assert _queued(store) == list(range(1, 9))

            # Published (the outbox forgets them), acknowledged and pruned up to seq 5.
            store.conn.execute("DELETE FROM outbox")
            store.conn.commit()
            await journal.mark_acked([r.id for r in records[:5]])
            assert await journal.prune(0, now_ms=records[-1].ts + 86_400_000) == 5
            partly = await journal.resend(journal.epoch, 4, 7)
            assert (partly["queued"], partly["missing"]) == (2, [[4, 5]])
            assert _queued(store) == [6, 7]
            with pytest.raises(ResendRefused) as gone:
                await journal.resend(journal.epoch, 2, 5)
            assert gone.value.code == "tx.range_gone" and gone.value.detail is not None
            assert gone.value.detail["first_seq"] == 6 and gone.value.detail["missing"] == [[2, 5]]
            assert _queued(store) == [6, 7]

            # A record whose sealed bundle the kiosk still holds: the bundle goes again too, once.
            bundles = EvidenceStore(store.path, retention_days=30)
            try:
                bundles.put(records[7].id, b'{"tx":"sealed bundle, as published"}')
                sent = await journal.resend(journal.epoch, 8, 8)
                assert (sent["queued"], sent["evidence_queued"], sent["evidence_held"]) == (1, 1, 1)
                again = await journal.resend(journal.epoch, 7, 8)
                assert (again["queued"], again["evidence_queued"], again["evidence_held"]) == (0, 0, 1)
                rows = store.conn.execute("SELECT topic, payload FROM outbox WHERE cls = 'evidence'").fetchall()
                assert [(t, bytes(p)) for t, p in rows] == [("kiosk/v1/f/k-1/evidence",
                                                             b'{"tx":"sealed bundle, as published"}')]
            finally:
                bundles.close()
        finally:
            store.close()
    asyncio.run(scenario())
