# SPDX-License-Identifier: Apache-2.0
"""The checks in a child process (fleet/ledger/checkproc.py): the same verdicts as in the worker, a
registry that follows the worker's, a child killed with kill -9 replaced without a batch checked
less, and no child outliving its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from corekit import CoreKiosk

from fleet.ledger.checkproc import InlineChecker, ProcessChecker, check_all
from fleet.ledger.kioskkeys import KioskKeys, SodiumKey
from fleet.ledger.verify import EvidenceItem, Rejection, TxRecord

REPO = Path(__file__).resolve().parents[2]


def registry(*kiosks: CoreKiosk) -> dict[str, KioskKeys]:
    return {k.kiosk: KioskKeys(k.kiosk, k.fleet, {k.kid: SodiumKey(k.public_raw)}) for k in kiosks}


def mixed_batch(a: CoreKiosk, b: CoreKiosk, stranger: CoreKiosk) -> list[tuple[str, bytes]]:
    """Good records of two kiosks, evidence, and one of each kind of refusal the checks make alone."""
    out = []
    for _ in range(40):
        out.append((a.topics.tx, a.record()[1]))
        out.append((b.topics.tx, b.record()[1]))
    rid, payload = a.record()
    out.append((a.topics.evidence, a.evidence(rid, a.seq)))
    out.append((a.topics.tx, payload.replace(b'"outcome":"completed"', b'"outcome":"refunded"')))    # forged
    out.append((stranger.topics.tx, stranger.record()[1]))                                          # unknown
    out.append((b.topics.tx, b"{not json"))                                                         # malformed
    out.append((b.topics.tx, a.record()[1]))                                              # not b's key
    return out


def verdicts(items: list[TxRecord | EvidenceItem | Rejection]) -> list[tuple[str, str]]:
    return [(i.reason, i.detail) if isinstance(i, Rejection) else (type(i).__name__, i.sha256 if
            isinstance(i, EvidenceItem) else i.hash) for i in items]


def test_a_child_gives_the_verdicts_of_the_worker_in_order() -> None:
    a, b, stranger = CoreKiosk("k-a"), CoreKiosk("k-b"), CoreKiosk("k-x")
    batch = mixed_batch(a, b, stranger)
    kiosks = registry(a, b)
    checker = ProcessChecker(processes=2)
    try:
        checker.start()
        got = checker.check(batch, kiosks)
    finally:
        checker.close()
    expected = check_all(batch, kiosks)
    assert got == expected                  # the same items, field by field, in the same order
    assert verdicts(got)[-4:] == verdicts(InlineChecker().check(batch, kiosks))[-4:]
    reasons = [v[0] for v in verdicts(got)]
    assert reasons.count("TxRecord") == 80 and reasons.count("EvidenceItem") == 1
    assert reasons[-4:] == ["bad_signature", "unknown_kiosk", "malformed", "unknown_key"]


def test_the_child_follows_the_registry_added_changed_and_removed() -> None:
    a, b = CoreKiosk("k-a"), CoreKiosk("k-b")
    checker = ProcessChecker()
    try:
        first = [(b.topics.tx, b.record()[1])]
        assert verdicts(checker.check(first, registry(a)))[0][0] == "unknown_kiosk"
        assert verdicts(checker.check(first, registry(a, b)))[0][0] == "TxRecord"       # registered since
        rotated = CoreKiosk("k-b")          # the same kiosk id, another key: the old key no longer verifies
        assert verdicts(checker.check([(b.topics.tx, b.record()[1])], registry(a, rotated)))[0][0] == "unknown_key"
        assert verdicts(checker.check([(b.topics.tx, b.record()[1])], registry(a)))[0][0] == "unknown_kiosk"
    finally:
        checker.close()


def test_a_killed_child_is_replaced_and_its_batch_checked_all_the_same() -> None:
    a, b, stranger = CoreKiosk("k-a"), CoreKiosk("k-b"), CoreKiosk("k-x")
    kiosks = registry(a, b)
    checker = ProcessChecker()
    try:
        checker.start()
        child = checker._children[0]
        assert child is not None
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.join(10)
        batch = mixed_batch(a, b, stranger)
        assert checker.check(batch, kiosks) == check_all(batch, kiosks)      # checked in the worker meanwhile
        batch = mixed_batch(a, b, stranger)
        assert checker.check(batch, kiosks) == check_all(batch, kiosks)      # and by a new child after
        replacement = checker._children[0]
        assert replacement is not None and replacement.proc.pid != child.proc.pid and replacement.proc.is_alive()
    finally:
        checker.close()


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from fleet.ledger.checkproc import ProcessChecker
checker = ProcessChecker(processes=2)
checker.start()
print(" ".join(str(c.proc.pid) for c in checker._children), flush=True)
time.sleep(600)
"""


def test_no_child_outlives_its_worker_killed_with_kill_9() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO))], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None
        pids = [int(p) for p in holder.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "a checking process outlived its worker"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
