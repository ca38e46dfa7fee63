# SPDX-License-Identifier: Apache-2.0
"""Desired configuration: signed ``config/desired`` in, ``config/reported`` out.

Component ``agent.remoteconfig:RemoteConfig``. A desired configuration is a
signed envelope (``agent.signing``, kind ``config``, admin keys only) carrying
the whole TOML file and a ``version`` that must increase (anti-rollback; the
retained message is re-delivered on every reconnect, so an equal version is
simply "already in force").

    kioskctl config push k-0001 new.toml --broker mqtt://... --fleet north --key ops.key

Apply is atomic and supervised:

1. validated with ``agent.config.parse_config`` (plus: same kiosk id and
   fleet, same storage dir, at least one admin key left); an invalid one is
   refused and reported, and the running configuration stays;
2. the current file is copied to ``<file>.prev``, the pending apply is
   recorded in the store, the new text is written to ``<file>.new``, fsynced
   and ``os.replace``d over the file; then ``Agent.request_reload()``;
3. if the broker is not connected within ``confirm_within_s`` of the apply
   (across component restarts and even ``kill -9``: the pending record is on
   disk), the previous file is restored, the agent reloads again and the
   version is reported ``rolled_back`` and never tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import tomllib
from pathlib import Path
from typing import Any, Awaitable, Callable

from agent.commands import (
    ResultSender,
    audit,
    ensure_schema,
    get_setting,
    log_task_failure,
    put_setting,
)
from agent.config import parse_config
from agent.contract import encode, envelope, now_ms
from agent.errors import ConfigError
from agent.signing import KIND_CONFIG, CommandRefused, verify_signed

__all__ = ["RemoteConfig"]

log = logging.getLogger(__name__)

_VERSION, _PENDING, _REJECTED, _REPORT = "config_version", "config_pending", "config_rejected", "config_report"


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RemoteConfig:
    """Receives, applies, confirms or rolls back desired configurations."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.sender = ResultSender(agent)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def conn(self) -> sqlite3.Connection:
        assert self.agent.store is not None
        conn: sqlite3.Connection = self.agent.store.conn
        return conn

    @property
    def version(self) -> int:
        return int(get_setting(self.conn, _VERSION) or 0)

    async def start(self) -> None:
        ensure_schema(self.conn)
        self.sender.attach()
        self.agent.uplink.subscribe(self.agent.topics.config_desired, self.on_message, qos=1)
        pending = self._pending()
        if pending is not None:
            self._spawn(self._confirm(pending))
        else:
            await self._publish_report()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_task_failure)

    def _pending(self) -> dict[str, Any] | None:
        raw = get_setting(self.conn, _PENDING)
        return json.loads(raw) if raw else None

    # -- receiving --------------------------------------------------------------

    def on_message(self, msg: Any) -> None:
        if not msg.payload:
            return      # the retained desired configuration was cleared
        cfg = self.agent.cfg
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
        if version == self.version or str(version) == get_setting(self.conn, _REJECTED) \
                or (self._pending() or {}).get("version") == version:
            return      # re-delivered retained message: already handled
        if version < self.version:
            self._spawn(self._report("refused", desired=version, code="config.stale",
                                     message=f"version {version} is older than {self.version} in force"))
            return
        audit(self.conn, name="config/desired", outcome="accepted", key_id=operator.id, nonce=doc["nonce"],
              args={"version": version, "sha256": _sha(doc["config"].encode("utf-8"))})
        self._spawn(self.apply(doc["config"], version, doc["confirm_within_s"], source=f"desired by {operator.id}"))

    # -- applying ---------------------------------------------------------------

    def check(self, text: str) -> Any:
        """Parse and vet ``text``; raise CommandRefused with a config.* code."""
        source = self.agent.cfg.source
        if source is None:
            raise CommandRefused("config.no_file", "the running configuration has no file to replace")
        try:
            new = parse_config(tomllib.loads(text), source=source)
        except tomllib.TOMLDecodeError as exc:
            raise CommandRefused("config.invalid", f"not valid TOML: {exc}") from None
        except ConfigError as exc:
            raise CommandRefused("config.invalid", str(exc)) from None
        old = self.agent.cfg
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
        if version <= self.version:
            stale = f"version {version} is not newer than {self.version} in force"
            await self._report("refused", desired=version, code="config.stale", message=stale)
            return {"status": "refused", "code": "config.stale", "message": stale}
        try:
            new = self.check(text)
        except CommandRefused as exc:
            log.error("desired configuration %s refused (%s): %s", version, exc.code, exc)
            put_setting(self.conn, _REJECTED, str(version))
            await self._report("refused", desired=version, code=exc.code, message=str(exc))
            return {"status": "refused", "code": exc.code, "message": str(exc)}
        path: Path = self.agent.cfg.source
        data = text.encode("utf-8")
        pending = {"version": version, "previous": self.version, "sha256": _sha(data), "at_ms": now_ms(),
                   "confirm_within_s": confirm_within_s, "source": source, "boot_id": self.agent.boot_id}
        try:
            _fsync_write(path.with_name(path.name + ".prev"), path.read_bytes())
            # Recorded before the file changes: a crash from here on still ends
            # in confirmation or roll-back, never in an unsupervised new file.
            put_setting(self.conn, _PENDING, json.dumps(pending))
            tmp = path.with_name(path.name + ".new")
            _fsync_write(tmp, data)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
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
        self.agent.request_reload()
        if self.agent.cfg == new:
            # Applied in place (only hot-reloadable tables changed): the
            # broker connection was not touched, so confirm at once.
            self._spawn(self._confirm(pending))
        # Otherwise the components restart and the new instance confirms.
        return outcome

    async def _confirm(self, pending: dict[str, Any]) -> None:
        path: Path | None = self.agent.cfg.source
        if path is None or not path.exists() or _sha(path.read_bytes()) != pending["sha256"]:
            # Crashed before the file was replaced: nothing to supervise.
            put_setting(self.conn, _PENDING, None)
            await self._publish_report()
            return
        left = pending["at_ms"] / 1000 + pending["confirm_within_s"] - now_ms() / 1000
        if pending.get("boot_id") != self.agent.boot_id:
            # The process died (or the board rebooted) since the apply: the
            # window says nothing about the new file; give it a full one.
            left = pending["confirm_within_s"]
        if await self.agent.uplink.wait_connected(max(0.0, left)):
            put_setting(self.conn, _VERSION, str(pending["version"]))
            put_setting(self.conn, _PENDING, None)
            audit(self.conn, name="config/desired", outcome="succeeded", args={"version": pending["version"]})
            await self._report("applied", desired=pending["version"])
            return
        log.error("no broker connection within %ss of configuration %s: rolling back",
                  pending["confirm_within_s"], pending["version"])
        prev = path.with_name(path.name + ".prev")
        os.replace(prev, path)
        _fsync_dir(path.parent)
        put_setting(self.conn, _REJECTED, str(pending["version"]))
        put_setting(self.conn, _PENDING, None)
        audit(self.conn, name="config/desired", outcome="failed", code="config.rolled_back",
              args={"version": pending["version"]})
        await self._report("rolled_back", desired=pending["version"], code="config.rolled_back",
                           message=f"no broker connection within {pending['confirm_within_s']}s; "
                                   f"version {pending['previous']} restored")
        self.agent.request_reload()

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
        path = self.agent.cfg.source
        try:
            fields["sha256"] = _sha(path.read_bytes()) if path else None
        except OSError:
            fields["sha256"] = None
        payload = encode(envelope(self.agent.cfg.kiosk.id, version=self.version, **fields))
        await self.sender.send(self.agent.topics.config_reported, payload, terminal=True, retain=True,
                               cls="config")
