# SPDX-License-Identifier: Apache-2.0
"""The agent's one SQLite database: counters, journal, outbox, nonces, alarms.

WAL mode with ``synchronous=FULL``: a commit that returned survives a power
cut. Opened once by the daemon.

Two ways in:

- ``store.conn``: the event loop's own connection, for small writes that
  happen seldom (``bump_counter``, alarms, command nonces). Each commit is
  one fsync of the WAL.
- ``store.writer``: one thread with its own connection that batches the
  hot path (journal records, outbox rows, delivery marks) into group
  commits, so the loop never waits on an fsync and N records arriving
  together cost one fsync, not N. See :class:`Writer`.

At open the file is checked (``PRAGMA quick_check``) only when the last
stop was not clean (no clean-stop marker: ``kill -9``, a power cut, a
crash); after a clean stop the check runs in the background once the kiosk
is connected (``check_in_background``), so start-up cost does not grow with
the journal. A file that fails, or is not a database at all, is moved aside
with its ``-wal``/``-shm``
(``agent.db.corrupt-20261123T091500Z``; never deleted), a fresh store is
started and ``store.recovered_from`` names the kept file, so the daemon can
raise ``store_corrupt``. Why quick_check and not integrity_check: the
difference is only the index-vs-table cross check, an O(N log N) pass that
costs seconds on a Pi's SD card (start-to-connected budget: 0.7 s), while the
damage a power cut or a dying card causes -- torn or garbage pages, broken
b-trees, bad record formats -- is what quick_check reads every page for.
``Store.integrity_check()`` runs the full check on demand.

The tables, and the ladder of migrations that brings an older file up to
date at open, are declared in ``agent/store/schema.py``; a file written by
a newer release is refused (``StoreTooNew``) and left untouched, never
treated as corrupt.

What must outlive the database sits beside it in ``continuity.json``
(:class:`Continuity`): the journal's epoch and last noted seq, and the
replay guard's high-water (newest accepted command issue time) with the
nonces it does not yet cover. The store also records when it was created
(``created_ms``): a command issued before that cannot be checked against
the nonces of a store that no longer exists. Files in ``storage.dir`` are
0600 and directories 0700 whatever the umask.

    store = Store.open(Path("/var/lib/kiosk-agent"))
    bd_seq = store.bump_counter("bdSeq")
    if store.recovered_from:
        alarms.raise_("store_corrupt", f"kept as {store.recovered_from.name}")
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.errors import StoreError, StoreFull
from agent.store.salvage import SEQ_COUNTER, SalvageReport, salvage
from agent.store.schema import StoreTooNew, migrate, refuse_newer

__all__ = ["CONTINUITY_NAME", "DB_NAME", "Continuity", "Job", "Store", "StoreTooNew", "Writer", "delete_ids",
           "get_setting", "insert_rows", "put_setting", "store_error"]

log = logging.getLogger(__name__)

DB_NAME = "agent.db"
BUSY_TIMEOUT_MS = 10_000
# Truncate the WAL back to this size after a checkpoint: a backlog burst
# must not leave a big file behind on a small SD card.
WAL_SIZE_LIMIT = 4 * 2**20
CONTINUITY_NAME = "continuity.json"
CREATED_COUNTER = "store_created_ms"     # wall clock when this database was (re)created
ISSUED_COUNTER = "cmd_max_issued_at"     # the newest issue time of an accepted command (replay high-water)
CLEAN_COUNTER = "clean_stop"             # 1 from a clean close until the next open

SQLITE_FULL = 13


def store_error(exc: BaseException, what: str) -> StoreError:
    """Map a sqlite3/OS error to StoreFull (disk full) or StoreError."""
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == SQLITE_FULL) or "disk is full" in str(exc) \
            or getattr(exc, "errno", None) == 28:
        return StoreFull(f"{what}: disk full ({exc})")
    return StoreError(f"{what}: {exc}")


def get_setting(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM agent_settings WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None


def put_setting(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        if value is None:
            conn.execute("DELETE FROM agent_settings WHERE key = ?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO agent_settings VALUES (?, ?)", (key, value))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Continuity:
    """What must outlive the database: a small JSON file beside it, replaced atomically (0600).

    Keys: ``epoch`` and ``last_seq`` of the journal (``clean``: written by a
    clean close, so ``last_seq`` is exact), ``max_issued_at`` and ``nonces``
    (``{nonce: [issued_at, expires_at]}``) of the replay guard. A file that
    cannot be read counts as absent (logged): it only ever adds protection.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s unreadable, ignored: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def number(self, key: str) -> int:
        value = self.data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def save(self, **changes: Any) -> None:
        """Merge ``changes`` and replace the file durably; raises OSError."""
        data = {**self.data, **changes}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(data, sort_keys=True).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self.data = data


def _make_private(directory: Path) -> None:
    """Directories 0700 and files 0600 under ``directory``, whatever the umask made them.

    Citizen data lives here (sealed, but the journal and its metadata are
    not); the unit's ``UMask=0077`` is not there when the agent runs directly.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for root, dirs, files in os.walk(directory):
        for name, private in [(n, 0o700) for n in dirs] + [(n, 0o600) for n in files]:
            _chmod_private(Path(root, name), private)
    _chmod_private(directory, 0o700)


def _chmod_private(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077 == 0:
        return
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc)


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does: its -wal and -shm take the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _connect(path: Path, synchronous: str, *, refuse_newer_schema: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if refuse_newer_schema:
        # Before journal_mode=WAL, which rewrites the header of a file in another mode:
        # a newer release's file is left byte for byte as it was.
        try:
            refuse_newer(conn)
        except StoreTooNew:
            conn.close()
            raise
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    return conn


class Store:
    """Owner of the database file and its connections.

    ``synchronous`` is FULL on every kiosk; the power-cut test opens a store
    with NORMAL to show that its harness catches the difference.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, *, synchronous: str = "FULL",
                 recovered_from: Path | None = None) -> None:
        self.path = path
        self.conn = conn
        self.synchronous = synchronous
        self.recovered_from = recovered_from
        self.salvage: SalvageReport | None = None      # what came over from the file moved aside
        self.continuity = Continuity(path.parent / CONTINUITY_NAME)
        self.created_ms = 0               # when this database was (re)created (see note_created)
        self.fresh = False                # created by this open (new, emptied or recovered)
        self.checked_at_open = False      # quick_check ran on the start-up path (last stop not clean)
        self.check_problem: str | None = None     # what the background check found
        self.journal_epoch: str | None = None     # set by the journal once it has decided (agent/store/journal.py)
        self._check_thread: threading.Thread | None = None
        self._writer: Writer | None = None
        # Told (on the loop thread) of rows the journal adds to the outbox:
        # ``cb(cls, rows, bytes)``; the outbox keeps its counts from them.
        self.outbox_listeners: list[Callable[[str, int, int], None]] = []

    @classmethod
    def open(cls, directory: Path, *, synchronous: str = "FULL", check: bool = True) -> Store:
        """Open (or create) the store in ``directory``; see the module docstring for the checks."""
        directory = Path(directory)
        _make_private(directory)
        path = directory / DB_NAME
        _create_private(path)
        recovered: Path | None = None
        checked = False
        try:
            conn = _connect(path, synchronous, refuse_newer_schema=True)
            problem = None
            if check and not _stopped_cleanly(conn):
                checked = True
                problem = _check(conn)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _looks_corrupt(exc):
                raise store_error(exc, f"cannot open {path}") from exc
            problem, conn = str(exc), None
        if problem is not None:
            if conn is not None:
                conn.close()
            recovered = _move_aside(path)
            log.error("store %s failed its check (%s); kept as %s, starting a fresh store",
                      path, problem, recovered.name)
            _create_private(path)
            try:
                conn = _connect(path, synchronous)
            except sqlite3.Error as exc:
                raise store_error(exc, f"cannot open {path}") from exc
        assert conn is not None
        try:
            migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(exc, f"cannot bring the schema of {path} up to date") from exc
        except StoreTooNew:
            conn.close()
            raise
        report: SalvageReport | None = None
        if recovered is not None:
            try:
                report = salvage(recovered, conn, directory)
            except sqlite3.Error as exc:       # the fresh store itself failing: say so, keep it empty
                report = SalvageReport(error=str(store_error(exc, "salvage")))
        store = cls(path, conn, synchronous=synchronous, recovered_from=recovered)
        store.salvage = report
        store.checked_at_open = checked
        try:
            store._begin_run()
        except sqlite3.Error as exc:
            store.close(clean=False)
            raise store_error(exc, f"cannot start the store in {path}") from exc
        _make_private(directory)
        return store

    def _begin_run(self) -> None:
        """Clear the clean-stop marker; stamp a (re)created store; take in what outlived the last one."""
        conn, side = self.conn, self.continuity
        now = _now_ms()
        created = self.counter(CREATED_COUNTER)
        # A salvage copies the old stamp: but its nonces may be gone, so a recovered store is new too.
        self.fresh = created == 0 or self.recovered_from is not None
        if self.fresh:
            created = now
        elif now < created:
            # The stamp came from a clock that ran ahead; left as it was it
            # would refuse every command until the clock caught up with it.
            log.warning("store creation time %d is in the future; lowered to now", created)
            created = now
        self.created_ms = created
        nonces = side.data.get("nonces")
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM counters WHERE name = ?", (CLEAN_COUNTER,))
            self._set_counter(CREATED_COUNTER, created)
            high = max(self.counter(ISSUED_COUNTER), side.number("max_issued_at"))
            if high:
                self._set_counter(ISSUED_COUNTER, high)
            if isinstance(nonces, dict):
                conn.executemany("INSERT OR IGNORE INTO nonces (nonce, expires_at) VALUES (?, ?)",
                                 [(str(n), int(v[1])) for n, v in nonces.items()
                                  if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)])

    def _set_counter(self, name: str, value: int) -> None:
        self.conn.execute("INSERT INTO counters(name, value) VALUES (?, ?) "
                          "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    # -- counters (loop thread) ---------------------------------------------------

    def counter(self, name: str) -> int:
        row = self.conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def bump_counter(self, name: str) -> int:
        """Increase ``name`` by one, durably, and return the new value."""
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute(
                    "INSERT INTO counters(name, value) VALUES(?, 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,))
                row = self.conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        except sqlite3.Error as exc:
            raise store_error(exc, f"counter {name}") from exc
        return int(row[0])

    # -- the writer thread ------------------------------------------------------

    @property
    def writer(self) -> Writer:
        """The group-commit thread, started on first use."""
        if self._writer is None:
            self._writer = Writer(self.path, self.synchronous)
        return self._writer

    def reader(self) -> sqlite3.Connection:
        """A new read-only connection (for the outbox pump's reads)."""
        conn = _connect(self.path, self.synchronous)
        conn.execute("PRAGMA query_only=ON")
        return conn

    def integrity_check(self) -> str:
        """The full ``PRAGMA integrity_check``; "ok" when healthy."""
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    def check_in_background(self, on_problem: Callable[[str], Any] | None = None) -> None:
        """``quick_check`` on its own thread and connection, once per open, if start-up skipped it.

        A problem is logged, reported through ``on_problem(text)`` on the
        caller's loop, and keeps the clean-stop marker off: the next start
        checks on its start-up path and moves the file aside.
        """
        if self.checked_at_open or self._check_thread is not None:
            return
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                conn = _connect(self.path, self.synchronous)
                try:
                    problem = _check(conn)
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                problem = str(exc)
            if problem is None:
                log.info("store background check: ok")
                return
            self.check_problem = problem
            log.error("store %s failed its background check (%s); checked again at the next start",
                      self.path, problem)
            if on_problem is not None:
                try:
                    loop.call_soon_threadsafe(on_problem, problem)
                except RuntimeError:
                    pass        # the loop is gone: the next start checks anyway

        self._check_thread = threading.Thread(target=run, name="store-check", daemon=True)
        self._check_thread.start()

    def close(self, *, clean: bool = True) -> None:
        """Close; ``clean`` (and a background check that found nothing) sets the clean-stop marker."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._check_thread is not None:
            self._check_thread.join(60)
        clean = clean and self.check_problem is None
        try:
            if clean:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self._set_counter(CLEAN_COUNTER, 1)
            last_seq = self.counter(SEQ_COUNTER)
        except sqlite3.Error as exc:
            log.warning("clean-stop marker not written: %s", exc)
            clean, last_seq = False, None
        if last_seq is not None and self.continuity.data.get("epoch"):
            try:
                self.continuity.save(last_seq=max(last_seq, self.continuity.number("last_seq")), clean=clean)
            except OSError as exc:
                log.warning("%s not updated: %s", self.continuity.path, exc)
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


def _stopped_cleanly(conn: sqlite3.Connection) -> bool:
    """The clean-stop marker is set (the last close ran); a store without tables has nothing to check."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "counters" not in tables:
        return not tables
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (CLEAN_COUNTER,)).fetchone()
    return bool(row and row[0] == 1)


def _check(conn: sqlite3.Connection) -> str | None:
    rows = conn.execute("PRAGMA quick_check").fetchall()
    result = "; ".join(str(r[0]) for r in rows)
    return None if result == "ok" else result


def _looks_corrupt(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _move_aside(path: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{target}{suffix}"))
    fsync_dir(path.parent)
    return target


def fsync_dir(directory: Path) -> None:
    """Make a rename or create in ``directory`` durable (the one copy of this; the agent's files use it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CHUNKS = (256, 64, 16, 4, 1)


def _chunks(count: int) -> list[tuple[int, int]]:
    """(start, size) pieces of ``count`` in a few fixed sizes, so their statements stay cached."""
    pieces, at = [], 0
    for size in _CHUNKS:
        while count - at >= size:
            pieces.append((at, size))
            at += size
    return pieces


def insert_rows(conn: sqlite3.Connection, head: str, row: str, rows: list[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs (writer thread): ``insert_rows(conn, "INSERT INTO t(a, b) VALUES ", "(?,?)", rows)``.

    One statement per chunk, not one ``executemany`` step per row: every
    step lets go of the GIL, and the writer then waits to get it back from
    the event loop -- per row, which cost more than the rows themselves.
    """
    for at, size in _chunks(len(rows)):
        conn.execute(head + ",".join([row] * size), [value for r in rows[at:at + size] for value in r])


def delete_ids(conn: sqlite3.Connection, table: str, ids: list[int]) -> None:
    """``DELETE FROM table WHERE id IN (...)`` in chunks (see insert_rows for why)."""
    for at, size in _chunks(len(ids)):
        conn.execute(f"DELETE FROM {table} WHERE id IN ({','.join('?' * size)})", ids[at:at + size])


class Job:
    """One unit of work for the writer thread.

    ``durable`` jobs need the batch committed with the store's synchronous
    level (FULL: one fsync); lazy ones may ride a NORMAL commit, which
    reaches disk with the next fsync of the WAL (the next durable commit or
    checkpoint). ``run`` executes inside the batch's transaction and returns
    the job's result; ``committed``/``aborted`` run on the writer thread
    after COMMIT or ROLLBACK (the journal uses them to move its chain head).
    """

    durable = True

    def run(self, conn: sqlite3.Connection) -> Any:
        raise NotImplementedError

    def group_key(self) -> Any:
        """Jobs side by side in a batch with the same non-None key go to ``run_group`` together."""
        return None

    @classmethod
    def run_group(cls, conn: sqlite3.Connection, jobs: list[Any]) -> list[Any]:
        """Run ``jobs`` (same ``group_key``) at once; a raise falls back to ``run`` one by one.

        May override: jobs whose rows go in one multi-row statement
        (``insert_rows``) save the writer a round of statements -- and the GIL
        hand-offs that come with each -- per job. On a raise, ``aborted`` has
        run for each job (newest first).
        """
        return [job.run(conn) for job in jobs]

    def committed(self) -> None:
        pass

    def aborted(self) -> None:
        pass

    def on_loop(self, result: Any) -> None:
        """After a successful commit, on the submitter's event loop (``submit_async`` only)."""


class _Slot:
    """Where an asyncio submitter waits: settled in one loop callback per batch."""

    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.fut = fut


def _settle_all(items: list[tuple[Job, asyncio.Future[Any], bool, Any]]) -> None:
    for job, fut, ok, value in items:
        if ok:
            try:
                job.on_loop(value)        # even if the waiter was cancelled: it is on disk
            except Exception:
                log.exception("store job hook failed")
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class _Call(Job):
    def __init__(self, fn: Callable[[sqlite3.Connection], Any], durable: bool) -> None:
        self.fn = fn
        self.durable = durable

    def run(self, conn: sqlite3.Connection) -> Any:
        return self.fn(conn)


_STOP = object()


def _undo_savepoint(conn: sqlite3.Connection, name: str) -> None:
    """Roll back to ``name`` and drop it; if even that fails, COMMIT will say so."""
    try:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
    except sqlite3.Error:
        pass


def _groups(batch: list[tuple[Job, Any]]) -> list[list[Job]]:
    """Runs of neighbouring jobs with the same group key (order kept; None never groups)."""
    groups: list[list[Job]] = []
    last: Any = None
    for job, _target in batch:
        key = job.group_key()
        if key is not None and groups and key == last:
            groups[-1].append(job)
        else:
            groups.append([job])
        last = key
    return groups


class Writer:
    """Group commit: every job queued while one commit runs shares the next.

    A batch is one ``BEGIN IMMEDIATE`` ... ``COMMIT``; each job runs in its
    own SAVEPOINT, so one failing job fails alone (neighbours with the same
    ``group_key`` share one, and are retried one by one if it fails). If the COMMIT itself
    fails (ENOSPC, I/O error), every job of the batch fails with
    StoreFull/StoreError and nothing of it is on disk; the thread goes on.

    Lazy jobs (delivery marks) wait up to ``lazy_delay`` for company and
    commit with ``synchronous=NORMAL`` when no durable job is in the batch:
    they cost no fsync. Their loss in a power cut only means a message is
    published again, byte for byte the same.

        fut = store.writer.submit(Job())          # concurrent.futures.Future
        result = await asyncio.wrap_future(fut)
    """

    MAX_BATCH = 2000
    # About 1,000 WAL pages (SQLite's own default) at ~4 pages a record.
    CHECKPOINT_EVERY = 250
    BACKSTOP_PAGES = 8000

    def __init__(self, path: Path, synchronous: str, *, lazy_delay: float = 0.2) -> None:
        self.path = path
        self.synchronous = synchronous
        self.lazy_delay = lazy_delay
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lazy: list[tuple[Job, Any]] = []
        self._lazy_since: float | None = None
        self.commits = 0
        self.durable_commits = 0
        self.failed_commits = 0
        self.conn = _connect(path, synchronous)
        # Checkpoints run on their own thread and connection, not inside a
        # commit: a PASSIVE checkpoint does not block the writer, so a record
        # never waits for the database file's fsync. Auto-checkpoint stays as
        # a backstop far above the checkpointer's trigger.
        self.conn.execute(f"PRAGMA wal_autocheckpoint={self.BACKSTOP_PAGES}")
        self._sync_now = synchronous
        self._since_ckpt = 0
        self._ckpt_wanted = threading.Event()
        self._closing = False
        self.checkpoints = 0
        self._ckpt_conn = _connect(path, synchronous)
        self._ckpt_conn.execute("PRAGMA wal_autocheckpoint=0")
        self._ckpt_thread = threading.Thread(target=self._checkpointer, name="store-checkpoint", daemon=True)
        self._ckpt_thread.start()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((job, fut))
        return fut

    def submit_async(self, job: Job) -> asyncio.Future[Any]:
        """Like submit, for the event loop: all of a batch's waiters wake in one loop callback."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((job, _Slot(loop, fut)))
        return fut

    def call(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = True) -> concurrent.futures.Future[Any]:
        """Run ``fn(conn)`` inside the next batch."""
        return self.submit(_Call(fn, durable))

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._closing = True
        self._ckpt_wanted.set()
        self._ckpt_thread.join(timeout)
        for conn in (self.conn, self._ckpt_conn):
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _checkpointer(self) -> None:
        while True:
            self._ckpt_wanted.wait()
            self._ckpt_wanted.clear()
            if self._closing:
                return
            try:
                self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:
                log.warning("checkpoint failed: %s", store_error(exc, "checkpoint"))

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            timeout = None
            if self._lazy_since is not None:
                timeout = max(0.0, self._lazy_since + self.lazy_delay - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            batch: list[tuple[Job, Any]] = []
            while item is not None:
                if item is _STOP:
                    stopping = True
                elif item[0].durable:
                    batch.append(item)
                else:
                    if self._lazy_since is None:
                        self._lazy_since = time.monotonic()
                    self._lazy.append(item)
                if len(batch) + len(self._lazy) >= self.MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            lazy_due = self._lazy_since is not None and (
                stopping or batch or len(self._lazy) >= self.MAX_BATCH
                or time.monotonic() >= self._lazy_since + self.lazy_delay)
            if lazy_due:
                batch = self._lazy + batch
                self._lazy, self._lazy_since = [], None
            if batch:
                self._commit(batch)

    def _set_sync(self, level: str) -> None:
        if level != self._sync_now:
            self.conn.execute(f"PRAGMA synchronous={level}")
            self._sync_now = level

    @staticmethod
    def _settle(batch: list[tuple[Job, Any]], outcomes: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any, bool, Any]]] = {}
        for (job, target), (ok, value) in zip(batch, outcomes):
            if isinstance(target, _Slot):
                by_loop.setdefault(target.loop, []).append((job, target.fut, ok, value))
            elif ok:
                target.set_result(value)
            else:
                target.set_exception(value)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, items)
            except RuntimeError:
                pass        # that loop is closed: nobody is waiting any more

    @staticmethod
    def _run_one(conn: sqlite3.Connection, job: Job) -> tuple[bool, Any]:
        try:
            conn.execute("SAVEPOINT job")
            value = job.run(conn)
            conn.execute("RELEASE job")
            return True, value
        except Exception as exc:  # noqa: BLE001 - one bad job fails alone
            _undo_savepoint(conn, "job")
            job.aborted()
            if isinstance(exc, sqlite3.Error):
                exc = store_error(exc, type(job).__name__)
            return False, exc

    @staticmethod
    def _run_group(conn: sqlite3.Connection, group: list[Job], results: list[tuple[bool, Any]]) -> bool:
        """All of ``group`` at once; False (nothing of it kept) when it must go one by one."""
        try:
            conn.execute("SAVEPOINT grp")
        except sqlite3.Error:
            return False
        try:
            values = type(group[0]).run_group(conn, group)
            conn.execute("RELEASE grp")
        except Exception:  # noqa: BLE001 - retried one by one, so the bad job fails alone
            _undo_savepoint(conn, "grp")
            for job in reversed(group):
                job.aborted()
            return False
        results.extend((True, value) for value in values)
        return True

    def _commit(self, batch: list[tuple[Job, Any]]) -> None:
        durable = any(job.durable for job, _ in batch)
        results: list[tuple[bool, Any]] = []
        conn = self.conn
        try:
            self._set_sync(self.synchronous if durable else "NORMAL")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            err = store_error(exc, "begin")
            self._settle(batch, [(False, err)] * len(batch))
            self.failed_commits += 1
            return
        for group in _groups(batch):
            if len(group) > 1 and self._run_group(conn, group, results):
                continue
            for job in group:
                results.append(self._run_one(conn, job))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            err = store_error(exc, "commit")
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self.failed_commits += 1
            log.error("store commit failed: %s", err)
            # Undo in reverse: each job restores the state it found.
            for (job, _fut), (ok, _value) in reversed(list(zip(batch, results))):
                if ok:
                    job.aborted()
            self._settle(batch, [(False, err)] * len(batch))
            return
        self.commits += 1
        self._since_ckpt += len(batch)
        if self._since_ckpt >= self.CHECKPOINT_EVERY:
            self._since_ckpt = 0
            self._ckpt_wanted.set()
        self.durable_commits += durable
        for (job, _target), (ok, _value) in zip(batch, results):
            if ok:
                job.committed()
        self._settle(batch, results)
