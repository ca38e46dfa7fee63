# SPDX-License-Identifier: Apache-2.0
"""Power cuts on demand: LazyFS mounted over a backing directory, a store on it.

One cycle: mount, start the recorder on the mount, let it run for a random
while, then cut power -- ``kill -9`` the filesystem (every unsynced write
is gone with its memory) and at once the recorder -- and detach the dead
mount. ``check()`` then opens what the "disk" (the backing directory)
holds: ``PRAGMA integrity_check`` must say ok, every id the recorder logged
after ``record()`` returned must be in the journal, seq gapless from 1, the
hash chain and every signature valid.

    rig = PowerCutRig(tmp_path, sync="FULL")
    for _ in range(25):
        rig.cycle(rng)
        rig.check()
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agent.runtime.keys import DEVICE_KEY_NAME, load_public
from agent.store.database import DB_NAME
from agent.store.journal import record_hash, verify_chain

HERE = Path(__file__).resolve().parent
LAZYFS = HERE / "lazyfs.py"
RECORDER = HERE / "recorder.py"


class PowerCutError(AssertionError):
    """What a power cut broke: names the cycle and the first loss."""


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class PowerCutRig:
    def __init__(self, workdir: Path, *, sync: str = "FULL", quota_file: Path | None = None) -> None:
        self.backing = workdir / "disk"
        self.mount = workdir / "mnt"
        self.log = workdir / "recorded.log"
        self.out = workdir / "procs.log"
        self.sync = sync
        self.quota_file = quota_file
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.fs: subprocess.Popen[bytes] | None = None
        self.cycles = 0
        self._verified: tuple[int, str] | None = None     # (seq, hash) checked so far

    # -- mount / unmount ----------------------------------------------------

    def mount_fs(self) -> None:
        args = [sys.executable, str(LAZYFS), str(self.backing), str(self.mount)]
        if self.quota_file is not None:
            args += ["--quota-file", str(self.quota_file)]
        with open(self.out, "ab") as out:
            self.fs = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: os.path.ismount(self.mount) or self.fs.poll() is not None, 20, "the LazyFS mount")
        if self.fs.poll() is not None:
            raise AssertionError(f"lazyfs exited {self.fs.returncode}: {self.out.read_text()[-2000:]}")

    def power_off(self) -> None:
        """Kill the filesystem (unsynced data is gone) and detach the mount."""
        if self.fs is not None and self.fs.poll() is None:
            os.kill(self.fs.pid, signal.SIGKILL)
            self.fs.wait(10)
        self.fs = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        _wait(lambda: not os.path.ismount(self.mount), 10, "the mount to go")

    # -- one cycle ------------------------------------------------------------

    def start_recorder(self, *extra: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
        return subprocess.Popen([sys.executable, str(RECORDER), "--state", str(self.mount / "state"),
                                 "--log", str(self.log), "--sync", self.sync, *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def cycle(self, rng: random.Random) -> None:
        """Mount, record for a random while, cut the power."""
        self.cycles += 1
        self.mount_fs()
        rec = self.start_recorder("--seed", str(rng.randrange(2**32)))     # its choices replay with the run's seed
        try:
            assert rec.stdout is not None
            line = rec.stdout.readline()
            if b"running" not in line:
                rest = rec.stdout.read() if rec.poll() is not None else b""
                raise AssertionError(f"recorder did not start: {(line + rest).decode(errors='replace')[-2000:]}")
            time.sleep(rng.uniform(0.02, 0.6))
        finally:
            self.power_off()
            if rec.poll() is None:
                os.killpg(rec.pid, signal.SIGKILL)
            rec.wait(10)
            if rec.stdout is not None:
                rec.stdout.close()

    # -- the check -------------------------------------------------------------------

    def recorded(self) -> list[str]:
        if not self.log.exists():
            return []
        return [line.split()[0] for line in self.log.read_text().splitlines() if line.strip()]

    def check(self, full: bool = False) -> dict[str, int]:
        """What the disk holds after the cut must hold every acknowledged record.

        The chain is verified from where the last check ended (``full``: from
        seq 1), so a long run does not re-verify every record at every cut;
        the records already verified are still required to be unchanged
        (their hashes chain into the new ones).
        """
        db = self.backing / "state" / DB_NAME
        conn = sqlite3.connect(db)
        try:
            return self._check(conn, full)
        except sqlite3.Error as exc:
            # Even the schema can be lost (a CREATE TABLE never fsynced).
            raise PowerCutError(f"cycle {self.cycles}: the store on disk is unusable: {exc}") from exc
        finally:
            conn.close()

    def _check(self, conn: sqlite3.Connection, full: bool) -> dict[str, int]:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            raise PowerCutError(f"cycle {self.cycles}: integrity_check: {result[:5]}")
        present = {r[0] for r in conn.execute("SELECT id FROM journal")}
        start = None if full or self._verified is None else self._verified
        first = 1 if start is None else start[0]
        rows = conn.execute("SELECT payload FROM journal WHERE seq >= ? ORDER BY seq", (first,)).fetchall()
        recorded = self.recorded()
        lost = [i for i in recorded if i not in present]
        if lost:
            raise PowerCutError(f"cycle {self.cycles}: {len(lost)} records lost whose record() had returned, "
                                f"e.g. {lost[:2]}")
        key = load_public(self.backing / "state" / DEVICE_KEY_NAME)
        payloads = [bytes(r[0]) for r in rows]
        if start is not None:
            # The last verified record must still be there, byte for byte.
            if not payloads or record_hash(payloads[0]) != start[1]:
                raise PowerCutError(f"cycle {self.cycles}: verified record seq {start[0]} changed or vanished")
            report = verify_chain(payloads[1:], key, prev=start[1], first_seq=start[0] + 1)
        else:
            report = verify_chain(payloads, key)
        if not report.ok:
            raise PowerCutError(f"cycle {self.cycles}: {report}")
        if report.last_seq is not None and report.last_hash is not None:
            self._verified = (report.last_seq, report.last_hash)
        return {"records": len(present), "acknowledged": len(recorded)}
