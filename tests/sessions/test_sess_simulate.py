# SPDX-License-Identifier: Apache-2.0
"""``kiosk-agent simulate`` end to end, then ``kioskctl verify`` and ``unseal``.

GIVEN the simulation config with a back-office key, WHEN ``kiosk-agent
simulate --sessions N`` runs in its own process, THEN a subscriber receives
N transaction records, the captured stream verifies, every sealed bundle
unseals to its card record and photo, and tampering with or deleting one
stored record is detected and located.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import Subscriber, wait_until
from sesskit import BackOffice, session_config

from agent.runtime.keys import public_pem
from agent.sim.devbroker import DevBroker
from agent.store.journal import canonical
from hal.sim.idcard import SAMPLE_KINDS, sample_card

FAST_READER = "\n[devices.idcard]\npoll_interval_s = 0.2\n"


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kioskctl(*argv: str) -> subprocess.CompletedProcess[str]:
    return run("fleet.cli", *argv)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def simulate_and_check(tmp_path: Path, broker: DevBroker, subscriber: Subscriber, sessions: int) -> dict[str, Any]:
    bo = BackOffice(tmp_path / "backoffice")
    device = Ed25519PrivateKey.generate()
    device_key = tmp_path / "device.pem"
    device_key.write_bytes(device.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    device_key.chmod(0o600)
    (tmp_path / "device.pub").write_bytes(public_pem(device.public_key()))
    config = session_config(tmp_path / "kiosk", broker.url, bo,
                            extra=FAST_READER + f'\n[keys]\nsigning_key = "{device_key}"\n')

    started = time.monotonic()
    proc = run("agent", "simulate", "--config", str(config), "--sessions", str(sessions), timeout=600)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert f"{sessions} sessions" in proc.stdout and "outbox drained" in proc.stdout, proc.stdout
    assert f"{sessions}/{sessions}" in proc.stderr          # the progress bar reached the end

    def journal_txs(kind: str | None = None) -> dict[int, Received]:
        return {m.data["seq"]: m for m in subscriber.matching("/tx") if kind in (None, m.data["data"].get("type"))}

    Received = Any
    # Every default service prints a receipt: each session record is followed by its receipt record.
    wait_until(lambda: len(journal_txs("session")) >= sessions and len(journal_txs("receipt")) >= sessions, 30,
               message=f"{sessions} session and receipt records")
    txs = journal_txs()
    assert sorted(txs) == list(range(1, 2 * sessions + 1))
    session_recs = journal_txs("session")
    outcomes = {m.data["data"]["outcome"] for m in session_recs.values()}
    assert outcomes == {"completed"}, outcomes
    receipts = [m.data["data"] for m in journal_txs("receipt").values()]
    assert sorted(r["tx"] for r in receipts) == sorted(m.data["id"] for m in session_recs.values())
    assert {r["status"] for r in receipts} == {"printed"}
    with_evidence = {m.data["id"] for m in session_recs.values() if m.data["data"]["evidence"]}
    wait_until(lambda: {m.data["tx"] for m in subscriber.matching("/evidence")} >= with_evidence, 30,
               message="every evidence bundle")
    card_types = {m.data["data"]["card_type"] for m in session_recs.values()} - {None}
    if sessions >= 16:
        assert card_types == set(SAMPLE_KINDS)

    # The captured stream, exactly as published, verifies.
    capture = write_lines(tmp_path / "tx.jsonl", [txs[s].payload for s in sorted(txs)])
    pub = str(tmp_path / "device.pub")
    ok = kioskctl("verify", "--public-key", pub, str(capture))
    assert ok.returncode == 0 and f"OK: {len(txs)} record(s)" in ok.stdout, ok.stdout + ok.stderr
    # ... and so does a `kioskctl tx tail --json` style capture.
    tail = [json.dumps({"topic": txs[s].topic, "payload": txs[s].data}, ensure_ascii=False).encode()
            for s in sorted(txs)]
    assert kioskctl("verify", "--public-key", pub, str(write_lines(tmp_path / "tail.jsonl", tail))).returncode == 0

    # Unseal recovers each bundle's card record and photo.
    bundles = {m.data["tx"]: m for m in subscriber.matching("/evidence")}
    ev = write_lines(tmp_path / "evidence.jsonl", [m.payload for m in bundles.values()])
    out = tmp_path / "unsealed"
    opened = kioskctl("unseal", "--key", str(bo.key_file), "--out", str(out), str(ev))
    assert opened.returncode == 0, opened.stderr
    summaries = [json.loads(line) for line in opened.stdout.splitlines()]
    assert {s["tx"] for s in summaries} == set(bundles) == with_evidence
    samples = {kind: sample_card(kind) for kind in SAMPLE_KINDS}
    for summary in summaries:
        sample = samples[summary["card"]["card_type"]]
        assert summary["card"]["id_number"] == sample.id_number and summary["card"]["name"] == sample.name
        assert (out / summary["tx"] / "photo.wlt").read_bytes() == sample.photo_wlt
        assert summary["photo_wlt_bytes"] == 1024
    return {"elapsed": elapsed, "txs": txs, "pub": pub, "config": config, "out": proc.stdout}


def stored_payloads(db: Path) -> list[bytes]:
    with sqlite3.connect(db) as conn:
        return [bytes(p) for (p,) in conn.execute("SELECT payload FROM journal ORDER BY seq")]


def test_simulate_verify_unseal_and_tamper(tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    result = simulate_and_check(tmp_path, broker, subscriber, 32)
    pub, txs = result["pub"], result["txs"]
    payloads = [txs[s].payload for s in sorted(txs)]

    # One record altered in the captured stream: its signature no longer holds.
    record = json.loads(payloads[4])
    record["data"]["outcome"] = "abandoned"
    altered = payloads[:4] + [canonical(record)] + payloads[5:]
    bad = kioskctl("verify", "--public-key", pub, str(write_lines(tmp_path / "altered.jsonl", altered)))
    assert bad.returncode == 1 and "seq 5" in bad.stdout and "bad signature" in bad.stdout, bad.stdout
    # One record dropped from the stream: the gap is named.
    dropped = payloads[:9] + payloads[10:]
    bad = kioskctl("verify", "--public-key", pub, str(write_lines(tmp_path / "dropped.jsonl", dropped)))
    assert bad.returncode == 1 and "seq 11 after 9" in bad.stdout, bad.stdout

    # The same on the kiosk's own store: tamper with one stored record, delete another.
    db = Path(str(result["config"]).replace("agent.toml", "state")) / "agent.db"
    stored = stored_payloads(db)
    assert stored == payloads
    tampered = stored[6].replace(b'"service":"', b'"service":"x', 1)
    assert tampered != stored[6]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE journal SET payload = ? WHERE seq = 7", (tampered,))
    bad = kioskctl("verify", "--public-key", pub, str(write_lines(tmp_path / "db1.jsonl", stored_payloads(db))))
    assert bad.returncode == 1 and "seq 7" in bad.stdout, bad.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE journal SET payload = ? WHERE seq = 7", (stored[6],))
        conn.execute("DELETE FROM journal WHERE seq = 12")
    bad = kioskctl("verify", "--public-key", pub, str(write_lines(tmp_path / "db2.jsonl", stored_payloads(db))))
    assert bad.returncode == 1 and "seq 13 after 11" in bad.stdout, bad.stdout


@pytest.mark.long
def test_simulate_200_sessions(tmp_path: Path, broker: DevBroker, subscriber: Subscriber) -> None:
    result = simulate_and_check(tmp_path, broker, subscriber, 200)
    print(f"\n200 sessions: {result['elapsed']:.1f} s wall clock for `kiosk-agent simulate` ({result['out'].strip()})")


def test_run_with_sessions_per_minute_trickles_transactions(tmp_path: Path, broker: DevBroker,
                                                             subscriber: Subscriber) -> None:
    from kiosktest import AgentProcess

    bo = BackOffice(tmp_path / "backoffice")
    config = session_config(tmp_path / "kiosk", broker.url, bo, extra=FAST_READER)
    config.write_text(config.read_text(encoding="utf-8").replace(
        "sessions_per_minute = 0", "sessions_per_minute = 120"), encoding="utf-8")
    agent = AgentProcess(tmp_path / "proc", broker_url=broker.url, config_text=config.read_text(encoding="utf-8"))
    agent.start()
    try:
        wait_until(lambda: len([m for m in subscriber.matching("/tx")
                                if m.data["data"].get("type") == "session"]) >= 3, 60,
                   message="three trickled sessions")
    finally:
        assert agent.terminate(timeout=15) == 0, agent.log[-2000:]
    assert "Traceback" not in agent.log, agent.log[-3000:]


def test_trickle_stops_even_when_a_cancel_is_swallowed() -> None:
    """Python 3.11's asyncio.wait_for can lose a cancel; SIGTERM must still stop the agent."""
    import asyncio

    from agent.sim.simulate import Trickle

    async def go() -> None:
        async def stubborn() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                pass                    # what wait_for does when the cancel meets a result
            await asyncio.sleep(30)
        trickle = Trickle(None, 60, simulators={}, online=lambda: False,  # type: ignore[arg-type]
                          mode=lambda: "in_service")
        task = trickle._task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)          # let it start: the first cancel must meet the swallowing handler
        stopping = asyncio.ensure_future(trickle.stop())
        # Swallowed, the cancel leaves stubborn() in its second 30 s sleep: only a repeated cancel ends
        # it before the bound (a hang, not a speed figure).
        done, _ = await asyncio.wait({stopping}, timeout=20)
        assert stopping in done and task.cancelled() and trickle._task is None
    asyncio.run(go())
