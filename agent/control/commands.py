# SPDX-License-Identifier: Apache-2.0
"""Signed fleet commands: verification, nonces, handlers, results, audit.

Component :class:`CommandService`, built by the daemon with what it uses (the
envelope and its verification policy are in :mod:`agent.wire.signing`; each
command's spec and handler are paired in :data:`COMMANDS`). It subscribes to
``cmd/+`` and answers every message on ``cmd/{name}/result``, echoing the
MQTT 5 correlation data (and, in the payload, as ``correlation`` hex):

    accepted → in_progress (progress 0-100, optional) → succeeded | failed
    or, for anything that fails verification, one ``refused`` with a code.

A refused command is audited (SQLite table ``command_audit`` and a log line,
argument names only), counted in ``health.commands`` and never executed.
The nonce of an accepted command is committed to disk (``synchronous=FULL``)
before its handler runs, so a replay is refused even after ``kill -9``;
with the issue-time high-water and the store's creation time
(:func:`claim_nonce`) it is refused after a lost store or a clock jump too.

    refusal = verify_command(raw, "set-mode", cfg.commands, fleet="dev", kiosk="k-1", now_ms=now)
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agent.config import MODES, Config
from agent.errors import AgentError, NotConnected, StoreError
from agent.store.database import ISSUED_COUNTER, Store, get_setting, put_setting
from agent.store.schema import migrate
from agent.tasks import spawn
from agent.uplink.connection import DEFAULT_MAX_BYTES, Listener, OversizedHandler
from agent.uplink.connection import Handler as MessageHandler
from agent.wire.contract import Topics, encode, envelope, now_ms
from agent.wire.signing import (
    ROLE_COMMANDS,
    SPECS,
    CommandRefused,
    Spec,
    Verified,
    verify_command,
    verify_signed,
)
from hal.device import Peripheral

if TYPE_CHECKING:
    from agent.control.remoteconfig import RemoteConfig

# The envelope policy (CommandRefused, verify_command, SPECS) lives in agent.signing,
# shared with kioskctl; re-exported here for the component's users.
__all__ = ["CommandService", "CommandRefused", "CommandFailed", "Verified", "verify_command", "verify_signed",
           "SPECS", "ResultSender", "LogRing", "redact", "HANDLERS", "COMMANDS", "Command", "RegistryMismatch",
           "build_registry", "Connection", "ResultSink", "Kiosk", "HealthBoard", "AlarmDesk", "TxJournal"]

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75     # restart-agent: non-zero so systemd's Restart= always restarts
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_PENDING_RESULTS = 1000


class CommandFailed(AgentError):
    """A handler could not do what was asked; ``code`` is stable."""

    code = "cmd.failed"

    def __init__(self, code: str, message: str, result: dict[str, Any] | None = None) -> None:
        self.code = code
        self.result = result
        super().__init__(message)


# -- persistence ----------------------------------------------------------------------

AUDIT_KEEP = 10_000


def ensure_schema(conn: sqlite3.Connection) -> None:
    """The tables of nonces, audit and settings (declared in agent/store/schema.py); a no-op once Store.open ran."""
    migrate(conn)


def claim_nonce(store: Store, nonce: str, issued_at: int, expires_at: int, skew_ms: int) -> None:
    """Durably record an accepted command's nonce; CommandRefused if it may be a replay.

    The nonce table alone is not enough: a store lost and re-created has
    none, and pruning by a wall clock that jumped ahead drops nonces of
    commands still valid. So, in order:

    - ``cmd.before_store``: issued before this store was (re)created, so
      its nonce may have been in the store that was lost;
    - ``cmd.too_old``: issued more than the skew before the newest command
      accepted (the high-water ``max_issued_at``; nonces are pruned against
      it, never against the clock);
    - ``cmd.replayed``: the nonce is known.

    The high-water and the nonces it does not yet cover go to the
    continuity file beside the database first, so they outlive it.
    Raises StoreError when neither can be written: without a durable nonce
    we cannot prove the next copy is a replay.
    """
    conn = store.conn
    if issued_at < store.created_ms:
        raise CommandRefused("cmd.before_store", f"issued at {issued_at}, before this kiosk's store was created "
                             f"({store.created_ms}): a replay could not be told apart; send it again")
    high = store.counter(ISSUED_COUNTER)
    if issued_at < high - skew_ms:
        raise CommandRefused("cmd.too_old", f"issued at {issued_at}, more than {skew_ms // 1000}s before the newest "
                             f"command accepted ({high}); send it again")
    if conn.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone():
        raise CommandRefused("cmd.replayed", f"nonce {nonce} was already used")
    high = max(high, issued_at)
    side = store.continuity
    kept = side.data.get("nonces")
    recent = {n: v for n, v in kept.items() if isinstance(v, list) and v and isinstance(v[0], int)
              and v[0] >= high - skew_ms} if isinstance(kept, dict) else {}
    recent[nonce] = [issued_at, expires_at]
    try:
        side.save(max_issued_at=high, nonces=recent, clean=False)
    except OSError as exc:
        raise StoreError(f"{side.path}: {exc}") from exc
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires_at))
            conn.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) "
                         "DO UPDATE SET value = max(value, excluded.value)", (ISSUED_COUNTER, high))
    except sqlite3.IntegrityError:
        raise CommandRefused("cmd.replayed", f"nonce {nonce} was already used") from None


def audit(conn: sqlite3.Connection | None, *, name: str, outcome: str, key_id: str | None = None,
          nonce: str | None = None, correlation: str | None = None, code: str | None = None,
          message: str | None = None, args: Any = None) -> None:
    """One audit row and one log line. ``args`` must already be safe to keep."""
    # Messages may quote unauthenticated input: masked like any log line, so
    # nothing ID-number-like reaches the journal (_peek masks the rest).
    message = redact(message) if message else message
    line = (f"command {outcome}: {name[:64]!r} key={key_id} nonce={nonce} corr={correlation} "
            f"code={code or '-'} {message or ''} args={json.dumps(args, sort_keys=True)[:200]}")
    (log.warning if outcome == "refused" else log.info)(line)
    if conn is None:
        return
    try:
        with conn:
            conn.execute("INSERT INTO command_audit (ts, name, key_id, nonce, correlation, outcome, code, message, "
                         "args) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (now_ms(), name[:64], key_id, nonce, correlation, outcome, code, (message or "")[:300],
                          json.dumps(args, sort_keys=True)[:1000]))
    except sqlite3.Error as exc:
        log.error("audit row not written: %s", exc)


def safe_args(name: str, args: Any) -> Any:
    """What the audit keeps of ``args``: values of loggable ones, names of the others."""
    if not isinstance(args, dict):
        return None
    spec = SPECS.get(name)
    loggable = spec.loggable if spec else frozenset()
    return {str(k)[:40]: (v if k in loggable and isinstance(v, (str, int, bool)) else "<redacted>")
            for k, v in list(args.items())[:20]}


# -- what the component uses: declared here, satisfied by the daemon's parts ---------------

class Connection(Protocol):
    """The uplink as commands and remote configuration use it (:class:`agent.uplink.connection.Uplink`)."""

    @property
    def connected(self) -> bool: ...

    def add_connect_listener(self, cb: Listener) -> None: ...

    def subscribe(self, topic: str, handler: MessageHandler, qos: int = 1, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  on_oversized: OversizedHandler | None = None) -> None: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation_data: bytes | None = None) -> asyncio.Future[int]: ...

    async def wait_connected(self, timeout: float | None = None) -> bool: ...


class ResultSink(Protocol):
    """Where terminal results are queued durably (:class:`agent.store.outbox.Outbox`)."""

    async def enqueue(self, cls: str, topic: str, payload: bytes, retain: bool = False) -> int: ...

    async def wait_drained(self, timeout: float | None = None) -> bool: ...


class Kiosk(Protocol):
    """What a command asks of the daemon (:class:`agent.runtime.daemon.Agent`): live state and lifecycle."""

    exit_code: int

    @property
    def cfg(self) -> Config: ...        # read afresh: ``commands`` reloads in place on SIGHUP

    @property
    def topics(self) -> Topics: ...

    @property
    def mode(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    def set_mode(self, mode: str) -> None: ...

    def birth(self) -> dict[str, Any]: ...

    def session_active(self) -> bool: ...

    def request_restart(self, *, new_boot: bool = False, force: bool = False) -> None: ...

    def request_stop(self) -> None: ...


class HealthBoard(Protocol):
    """Health as commands use it (:class:`agent.runtime.health.HealthReporter`)."""

    sections: dict[str, Callable[[], dict[str, Any]]]

    def snapshot(self, reason: str) -> dict[str, Any]: ...

    def publish_now(self, reason: str) -> dict[str, Any]: ...


class AcknowledgedAlarm(Protocol):
    @property
    def since(self) -> int: ...

    @property
    def device(self) -> str | None: ...


class AlarmDesk(Protocol):
    """Latched alarms as ``ack-alarm`` clears them (:class:`agent.runtime.alarms.Alarms`)."""

    def acknowledge(self, code: str, by: str) -> AcknowledgedAlarm: ...


class TxJournal(Protocol):
    """The journal as ``tx-resend`` uses it (:class:`agent.store.journal.Journal`)."""

    async def resend(self, epoch: str, from_seq: int, to_seq: int) -> dict[str, Any]: ...


SimActions = dict[str, dict[str, Callable[[Any], Any]]]


# -- results -----------------------------------------------------------------------------

class ResultSender:
    """Results on the way up: the outbox for terminal ones when there is one.

    Without an outbox, QoS 1 through the uplink, kept in memory (in order)
    while offline and sent on reconnect.
    """

    def __init__(self, uplink: Connection, outbox: ResultSink | None) -> None:
        self.uplink = uplink
        self.outbox = outbox
        self._pending: list[tuple[str, bytes, bool, bytes | None]] = []
        self._resending: set[asyncio.Future[Any]] = set()

    def attach(self) -> None:
        self.uplink.add_connect_listener(self.flush)

    async def send(self, topic: str, payload: bytes, *, terminal: bool, retain: bool = False,
                   correlation: bytes | None = None, wait: float = 0.0, cls: str = "result") -> None:
        outbox = self.outbox
        if terminal and outbox is not None:
            # The payload carries the correlation (hex); the outbox does not keep the property.
            try:
                await outbox.enqueue(cls, topic, payload, retain=retain)
                return
            except StoreError as exc:
                # Disk full or store broken: better sent once, live, than not at all.
                log.error("result not queued durably (%s); sending it directly", exc)
        uplink = self.uplink
        if not uplink.connected:
            if terminal:
                self._keep((topic, payload, retain, correlation))
            return
        fut = uplink.publish(topic, payload, qos=1, retain=retain, correlation_data=correlation)
        if terminal:
            fut.add_done_callback(lambda f: self._requeue(f, topic, payload, retain, correlation))
        else:
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        if wait:
            try:
                await asyncio.wait_for(asyncio.shield(fut), wait)
            except (TimeoutError, NotConnected):
                pass

    async def drain(self, timeout: float) -> None:
        """Give queued results a chance to leave before the agent stops (they are durable anyway)."""
        if self.outbox is not None:
            await self.outbox.wait_drained(timeout)

    def _requeue(self, fut: asyncio.Future[int], *item: Any) -> None:
        if fut.cancelled() or isinstance(fut.exception(), NotConnected):
            self._keep(item)

    def _keep(self, item: tuple[str, bytes, bool, bytes | None]) -> None:
        # Bounded: a flood of refusals while offline must not grow memory without end.
        if len(self._pending) >= MAX_PENDING_RESULTS:
            del self._pending[0]
        self._pending.append(item)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for topic, payload, retain, correlation in pending:
            spawn(self.send(topic, payload, terminal=True, retain=retain, correlation=correlation),
                  name="result-resend", keep=self._resending)


@dataclasses.dataclass
class Context:
    topic_name: str
    correlation: bytes | None
    nonce: str | None = None
    key_id: str | None = None
    args: Any = None

    @property
    def correlation_hex(self) -> str | None:
        # Capped: the property is echoed whole, the payload copy need not be.
        return self.correlation[:128].hex() if self.correlation is not None else None


# -- the component -----------------------------------------------------------------------

class CommandService:
    """Verifies and runs fleet commands, with the parts of the kiosk they act on."""

    def __init__(self, kiosk: Kiosk, *, store: Store, uplink: Connection, outbox: ResultSink | None,
                 health: HealthBoard | None = None, alarms: AlarmDesk | None = None,
                 devices: Mapping[str, Peripheral] | None = None, simulated: bool = False,
                 sim_actions: SimActions | None = None, remote_config: RemoteConfig | None = None,
                 journal: TxJournal | None = None) -> None:
        self.kiosk = kiosk
        self.journal = journal
        self.store = store
        self.uplink = uplink
        self.health = health
        self.alarms = alarms
        self.devices: Mapping[str, Peripheral] = devices if devices is not None else {}
        self.simulated = simulated      # hal.backend = "sim": a reboot stays inside the simulation
        self.sim_actions = sim_actions
        self.remote_config = remote_config
        self.sender = ResultSender(uplink, outbox)
        self.counters: dict[str, Any] = {"received": 0, "accepted": 0, "succeeded": 0, "failed": 0,
                                         "refused": 0, "refused_by": {}}
        self.last_refused: dict[str, Any] | None = None
        self._exclusive = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        # Commands past their point of no return (a reboot already asked of
        # systemd): a stop lets them finish and report instead of cancelling.
        self._committed: set[asyncio.Task[Any]] = set()
        self._purge: asyncio.TimerHandle | None = None
        self._health_kick: asyncio.TimerHandle | None = None
        self._last_kick = -1e9
        self.sim_session = False   # a simulated citizen session (sim backend only), for tests of deferral

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn

    def prepare(self) -> None:
        """Before the first connect: the birth and the light tower show the persisted mode."""
        ensure_schema(self.conn)
        mode = get_setting(self.conn, "mode")
        if mode in MODES and mode != self.kiosk.mode:
            log.info("service mode %s restored from the store", mode)
            self.kiosk.set_mode(mode)
        self._register_sim_actions()

    async def start(self) -> None:
        LogRing.install()
        if self.health is not None:
            self.health.sections["commands"] = self.health_section
        self.sender.attach()
        self.uplink.subscribe(self.kiosk.topics.cmd("+"), self.on_message, qos=1,
                              max_bytes=self.kiosk.cfg.commands.max_size_bytes, on_oversized=self.on_oversized)
        self._purge_nonces()

    async def stop(self) -> None:
        for handle in (self._purge, self._health_kick):
            if handle is not None:
                handle.cancel()
        for task in list(self._tasks):
            if task not in self._committed:
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
            for task in list(self._tasks):
                task.cancel()
        if self.health is not None:
            self.health.sections.pop("commands", None)

    def commit(self) -> None:
        """Called by a handler at its point of no return: a stop now waits for its result."""
        task = asyncio.current_task()
        if task is not None:
            self._committed.add(task)
            task.add_done_callback(self._committed.discard)

    def republish_birth(self) -> None:
        """The retained birth carries the mode too; keep it true for dashboards."""
        uplink = self.uplink
        if uplink.connected:
            fut = uplink.publish(self.kiosk.topics.state, encode(self.kiosk.birth()), qos=1, retain=True)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def health_section(self) -> dict[str, Any]:
        out = {**self.counters, "refused_by": dict(self.counters["refused_by"])}
        if self.last_refused:
            out["last_refused"] = self.last_refused
        return out

    def session_active(self) -> bool:
        """A citizen is being served (the daemon asks the session engine; or the simulator's hook says so)."""
        return self.sim_session or self.kiosk.session_active()

    # -- receiving --------------------------------------------------------------

    def _received(self, topic: str, correlation: bytes | None) -> Context:
        topic_name = topic.rsplit("/", 1)[-1]
        if not _TOPIC_NAME.match(topic_name) or redact(topic_name) != topic_name:
            # Never echo an arbitrary (or ID-number-like) topic level into a result topic or a log.
            topic_name = "_invalid"
        self.counters["received"] += 1
        return Context(topic_name, correlation)

    def on_oversized(self, over: Any) -> None:
        """Uplink hook: a command over ``commands.max_size_bytes`` was dropped unread; it still gets an answer."""
        ctx = self._received(over.topic, over.correlation_data)
        self._refused(ctx, b"", CommandRefused("cmd.oversized", f"{over.size} bytes, limit {over.limit}"))

    def on_message(self, msg: Any) -> None:
        """Uplink handler. Verification and the nonce commit run here, in order."""
        ctx = self._received(msg.topic, msg.correlation_data)
        cfg = self.kiosk.cfg
        try:
            cmd = verify_command(msg.payload, ctx.topic_name, cfg.commands, fleet=cfg.kiosk.fleet,
                                 kiosk=cfg.kiosk.id, now=now_ms())
            ctx.nonce, ctx.key_id = cmd.doc["nonce"], cmd.operator.id
            ctx.args = safe_args(cmd.name, cmd.args)
            skew_ms = int(cfg.commands.max_clock_skew_s * 1000)
            claim_nonce(self.store, cmd.doc["nonce"], cmd.doc["issued_at"], cmd.doc["expires_at"] + skew_ms,
                        skew_ms)
        except CommandRefused as exc:
            self._refused(ctx, msg.payload, exc)
            return
        except (sqlite3.Error, StoreError) as exc:
            # Without a durable nonce we cannot prove it is not a replay: refuse.
            self._refused(ctx, msg.payload, CommandRefused("cmd.store_unavailable", str(exc)))
            return
        self.counters["accepted"] += 1
        audit(self.conn, name=cmd.name, outcome="accepted", key_id=ctx.key_id, nonce=ctx.nonce,
              correlation=ctx.correlation_hex, args=ctx.args)
        spawn(self._run(cmd, ctx), name=f"cmd-{cmd.name}", keep=self._tasks)

    def _refused(self, ctx: Context, raw: bytes, exc: CommandRefused) -> None:
        self.counters["refused"] += 1
        by = self.counters["refused_by"]
        by[exc.code] = by.get(exc.code, 0) + 1
        self.last_refused = {"code": exc.code, "ts": now_ms()}
        if ctx.nonce is None:
            ctx.nonce, ctx.key_id, ctx.args = _peek(raw, ctx.topic_name)
        audit(self.conn, name=ctx.topic_name, outcome="refused", key_id=ctx.key_id, nonce=ctx.nonce,
              correlation=ctx.correlation_hex, code=exc.code, message=str(exc), args=ctx.args)
        self._spawn(self.result(ctx, "refused", code=exc.code, message=str(exc)))
        self._kick_health()

    def _spawn(self, coro: Awaitable[None]) -> None:
        spawn(coro, name="cmd-result", keep=self._tasks)

    def _kick_health(self) -> None:
        # Refusals reach the fleet within seconds (S11), but a flood of junk
        # must not turn into a flood of health messages: one per 5 s at most.
        if self._health_kick is not None or self.health is None:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._health_kick = None
            self._last_kick = loop.time()
            if self.health is not None:
                self.health.publish_now("change")
        self._health_kick = loop.call_later(max(1.0, self._last_kick + 5.0 - loop.time()), fire)

    # -- running ----------------------------------------------------------------

    async def _run(self, cmd: Verified, ctx: Context) -> None:
        await self.result(ctx, "accepted")
        command = COMMANDS[cmd.name]
        handler = command.handler
        try:
            if command.spec.exclusive:
                if self._exclusive.locked():
                    await self.result(ctx, "in_progress", message="queued behind another command")
                async with self._exclusive:
                    outcome = await handler(self, cmd, ctx)
            else:
                outcome = await handler(self, cmd, ctx)
        except CommandFailed as exc:
            self.counters["failed"] += 1
            await self.result(ctx, "failed", code=exc.code, message=str(exc), result=exc.result)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("command %s crashed", cmd.name)
            self.counters["failed"] += 1
            await self.result(ctx, "failed", code="cmd.internal_error", message=f"{exc.__class__.__name__}")
            return
        if outcome is not None:     # None: the handler sent its own terminal result
            self.counters["succeeded"] += 1
            await self.result(ctx, "succeeded", result=outcome)

    async def result(self, ctx: Context, status: str, *, code: str | None = None, message: str | None = None,
                     progress: int | None = None, result: dict[str, Any] | None = None,
                     wait: float = 0.0) -> None:
        """Publish one result message for ``ctx``; terminal ones are audited."""
        fields: dict[str, Any] = {"name": ctx.topic_name[:64], "status": status}
        # Refusals may quote unauthenticated input: mask it as in the logs.
        message = redact(message) if message else message
        for key, value in (("code", code), ("message", message), ("progress", progress), ("result", result),
                           ("nonce", ctx.nonce), ("key_id", ctx.key_id), ("correlation", ctx.correlation_hex)):
            if value is not None:
                fields[key] = value
        terminal = status in ("succeeded", "failed", "refused")
        if terminal and status != "refused":
            audit(self.conn, name=ctx.topic_name, outcome=status, key_id=ctx.key_id, nonce=ctx.nonce,
                  correlation=ctx.correlation_hex, code=code, message=message, args=ctx.args)
        payload = encode(envelope(self.kiosk.cfg.kiosk.id, **fields))
        await self.sender.send(self.kiosk.topics.cmd_result(ctx.topic_name), payload, terminal=terminal,
                               correlation=ctx.correlation, wait=wait)

    # -- housekeeping -----------------------------------------------------------

    def _purge_nonces(self) -> None:
        conn = self.conn
        if conn is not None:
            try:
                with conn:
                    # Against the high-water, not the clock (which may have jumped ahead): a command
                    # whose nonce goes is older than the newest accepted minus the skew, so cmd.too_old.
                    skew_ms = int(self.kiosk.cfg.commands.max_clock_skew_s * 1000)
                    conn.execute("DELETE FROM nonces WHERE expires_at < "
                                 "(SELECT value FROM counters WHERE name = ?) - ?", (ISSUED_COUNTER, skew_ms))
                    conn.execute("DELETE FROM command_audit WHERE id <= (SELECT MAX(id) FROM command_audit) - ?",
                                 (AUDIT_KEEP,))
            except sqlite3.Error as exc:
                log.warning("nonce purge failed: %s", exc)
        self._purge = asyncio.get_running_loop().call_later(3600, self._purge_nonces)

    def _register_sim_actions(self) -> None:
        if self.sim_actions is None:
            return

        def session(active: bool) -> dict[str, Any]:
            self.sim_session = active
            return {"active": active}

        self.sim_actions["session_hook"] = {"begin": lambda _a: session(True), "end": lambda _a: session(False),
                                              "status": lambda _a: {"active": self.session_active()}}


def reboot_command(simulated: bool = False) -> list[str] | None:
    """``systemctl reboot`` unless ``KIOSK_REBOOT_COMMAND`` says otherwise (tests, other inits).

    None on the sim backend without an override: a simulated kiosk reboots
    inside the simulation, never the host it runs on.
    """
    override = os.environ.get("KIOSK_REBOOT_COMMAND")
    if override is None and simulated:
        return None
    return shlex.split(override or "systemctl reboot")


def _peek(raw: bytes, topic_name: str) -> tuple[str | None, str | None, Any]:
    """Nonce, key id and safe argument names of a refused envelope, for the audit."""
    try:
        doc = json.loads(raw.decode("utf-8")) if len(raw) <= 1_048_576 else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    nonce, key_id = doc.get("nonce"), doc.get("key_id")
    # Unauthenticated: masked, as anything ID-number-like would be in a log line.
    return (redact(nonce[:64]) if isinstance(nonce, str) else None,
            redact(key_id[:64]) if isinstance(key_id, str) else None, safe_args(topic_name, doc.get("args")))

# -- recent log lines, redacted -----------------------------------------------------------

# Runs of 14 or more digits (spaces or dashes between groups allowed), with an
# optional trailing X: resident ID numbers (15 / 18), bank cards (16-19) and
# payment codes (18). Epoch milliseconds (13 digits) stay readable.
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){13,}[Xx]?(?![0-9])")


def redact(line: str) -> str:
    """Mask ID-number-like and payment-code-like digit runs.

    >>> redact("card 11010519491231002X read")   # the standard's example number
    'card [redacted] read'
    """
    return _DIGIT_RUN.sub("[redacted]", line)


class LogRing(logging.Handler):
    """The last ``capacity`` log lines, redacted as they arrive (never held in clear)."""

    _installed: LogRing | None = None

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(redact(self.format(record))[:2000])
        except Exception:  # noqa: BLE001 - a log handler must never raise into the caller
            self.handleError(record)

    @classmethod
    def install(cls) -> LogRing:
        """Attach one ring to the root logger for the life of the process."""
        if cls._installed is None:
            cls._installed = cls()
            logging.getLogger().addHandler(cls._installed)
        return cls._installed

    def tail(self, count: int, max_bytes: int = 200_000) -> list[str]:
        out: list[str] = []
        size = 0
        for line in reversed(list(self.lines)[-count:]):
            size += len(line.encode("utf-8")) + 4
            if size > max_bytes:
                break
            out.append(line)
        return out[::-1]


# -- handlers: (service, command, context) -> result dict, or None if already answered -------

Handler = Callable[[CommandService, Verified, Context], Awaitable[dict[str, Any] | None]]


async def _ping(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    from agent import __version__
    return {"pong": True, "agent": __version__, "python": platform.python_version(), "mode": svc.kiosk.mode,
            "uptime_s": round(time.time() - svc.kiosk.started_at, 1)}


async def _get_health(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    if svc.health is None:
        raise CommandFailed("cmd.unavailable", "health is not running")
    snapshot: dict[str, Any] = svc.health.snapshot("request")
    return snapshot


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


async def _selftest(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    from hal.device import SelftestResult
    loop = asyncio.get_running_loop()
    devices = list(svc.devices.items())
    rows = []
    for i, (name, device) in enumerate(devices):
        await svc.result(ctx, "in_progress", progress=int(100 * i / max(1, len(devices))), message=f"testing {name}")
        try:
            r = await loop.run_in_executor(None, device.selftest)
        except Exception as exc:  # noqa: BLE001 - a driver's failure is that device's failed row
            r = SelftestResult(name, False, f"{exc.__class__.__name__}: {exc}")
        row = {"device": r.device, "passed": bool(r.passed), "reason": r.reason}
        if r.details:
            row["details"] = _jsonable(r.details)
        rows.append(row)
    failed = [str(row["device"]) for row in rows if not row["passed"]]
    result = {"passed": not failed, "devices": rows}
    if failed:
        raise CommandFailed("cmd.selftest_failed", f"{len(failed)} of {len(rows)} failed: {', '.join(failed)}",
                            result)
    return result


async def _set_mode(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    mode, previous = cmd.args["mode"], svc.kiosk.mode
    # Stored first: if the agent dies right after, it comes back in the mode asked for.
    put_setting(svc.conn, "mode", mode)
    svc.kiosk.set_mode(mode)
    svc.republish_birth()
    return {"mode": mode, "previous": previous}


async def _print_test_page(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    printer = svc.devices.get("printer")
    if printer is None:
        raise CommandFailed("cmd.no_printer", "no printer is configured on this kiosk")
    fn = getattr(printer, "print_test_page", None)
    if not callable(fn):
        raise CommandFailed("cmd.unsupported", "the printer driver has no test page")
    await svc.result(ctx, "in_progress", progress=0, message="printing the test page")
    try:
        info = await asyncio.get_running_loop().run_in_executor(None, fn)
    except Exception as exc:  # noqa: BLE001 - whatever the driver raised is the command's result
        raise CommandFailed(str(getattr(exc, "code", "cmd.print_failed")), str(exc)[:300]) from None
    return {"printed": True, **(_jsonable(info) if isinstance(info, dict) else {})}


async def _ack_alarm(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    """Clear a latched alarm (tamper) whose cause has gone; the clear names the key that acknowledged it."""
    alarms = svc.alarms
    if alarms is None:
        raise CommandFailed("cmd.unavailable", "alarms are not running")
    code = cmd.args["code"]
    try:
        alarm = alarms.acknowledge(code, by=cmd.operator.id)
    except AgentError as exc:     # AlarmNotLatched, AlarmCausePresent: their code says which
        raise CommandFailed(exc.code, str(exc)) from None
    return {"code": code, "cleared": True, "since": alarm.since, "device": alarm.device}


async def _collect_logs(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    lines = LogRing.install().tail(int(cmd.args.get("lines", 200)))
    return {"lines": lines, "count": len(lines)}


async def _wait_no_session(svc: CommandService, cmd: Verified, ctx: Context) -> None:
    if cmd.args.get("force") or not svc.session_active():
        return
    await svc.result(ctx, "in_progress", message="deferred: waiting for the citizen session to end")
    log.info("%s deferred until the citizen session ends", cmd.name)
    while svc.session_active():
        await asyncio.sleep(0.25)


async def _reboot(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any] | None:
    await _wait_no_session(svc, cmd, ctx)
    argv = reboot_command(simulated=svc.simulated)
    if argv is None:
        log.warning("simulated reboot on command from %s (hal.backend = sim: the host is not rebooted)",
                    ctx.key_id)
        svc.counters["succeeded"] += 1
        await svc.result(ctx, "succeeded", result={"rebooting": True, "simulated": True}, wait=5.0)
        await svc.sender.drain(5.0)
        svc.kiosk.request_restart(new_boot=True, force=bool(cmd.args.get("force")))
        return None
    log.warning("rebooting on command from %s: %s", ctx.key_id, " ".join(argv))
    svc.commit()        # the SIGTERM the reboot brings must not lose its result
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        raise CommandFailed("cmd.reboot_failed", f"cannot run {argv[0]}: {exc}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        raise CommandFailed("cmd.reboot_failed", f"{argv[0]} did not return within 60 s") from None
    if proc.returncode != 0:
        raise CommandFailed("cmd.reboot_failed", f"{argv[0]} exited {proc.returncode}: "
                            f"{out.decode('utf-8', 'replace')[-200:]}")
    return {"rebooting": True}


async def _restart_agent(svc: CommandService, cmd: Verified, ctx: Context) -> None:
    await _wait_no_session(svc, cmd, ctx)
    svc.counters["succeeded"] += 1
    await svc.result(ctx, "succeeded", result={"restarting": True, "exit_code": EX_TEMPFAIL}, wait=5.0)
    await svc.sender.drain(5.0)
    log.warning("restarting the agent on command from %s", ctx.key_id)
    # A non-zero exit, so systemd restarts it whatever Restart= says.
    svc.kiosk.exit_code = EX_TEMPFAIL
    svc.kiosk.request_stop()


async def _update_config(svc: CommandService, cmd: Verified, ctx: Context) -> None:
    remote = svc.remote_config
    if remote is None:
        raise CommandFailed("cmd.unsupported", "remote configuration is not enabled")
    args = cmd.args
    outcome = await remote.apply(args["config"], args["version"], args.get("confirm_within_s", 60),
                                 source=f"command by {ctx.key_id}", before_reload=lambda out: svc.result(
                                     ctx, "succeeded", result=out, wait=5.0))
    if outcome.get("status") != "pending":
        raise CommandFailed(str(outcome.get("code", "config.refused")), str(outcome.get("message", "")), outcome)
    svc.counters["succeeded"] += 1


async def _firmware_update(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    """hal.coproc.CoprocDevice.update_firmware(image, signature, progress_cb, confirm_s=)."""
    coproc = svc.devices.get("coproc")
    fn = getattr(coproc, "update_firmware", None)
    if not callable(fn):
        raise CommandFailed("cmd.no_coproc", "no co-processor with firmware update on this kiosk")
    try:
        image = base64.b64decode(cmd.args["image"], validate=True)
        signature = base64.b64decode(cmd.args["signature"], validate=True)
    except ValueError:
        raise CommandFailed("firmware.bad_image", "image or signature is not base64") from None
    if hashlib.sha256(image).hexdigest() != cmd.args["sha256"]:
        raise CommandFailed("firmware.checksum_mismatch", "image does not match sha256")
    loop = asyncio.get_running_loop()
    last = [-10]

    def progress(sent: int, total: int) -> None:       # called on the executor thread
        pct = int(100 * sent / max(1, total))
        if pct >= last[0] + 10 or sent >= total:
            last[0] = pct
            loop.call_soon_threadsafe(svc._spawn, svc.result(ctx, "in_progress", progress=min(100, pct),
                                                             message=f"{sent} of {total} bytes"))
    await svc.result(ctx, "in_progress", progress=0, message=f"updating the co-processor ({len(image)} bytes)")
    confirm = cmd.args.get("confirm_s")
    try:
        version = await loop.run_in_executor(None, lambda: fn(image, signature, progress_cb=progress,
                                                              confirm_s=confirm))
    except Exception as exc:  # noqa: BLE001 - the driver's code says what went wrong
        raise CommandFailed(str(getattr(exc, "code", "firmware.update_failed")), str(exc)[:300]) from None
    return {"updated": True, "version": str(version)}


async def _tx_resend(svc: CommandService, cmd: Verified, ctx: Context) -> dict[str, Any]:
    """Queue a range of journal records again: the back office's ledger found a gap (fleet/ledger/gaps.py)."""
    if svc.journal is None:
        raise CommandFailed("cmd.unavailable", "the journal is not running")
    args = cmd.args
    try:
        result = await svc.journal.resend(args["epoch"], args["from_seq"], args["to_seq"])
    except AgentError as exc:      # ResendRefused (tx.epoch_gone, tx.range_gone, ...), StoreError: their code says
        detail = getattr(exc, "detail", None)
        raise CommandFailed(exc.code, str(exc), detail if isinstance(detail, dict) else None) from None
    missing = result.get("missing") or []
    if len(missing) > 100:      # a result stays small; the count says how many more
        result = {**result, "missing": missing[:100], "missing_ranges": len(missing)}
    return result


HANDLERS: dict[str, Handler] = {
    "ping": _ping, "get-health": _get_health, "selftest": _selftest, "set-mode": _set_mode,
    "print-test-page": _print_test_page, "collect-logs": _collect_logs, "ack-alarm": _ack_alarm, "reboot": _reboot,
    "restart-agent": _restart_agent, "update-config": _update_config, "firmware-update": _firmware_update,
    "tx-resend": _tx_resend,
}


# -- the registry: each command's argument spec (shared with kioskctl) and its handler -----

class RegistryMismatch(AgentError):
    """Specs, handlers and roles do not name the same commands."""

    code = "cmd.registry_mismatch"


@dataclasses.dataclass(frozen=True)
class Command:
    spec: Spec
    handler: Handler


def build_registry(specs: Mapping[str, Spec], handlers: Mapping[str, Handler],
                   roles: Mapping[str, frozenset[str]]) -> dict[str, Command]:
    """Pair every spec with its handler; raises RegistryMismatch naming what is unpaired."""
    problems = []
    if missing := sorted(specs.keys() - handlers.keys()):
        problems.append(f"specs without a handler: {', '.join(missing)}")
    if extra := sorted(handlers.keys() - specs.keys()):
        problems.append(f"handlers without a spec: {', '.join(extra)}")
    for role, names in sorted(roles.items()):
        if unknown := sorted(names - specs.keys()):
            problems.append(f"role {role} names unregistered commands: {', '.join(unknown)}")
    if problems:
        raise RegistryMismatch("; ".join(problems))
    return {name: Command(spec, handlers[name]) for name, spec in specs.items()}


# Built at import: a command added to one side only stops the agent from starting, not a fleet message.
COMMANDS: dict[str, Command] = build_registry(SPECS, HANDLERS, ROLE_COMMANDS)
