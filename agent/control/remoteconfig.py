# SPDX-License-Identifier: Apache-2.0
"""Desired configuration: signed ``config/desired`` in, ``config/reported`` out.

Component :class:`RemoteConfig` (built by the daemon with its store, uplink and outbox). A desired configuration is a
signed envelope (``agent.wire.signing``, kind ``config``, admin keys only) carrying
the whole TOML file and a ``version`` that must increase (anti-rollback; the
retained message is re-delivered on every reconnect, so an equal version is
simply "already in force").

    kioskctl config push k-0001 new.toml --broker mqtt://... --fleet north --key ops.key

Apply is atomic and supervised, one at a time (states: idle, pending):

1. validated with ``agent.config.parse_config`` (plus: same kiosk id and
   fleet, same storage dir, at least one admin key left) and proved
   startable by a dry run (``dry_run``: device key, backend, TLS files);
   a failure is refused and reported, and the running configuration stays;
2. only when nothing is pending: the file in force (the last *confirmed*
   one) is copied to ``<file>.prev``, the pending apply is recorded in the
   store, the new text is written to ``<file>.new``, fsynced and
   ``os.replace``d over the file; then ``Agent.request_reload()``. A desired
   version arriving while one is pending is queued (one slot, the newest
   wins) and applied once the pending one is settled; an ``update-config``
   is refused with ``config.busy``;
3. if the broker is not connected within ``confirm_within_s`` of the
   components' start with the new file (across component restarts and even
   ``kill -9``: the pending record is on disk), the confirmed file is
   restored, the agent reloads again and the version is reported
   ``rolled_back``; if the new file cannot even start, ``restore_confirmed``
   (called by the daemon) does the same before the next start. Every
   rejected version is remembered (the last ``REJECTED_KEEP``) and never
   tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import sqlite3
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from agent.config import Config, parse_config, tls_context
from agent.control.commands import (
    Connection,
    ResultSender,
    ResultSink,
    audit,
    ensure_schema,
)
from agent.errors import AgentError, ConfigError
from agent.store.database import Store, fsync_dir, get_setting, put_setting
from agent.tasks import spawn
from agent.wire.contract import Topics, encode, envelope, now_ms
from agent.wire.signing import KIND_CONFIG, CommandRefused, verify_signed

__all__ = ["REJECTED_KEEP", "RemoteConfig", "dry_run", "restore_confirmed"]

log = logging.getLogger(__name__)

_VERSION, _PENDING, _REJECTED, _REPORT = "config_version", "config_pending", "config_rejected", "config_report"
_QUEUED = "config_queued"
REJECTED_KEEP = 256     # rejected versions remembered; bounds the setting's size


def _rejected(conn: sqlite3.Connection) -> list[int]:
    raw = get_setting(conn, _REJECTED)
    if not raw:
        return []
    value = json.loads(raw)
    # Before the list, only the last rejected version was kept (a bare number).
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _reject(conn: sqlite3.Connection, version: int) -> None:
    versions = [v for v in _rejected(conn) if v != version] + [version]
    put_setting(conn, _REJECTED, json.dumps(versions[-REJECTED_KEEP:]))


def dry_run(cfg: Config, load_key: Callable[[Path], object]) -> None:
    """Prove ``cfg`` can start without starting it; CommandRefused ``config.cannot_start`` if not.

    Opens what a start opens first and cannot be fixed remotely once the
    kiosk is off the broker: the device key (with ``load_key``, the
    daemon's :func:`agent.runtime.keys.load_private`), the HAL backend and
    the TLS files. Nothing is created and no device is claimed.
    """
    from hal.backend import select_backend
    from hal.exc import HalError

    if cfg.keys.signing_key is not None:
        try:
            load_key(Path(cfg.keys.signing_key))
        except AgentError as exc:
            raise CommandRefused("config.cannot_start", f"keys.signing_key: {exc}") from None
    if cfg.mqtt.tls_enabled:
        try:
            tls_context(cfg.mqtt)       # what the uplink loads at every connect
        except ConfigError as exc:
            raise CommandRefused("config.cannot_start", str(exc)) from None
    try:
        backend = select_backend(cfg.hal.backend)
        if not backend.simulated:
            if cfg.devices.gpio.enabled:
                backend.pin_factory()
            if cfg.devices.camera.enabled and importlib.util.find_spec("picamera2") is None:
                raise CommandRefused("config.cannot_start", "hal.backend: picamera2 is not installed "
                                     "(devices.camera needs it on the real backend)")
    except HalError as exc:
        raise CommandRefused("config.cannot_start", f"hal.backend = {cfg.hal.backend!r}: {exc}") from None
    # Serial device nodes are not checked: an unplugged device is reported
    # offline and picked up when it returns; it does not stop a start.


def restore_confirmed(cfg: Config, reason: str) -> bool:
    """After a failed start: if a pending apply installed this file, put the confirmed one back.

    Called by the daemon before it gives up, so a configuration that cannot
    start is rolled back by the next start instead of crash-looping. True
    if the confirmed file was restored (the caller reloads and starts again).
    """
    from agent.store.database import DB_NAME

    path, db = cfg.source, Path(cfg.storage.dir) / DB_NAME
    if path is None or not db.exists():
        return False
    # A plain connection, not Store.open: the store may be what failed, and
    # nothing here may check, salvage or recreate it.
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        raw = get_setting(conn, _PENDING)
        if not raw:
            return False
        pending = json.loads(raw)
        prev = path.with_name(path.name + ".prev")
        if not path.exists() or _sha(path.read_bytes()) != pending["sha256"] or not prev.exists():
            return False    # the failure is not the pending file's doing
        _restore(path, prev, pending)
        _reject(conn, pending["version"])
        put_setting(conn, _PENDING, None)
        message = f"cannot start: {reason}; version {pending['previous']} restored"
        audit(conn, name="config/desired", outcome="failed", code="config.start_failed", message=message,
              args={"version": pending["version"]})
        put_setting(conn, _REPORT, json.dumps({"status": "rolled_back", "desired_version": pending["version"],
                                               "code": "config.start_failed", "message": message[:500]}))
        log.error("configuration %s %s", pending["version"], message)
        return True
    except (sqlite3.Error, OSError, ValueError, KeyError) as exc:
        log.error("cannot roll back to the confirmed configuration: %s", exc)
        return False
    finally:
        conn.close()


def _restore(path: Path, prev: Path, pending: dict[str, Any]) -> None:
    """Put the confirmed copy back over ``path``, keeping the copy (it is still the confirmed file)."""
    data = prev.read_bytes()
    if pending.get("previous_sha256") not in (None, _sha(data)):
        log.error("%s is not the file confirmed before version %s; restoring it anyway", prev, pending["version"])
    tmp = path.with_name(path.name + ".new")
    _fsync_write(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ConfigHost(Protocol):
    """What remote configuration asks of the daemon (:class:`agent.runtime.daemon.Agent`)."""

    @property
    def cfg(self) -> Config: ...        # the file in force, read afresh (a reload replaces it)

    @property
    def topics(self) -> Topics: ...

    @property
    def boot_id(self) -> str: ...

    @property
    def components_started_ms(self) -> int: ...

    @property
    def restart_pending(self) -> bool: ...

    def request_reload(self) -> None: ...


class RemoteConfig:
    """Receives, applies, confirms or rolls back desired configurations."""

    def __init__(self, host: ConfigHost, *, store: Store, uplink: Connection, outbox: ResultSink | None,
                 load_key: Callable[[Path], object]) -> None:
        self.host = host
        self.load_key = load_key      # reads the device key as a start would (a layer up, in runtime)
        self.store = store
        self.uplink = uplink
        self.sender = ResultSender(uplink, outbox)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._applying: int | None = None   # spawned, its pending record not yet written

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn

    @property
    def version(self) -> int:
        return int(get_setting(self.conn, _VERSION) or 0)

    async def start(self) -> None:
        ensure_schema(self.conn)
        self.sender.attach()
        self.uplink.subscribe(self.host.topics.config_desired, self.on_message, qos=1,
                              max_bytes=self.host.cfg.commands.max_size_bytes, on_oversized=self.on_oversized)
        pending = self._pending()
        if pending is not None:
            self._spawn(self._confirm(pending))
        else:
            await self._publish_report()
            self._apply_queued()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        spawn(coro, name="remote-config", keep=self._tasks)

    def _pending(self) -> dict[str, Any] | None:
        raw = get_setting(self.conn, _PENDING)
        return json.loads(raw) if raw else None

    # -- receiving --------------------------------------------------------------

    def on_oversized(self, over: Any) -> None:
        """Uplink hook: a desired configuration over ``commands.max_size_bytes`` was dropped unread."""
        message = f"{over.size} bytes, limit {over.limit}"
        audit(self.conn, name="config/desired", outcome="refused", code="cmd.oversized", message=message)
        self._spawn(self._report("refused", code="cmd.oversized", message=message))

    def on_message(self, msg: Any) -> None:
        if not msg.payload:
            return      # the retained desired configuration was cleared
        cfg = self.host.cfg
        try:
            doc, operator = verify_signed(msg.payload, KIND_CONFIG, cfg.commands, fleet=cfg.kiosk.fleet,
                                          kiosk=cfg.kiosk.id, now=now_ms(), required={
                                              "version": lambda v: isinstance(v, int) and not isinstance(v, bool)
                                              and 1 <= v < 2**53,
                                              "config": lambda v: isinstance(v, str),
                                              "confirm_within_s": lambda v: isinstance(v, int)
                                              and not isinstance(v, bool) and 1 <= v <= 3600})
            if operator.role != "admin":
                raise CommandRefused("cmd.forbidden", f"key {operator.id!r} is not an admin key")
        except CommandRefused as exc:
            audit(self.conn, name="config/desired", outcome="refused", code=exc.code, message=str(exc))
            self._spawn(self._report("refused", code=exc.code, message=str(exc)))
            return
        version = doc["version"]
        pending, queued = self._pending(), self._queued()
        if version in (self.version, self._applying, (pending or {}).get("version"), (queued or {}).get("version")):
            return      # re-delivered retained message: already handled
        if version in _rejected(self.conn):
            log.info("desired configuration %s was rejected before; not applied again", version)
            return
        if version < self.version:
            self._spawn(self._report("refused", desired=version, code="config.stale",
                                     message=f"version {version} is older than {self.version} in force"))
            return
        text, source = doc["config"], f"desired by {operator.id}"
        audit(self.conn, name="config/desired", outcome="accepted", key_id=operator.id, nonce=doc["nonce"],
              args={"version": version, "sha256": _sha(text.encode("utf-8"))})
        if pending is not None:
            # Never stacked: .prev must stay the confirmed file and the pending
            # record the one being supervised.
            put_setting(self.conn, _QUEUED, json.dumps({"version": version, "config": text, "source": source,
                                                        "confirm_within_s": doc["confirm_within_s"]}))
            log.warning("desired configuration %s queued until version %s is confirmed or rolled back",
                        version, pending["version"])
            self._spawn(self._report("queued", desired=version,
                                     message=f"waiting for version {pending['version']} to be confirmed"))
            return
        if self._adopt_if_in_force(text, version):
            return
        self._start_apply(text, version, doc["confirm_within_s"], source)

    def _start_apply(self, text: str, version: int, confirm_within_s: int, source: str) -> None:
        self._applying = version
        task = self.apply(text, version, confirm_within_s, source=source)
        self._spawn(task)

    def _queued(self) -> dict[str, Any] | None:
        raw = get_setting(self.conn, _QUEUED)
        return json.loads(raw) if raw else None

    def _apply_queued(self) -> None:
        """Nothing pending any more: the queued desired version, if still worth applying, goes now."""
        queued = self._queued()
        if queued is None or self._pending() is not None:
            return
        put_setting(self.conn, _QUEUED, None)
        version = queued["version"]
        if version <= self.version or version in _rejected(self.conn):
            return
        if not self._adopt_if_in_force(queued["config"], version):
            self._start_apply(queued["config"], version, queued["confirm_within_s"], queued["source"])

    def _adopt_if_in_force(self, text: str, version: int) -> bool:
        """The file in force already is ``text`` (e.g. the store was lost and recreated): adopt its version."""
        path = self.host.cfg.source
        try:
            same = path is not None and _sha(path.read_bytes()) == _sha(text.encode("utf-8"))
        except OSError:
            return False
        if not same:
            return False
        log.warning("desired configuration %s is the file already in force: adopted without reapplying", version)
        put_setting(self.conn, _VERSION, str(version))
        self._spawn(self._report("applied", desired=version, message="already in force (same SHA-256)"))
        return True

    # -- applying ---------------------------------------------------------------

    def check(self, text: str) -> Any:
        """Parse and vet ``text``; raise CommandRefused with a config.* code."""
        source = self.host.cfg.source
        if source is None:
            raise CommandRefused("config.no_file", "the running configuration has no file to replace")
        try:
            new = parse_config(tomllib.loads(text), source=source)
        except tomllib.TOMLDecodeError as exc:
            raise CommandRefused("config.invalid", f"not valid TOML: {exc}") from None
        except ConfigError as exc:
            raise CommandRefused("config.invalid", str(exc)) from None
        dry_run(new, self.load_key)
        old = self.host.cfg
        if (new.kiosk.id, new.kiosk.fleet) != (old.kiosk.id, old.kiosk.fleet):
            raise CommandRefused("config.identity_change", "kiosk.id and kiosk.fleet cannot change remotely")
        if new.storage.dir != old.storage.dir:
            raise CommandRefused("config.storage_change", "storage.dir cannot change remotely")
        if not any(op.role == "admin" for op in new.commands.operators):
            raise CommandRefused("config.lockout", "it would leave no admin key: the fleet could not fix it")
        return new

    async def apply(self, text: str, version: int, confirm_within_s: int, *, source: str,
                    before_reload: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
        """Validate and install ``text`` as configuration ``version``; returns the outcome."""
        if self._applying == version:
            self._applying = None
        pending = self._pending()
        if pending is not None:
            busy = f"version {pending['version']} is pending confirmation; send this again once it is settled"
            return {"status": "refused", "code": "config.busy", "message": busy}
        if version in _rejected(self.conn):
            again = f"version {version} was rejected before and is never applied again"
            await self._report("refused", desired=version, code="config.rejected", message=again)
            return {"status": "refused", "code": "config.rejected", "message": again}
        if version <= self.version:
            stale = f"version {version} is not newer than {self.version} in force"
            await self._report("refused", desired=version, code="config.stale", message=stale)
            return {"status": "refused", "code": "config.stale", "message": stale}
        try:
            new = self.check(text)
        except CommandRefused as exc:
            log.error("desired configuration %s refused (%s): %s", version, exc.code, exc)
            _reject(self.conn, version)
            await self._report("refused", desired=version, code=exc.code, message=str(exc))
            return {"status": "refused", "code": exc.code, "message": str(exc)}
        path = self.host.cfg.source
        assert path is not None        # check() refuses a running configuration without a file
        data = text.encode("utf-8")
        try:
            confirmed = path.read_bytes()
            pending = {"version": version, "previous": self.version, "sha256": _sha(data), "at_ms": now_ms(),
                       "confirm_within_s": confirm_within_s, "source": source, "boot_id": self.host.boot_id,
                       "previous_sha256": _sha(confirmed)}
            # Nothing is pending (checked above), so the file in force is the
            # confirmed one: .prev is only ever a confirmed file.
            _fsync_write(path.with_name(path.name + ".prev"), confirmed)
            # Recorded before the file changes: a crash from here on still ends
            # in confirmation or roll-back, never in an unsupervised new file.
            put_setting(self.conn, _PENDING, json.dumps(pending))
            tmp = path.with_name(path.name + ".new")
            _fsync_write(tmp, data)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            # e.g. ProtectSystem=strict without the config directory in ReadWritePaths.
            put_setting(self.conn, _PENDING, None)
            message = f"cannot write {path.parent}: {exc.strerror or exc}"
            log.error("desired configuration %s not applied: %s", version, message)
            await self._report("refused", desired=version, code="config.write_failed", message=message)
            return {"status": "refused", "code": "config.write_failed", "message": message}
        log.warning("configuration version %s installed (%s); confirming within %ss", version, source,
                    confirm_within_s)
        outcome: dict[str, Any] = {"status": "pending", "version": version, "confirm_within_s": confirm_within_s}
        await self._report("pending", desired=version, message=f"applied; confirming within {confirm_within_s}s")
        if before_reload is not None:
            await before_reload(outcome)
        self.host.request_reload()
        if self.host.cfg == new:
            # Applied in place (only hot-reloadable tables changed): the
            # broker connection was not touched, so confirm at once.
            self._spawn(self._confirm(pending))
        # Otherwise the components restart and the new instance confirms.
        return outcome

    async def _confirm(self, pending: dict[str, Any]) -> None:
        path: Path | None = self.host.cfg.source
        if path is None or not path.exists() or _sha(path.read_bytes()) != pending["sha256"]:
            # Crashed before the file was replaced: nothing to supervise.
            put_setting(self.conn, _PENDING, None)
            await self._publish_report()
            self._apply_queued()
            return
        # The window runs from the start of the components that use the new
        # file: a restart deferred by a citizen session does not eat it.
        started_ms = max(pending["at_ms"], self.host.components_started_ms)
        left = started_ms / 1000 + pending["confirm_within_s"] - now_ms() / 1000
        if pending.get("boot_id") != self.host.boot_id:
            # The process died (or the board rebooted) since the apply: the
            # window says nothing about the new file; give it a full one.
            left = pending["confirm_within_s"]
        if await self.uplink.wait_connected(max(0.0, left)):
            put_setting(self.conn, _VERSION, str(pending["version"]))
            put_setting(self.conn, _PENDING, None)
            audit(self.conn, name="config/desired", outcome="succeeded", args={"version": pending["version"]})
            await self._report("applied", desired=pending["version"])
            self._after_settled()
            return
        log.error("no broker connection within %ss of configuration %s: rolling back",
                  pending["confirm_within_s"], pending["version"])
        _restore(path, path.with_name(path.name + ".prev"), pending)
        _reject(self.conn, pending["version"])
        put_setting(self.conn, _PENDING, None)
        audit(self.conn, name="config/desired", outcome="failed", code="config.rolled_back",
              args={"version": pending["version"]})
        await self._report("rolled_back", desired=pending["version"], code="config.rolled_back",
                           message=f"no broker connection within {pending['confirm_within_s']}s; "
                                   f"version {pending['previous']} restored")
        self.host.request_reload()
        self._after_settled()

    def _after_settled(self) -> None:
        # Components about to restart: the next instance's start() takes the queue.
        if not self.host.restart_pending:
            self._apply_queued()

    # -- reporting --------------------------------------------------------------

    async def _report(self, status: str, *, desired: int | None = None, code: str | None = None,
                      message: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status}
        for key, value in (("desired_version", desired), ("code", code), ("message", message)):
            if value is not None:
                fields[key] = value
        put_setting(self.conn, _REPORT, json.dumps(fields))
        await self._publish_report()

    async def _publish_report(self) -> None:
        """The stored last outcome, with the version and file hash in force now."""
        fields = json.loads(get_setting(self.conn, _REPORT) or '{"status": "in_force"}')
        path = self.host.cfg.source
        try:
            fields["sha256"] = _sha(path.read_bytes()) if path else None
        except OSError:
            fields["sha256"] = None
        payload = encode(envelope(self.host.cfg.kiosk.id, version=self.version, **fields))
        await self.sender.send(self.host.topics.config_reported, payload, terminal=True, retain=True,
                               cls="config")
