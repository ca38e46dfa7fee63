# SPDX-License-Identifier: Apache-2.0
"""The daemon: components started in order, stopped in reverse, one event loop.

    agent = Agent(load_config(path))
    exit_code = asyncio.run(agent.run())

Signals: SIGTERM/SIGINT publish the offline state, close the store and exit
0 within 5 s; SIGHUP reloads the configuration (a broken file is refused
and the running one stays; settings that cannot change in place restart
the components in-process, after the citizen session if one is active).
A start that fails on a configuration a remote apply just installed
restores the confirmed file and starts again (``remoteconfig.restore_confirmed``).
Under systemd: ``READY=1`` once every component
is up (the broker need not be reachable: the kiosk serves offline),
``STATUS=`` lines, ``WATCHDOG=1`` from the loop itself so a hung loop is
caught, ``STOPPING=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agent import __version__
from agent.config import Config, load_config
from agent.control.commands import CommandService
from agent.control.remoteconfig import RemoteConfig
from agent.errors import AgentError, ConfigError, StoreError
from agent.localapi.component import build_local_api
from agent.localapi.server import LocalApiServer
from agent.runtime.alarms import Alarms
from agent.runtime.health import HealthReporter, certificate_alarm, system_alarms, system_snapshot
from agent.runtime.keys import load_or_create, load_private
from agent.runtime.memory import one_malloc_arena
from agent.runtime.peripherals import Peripherals
from agent.runtime.sdnotify import notify, watchdog_interval
from agent.sessions.engine import SessionEngine
from agent.sessions.sessionio import DeviceIO
from agent.sim.simcontrol import SimControl, socket_path
from agent.store.database import Store
from agent.store.journal import Journal, synthetic_load
from agent.store.outbox import Outbox
from agent.tasks import spawn
from agent.uplink.connection import Uplink
from agent.wire.contract import CONTRACT_VERSION, TX_ACK_MAX_BYTES, Topics, encode, envelope, now_ms
from hal.device import DeviceEvent
from hal.exc import HalError

__all__ = ["Agent", "HOT_RELOADABLE"]

log = logging.getLogger(__name__)

SYSTEM = "system"          # owner of the board's own alarms (disk, temperature, supply)
OUTBOX = "outbox"          # owner of outbox_backlog, disk_low (outbox watermark), publish_refused
SYSTEM_CHECK_S = 60.0
JOURNAL_PRUNE_S = 3600.0
STOP_DRAIN_S = 2.0

# Tables whose change applies in place on SIGHUP; any other change restarts
# the components in-process (the process, its PID and its watchdog stay).
# ``commands`` is read afresh for every message, so it needs no restart.
HOT_RELOADABLE = ("health", "logging", "sim", "commands")
SESSION_POLL_S = 0.25


class Companion(Protocol):
    """Runs beside the components while they run (the simulated citizens of ``sim.sessions_per_minute``)."""

    async def stop(self) -> None: ...


# Called once the components are up, with the agent and its session engine: returns a
# started companion, or None when it has nothing to do. Given by the layer above
# (``kiosk-agent run`` passes agent.sim.simulate.start_trickle), so runtime imports no sim.
CompanionFactory = Callable[["Agent", SessionEngine], "Companion | None"]


class Agent:
    """One kiosk agent. ``run()`` returns the process exit code."""

    def __init__(self, cfg: Config, *, companions: Sequence[CompanionFactory] = ()) -> None:
        self.cfg = cfg
        self.companions = tuple(companions)
        self.boot_id = uuid.uuid4().hex
        self.mode = cfg.kiosk.initial_service_mode
        self.topics = Topics(cfg.kiosk.fleet, cfg.kiosk.id)
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._reload: Config | None = None
        self._reload_requested = asyncio.Event()
        self.store: Store | None = None
        self.uplink: Uplink | None = None
        self.peripherals: Peripherals | None = None
        self.alarms: Alarms | None = None
        self.health: HealthReporter | None = None
        self.simcontrol: SimControl | None = None
        self._bd_seq = 0
        self.journal: Journal | None = None
        self.outbox: Outbox | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        # The components started after the core, each built with what it uses
        # (see _start_components); None until started.
        self.commands: CommandService | None = None
        self.remote_config: RemoteConfig | None = None
        self.session_engine: SessionEngine | None = None
        self.local_api: LocalApiServer | None = None
        # Called with every DeviceEvent on the loop (the session engine is one).
        self.event_listeners: list[Callable[[DeviceEvent], None]] = []
        self._background: set[asyncio.Future[Any]] = set()
        self.exit_code = 0   # restart-agent sets 75 so systemd restarts the service
        self._system_timer: asyncio.TimerHandle | None = None
        self.components_started_ms = 0
        self._new_boot = False          # a simulated reboot: the next start gets a new boot id
        self._restart_wanted = False    # request_restart: restart even if the file needs none
        self._deferred: asyncio.Future[None] | None = None

    # -- top level ------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._start_watchdog()
        retried_damage = False
        try:
            while True:
                serving = False
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        self.components_started_ms = now_ms()
                        # Cleared before the components start, not when serving begins: a restart
                        # asked for while they start (the store's background check, once connected)
                        # must not be lost.
                        self._reload_requested.clear()
                        await self._start_components(stack)
                        serving = True
                        notify("READY=1", f"STATUS=serving as {self.cfg.kiosk.id}")
                        await self._serve_until_stop_or_restart()
                        if self._stop.is_set():
                            notify("STOPPING=1", "STATUS=stopping")
                except (AgentError, HalError, OSError) as exc:
                    if serving or not self._restore_confirmed_config(exc):
                        raise
                    continue
                except sqlite3.DatabaseError as exc:
                    # Damage the start-up path did not check for (the last stop was clean). The
                    # store was closed without its clean-stop marker, so opening it again checks
                    # it, sets it aside and salvages it.
                    if serving or retried_damage:
                        raise
                    retried_damage = True
                    log.error("store damaged (%s); starting again with a full check", exc)
                    continue
                if self._stop.is_set():
                    return self.exit_code
                log.info("restarting components with the reloaded configuration")
                if self._new_boot:
                    self.boot_id, self._new_boot = uuid.uuid4().hex, False
                self._restart_wanted = False
                if self._reload is not None:
                    self._apply_config(self._reload)
                self._reload = None
        finally:
            if self._deferred is not None:
                self._deferred.cancel()
            if self._watchdog is not None:
                self._watchdog.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        log.info("stop requested")
        self._stop.set()
        self._reload_requested.set()

    def _restore_confirmed_config(self, exc: BaseException) -> bool:
        """A start failed: if a remote apply put this file here, go back to the confirmed one."""
        from agent.control.remoteconfig import restore_confirmed

        code = getattr(exc, "code", exc.__class__.__name__)
        log.error("start failed (%s): %s", code, exc)
        if self.cfg.source is None or not restore_confirmed(self.cfg, f"{code}: {exc}"):
            return False
        try:
            restored = load_config(self.cfg.source)
        except ConfigError as err:
            log.error("the confirmed configuration no longer loads: %s", err)
            return False
        self._apply_config(restored)
        self._reload = None
        notify("STATUS=configuration rolled back after a failed start")
        return True

    @property
    def restart_pending(self) -> bool:
        """Components are about to restart (possibly deferred until a session ends)."""
        return self._reload is not None

    def session_active(self) -> bool:
        """A citizen is being served (or the simulator's session_hook says so)."""
        engine, commands = self.session_engine, self.commands
        return (engine is not None and engine.session is not None) \
            or (commands is not None and commands.sim_session)

    def request_restart(self, *, new_boot: bool = False, force: bool = False) -> None:
        """Restart the components in-process with the configuration in force (a simulated reboot)."""
        self._new_boot = self._new_boot or new_boot
        self._restart_wanted = True
        self._schedule_restart(self._reload or self.cfg, force=force)

    def _schedule_restart(self, new: Config, *, force: bool = False) -> None:
        self._reload = new
        if force or not self.session_active():
            self._reload_requested.set()
            return
        # A restart ends the citizen's session with "shutdown": wait for it to end,
        # and start no new one meanwhile, or a busy kiosk would never restart.
        log.warning("component restart deferred until the citizen session ends")
        notify("STATUS=restart deferred until the citizen session ends")
        if self.session_engine is not None:
            self.session_engine.hold("restarting after a configuration change")
        if self._deferred is None or self._deferred.done():
            self._deferred = spawn(self._restart_after_session(), name="deferred-restart", keep=self._background)

    async def _restart_after_session(self) -> None:
        while self.session_active() and not self._stop.is_set():
            await asyncio.sleep(SESSION_POLL_S)
        log.info("citizen session over: restarting the components")
        self._reload_requested.set()

    def request_reload(self) -> None:
        source = self.cfg.source
        if source is None:
            log.error("reload requested but the configuration has no file")
            return
        try:
            new = load_config(source)
        except ConfigError as exc:
            log.error("reload refused, configuration unchanged: %s", exc)
            notify(f"STATUS=reload refused: {exc}")
            return
        changed = [name for name in ("kiosk", "mqtt", "storage", "hal", "health", "keys", "devices",
                                     "sim", "logging", "commands", "evidence", "sessions", "services", "local_api")
                   if getattr(new, name) != getattr(self.cfg, name)]
        log.info("configuration reloaded; changed: %s", ", ".join(changed) or "nothing")
        if all(name in HOT_RELOADABLE for name in changed):
            self._apply_config(new)
            if self._restart_wanted:
                self._reload = new      # still restarting (a simulated reboot), with this file
            elif self._reload is not None:
                # A deferred restart for an earlier file is moot: this one needs none.
                self._reload = None
                if self._deferred is not None:
                    self._deferred.cancel()
                if self.session_engine is not None:
                    self.session_engine.hold(None)
            return
        self._schedule_restart(new)

    def _apply_config(self, new: Config) -> None:
        self.cfg = new
        self.topics = Topics(new.kiosk.fleet, new.kiosk.id)
        logging.getLogger().setLevel(new.logging.level)
        if self.health is not None:
            self.health.set_interval(new.health.interval_s)

    async def _serve_until_stop_or_restart(self) -> None:
        if self._stop.is_set():
            return
        await self._reload_requested.wait()

    # -- components -----------------------------------------------------------

    async def _start_components(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.cfg
        self.store = Store.open(cfg.storage.dir)
        stack.push(self._close_store)

        self.alarms = Alarms(cfg.kiosk.id, self.topics, self._send_reliable, on_change=self._health_changed,
                             conn=self.store.conn)
        self.peripherals = Peripherals(cfg, on_event=self._on_device_event)
        self.peripherals.build()
        self.peripherals.start()
        stack.callback(self.peripherals.stop)
        self.peripherals.show_mode(self.mode)
        if self.peripherals.backend.simulated:
            # Listening before the first birth: whoever sees the kiosk online
            # can already drive its simulators.
            self.simcontrol = SimControl(socket_path(cfg.storage.dir), self.peripherals.sim_actions())
            await self.simcontrol.start()
            stack.push_async_callback(self.simcontrol.stop)

        self.health = HealthReporter(cfg.kiosk.id, cfg.storage.dir, cfg.health.interval_s, self._send_health,
                                     self.peripherals.statuses, self.alarms.codes, lambda: self.mode)
        self.health.agent_info = self._agent_health
        # Dropped when the components stop: a reload applied before the next start
        # (_apply_config → set_interval) must not re-arm a stopped reporter, whose
        # sections read the parts just closed.
        stack.callback(self._drop_health)

        self.uplink = Uplink(cfg.mqtt, will=self._next_will)
        self.uplink.add_connect_listener(self._on_connected)
        key = load_or_create(cfg.keys.signing_key, cfg.storage.dir, production=cfg.kiosk.mode == "production")
        self.journal = Journal(self.store, key, cfg.kiosk.id, fleet=cfg.kiosk.fleet,
                               ack_keys=cfg.evidence.ack_public_keys,
                               accept_unsigned_acks=cfg.kiosk.mode != "production")
        self.outbox = Outbox(self.store, self.uplink, max_inflight=cfg.mqtt.max_inflight,
                             max_bytes=cfg.storage.outbox_max_mb * 2**20,
                             min_free_bytes=cfg.storage.min_free_mb * 2**20, on_alarm=self._outbox_alarm)
        journal, outbox = self.journal, self.outbox
        self.uplink.subscribe(self.topics.tx_ack, journal.on_tx_ack, max_bytes=TX_ACK_MAX_BYTES)
        self.health.sections["outbox"] = lambda: {**outbox.stats(), "pending": outbox.pending_count(),
                                                  "tx": journal.stats()}
        components = self._build_components()
        # Before the broker connection opens: the first birth shows the persisted
        # service mode, and the simulator controls include the session hook.
        components[0].prepare()

        # The outbox listens for (re)connects, so it starts before the uplink
        # and stops before it: nothing is in flight when the socket closes.
        await self.outbox.start()
        await self.uplink.start()
        stack.push_async_callback(self._stop_uplink)
        # A clean stop (SIGTERM, and so a reboot) first gives the queue a moment:
        # the result of the command that caused it reaches the fleet now.
        stack.push_async_callback(self.outbox.stop, STOP_DRAIN_S)

        self._sync_all_alarms()
        if self.store.recovered_from is not None:
            salvaged = f"; {self.store.salvage.summary()}" if self.store.salvage is not None else ""
            self.alarms.raise_("store_corrupt", f"database failed its check; kept as "
                               f"{self.store.recovered_from.name}{salvaged}", device=SYSTEM)
        self._check_system()
        stack.callback(lambda: self._system_timer.cancel() if self._system_timer else None)
        self.health.start()
        stack.callback(self.health.stop)
        if cfg.storage.journal_keep_days > 0:
            pruner = spawn(self._prune_journal(cfg.storage.journal_keep_days), name="journal-prune",
                           keep=self._background)
            stack.callback(pruner.cancel)

        # Started in this order, stopped in reverse.
        for component in components:
            await component.start()
            stack.push_async_callback(component.stop)
        self.commands, self.remote_config, self.session_engine = components
        for make in self.companions:
            companion = make(self, components[2])
            if companion is not None:
                stack.push_async_callback(companion.stop)

        if cfg.local_api.enabled:
            # The kiosk screen's API, last up and first down: it serves the parts above.
            self.local_api = build_local_api(
                cfg, engine=components[2], devices=self.peripherals.devices, device_events=self.event_listeners,
                mode=lambda: self.mode, online=lambda: self.uplink is not None and self.uplink.connected,
                sim_actions=self.simcontrol.actions if self.simcontrol is not None else None)
            await self.local_api.start()
            stack.push_async_callback(self.local_api.stop)

        if cfg.sim.tx_per_minute > 0:
            await self._start_synthetic_load(stack)

    def _build_components(self) -> tuple[CommandService, RemoteConfig, SessionEngine]:
        """The components after the core, each given what it uses (and this agent only as its protocols)."""
        assert self.store is not None and self.uplink is not None and self.peripherals is not None
        assert self.journal is not None and self.outbox is not None
        assert self.health is not None and self.alarms is not None
        cfg, store, uplink, outbox, peripherals = self.cfg, self.store, self.uplink, self.outbox, self.peripherals
        remote_config = RemoteConfig(self, store=store, uplink=uplink, outbox=outbox, load_key=load_private)
        commands = CommandService(self, store=store, uplink=uplink, outbox=outbox, health=self.health,
                                  alarms=self.alarms, devices=peripherals.devices,
                                  simulated=peripherals.backend.simulated,
                                  sim_actions=self.simcontrol.actions if self.simcontrol is not None else None,
                                  remote_config=remote_config, journal=self.journal)
        io = DeviceIO(peripherals.devices, journal=self.journal, outbox=outbox, kiosk=cfg.kiosk,
                      light_tower=peripherals.light_tower)
        engine = SessionEngine(cfg, io, store=store, topics=self.topics, uplink=uplink, mode=lambda: self.mode,
                               alarms=self.alarms, health=self.health, device_events=self.event_listeners)
        return commands, remote_config, engine

    async def _start_synthetic_load(self, stack: contextlib.AsyncExitStack) -> None:
        """``sim.tx_per_minute``: synthetic, PII-free transactions through the real journal."""
        assert self.journal is not None
        stop = asyncio.Event()
        task = asyncio.create_task(synthetic_load(self.journal, self.cfg.sim.tx_per_minute, stop),
                                   name="synthetic-load")

        async def halt() -> None:
            stop.set()
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, Exception):  # noqa: BLE001 - stopping anyway
                task.cancel()
        stack.push_async_callback(halt)

    async def _prune_journal(self, keep_days: int) -> None:
        """At start, then hourly: acknowledged records older than ``storage.journal_keep_days`` go."""
        assert self.journal is not None
        while True:
            try:
                deleted = await self.journal.prune(keep_days)
                if deleted:
                    log.info("journal: pruned %d records acknowledged more than %d days ago", deleted, keep_days)
            except StoreError as exc:
                log.warning("journal prune failed (retried in an hour): %s", exc)
            await asyncio.sleep(JOURNAL_PRUNE_S)

    def _drop_health(self) -> None:
        if self.health is not None:
            self.health.stop()
            self.health = None

    def _outbox_alarm(self, code: str, active: bool, detail: str) -> None:
        if self.alarms is not None:
            self.alarms.set(code, active, detail, device=OUTBOX)

    def _close_store(self, exc_type: type[BaseException] | None = None, *_exc: Any) -> None:
        if self.store is not None:
            # Unwound by an error: no clean-stop marker, so the next open checks the file.
            self.store.close(clean=exc_type is None)
            self.store = None

    async def _stop_uplink(self) -> None:
        if self.uplink is None:
            return
        final = None
        if self._bd_seq:
            final = (self.topics.state, encode(envelope(self.cfg.kiosk.id, online=False, bdSeq=self._bd_seq,
                                                        reason="shutdown")))
        await self.uplink.stop(final)

    # -- presence -------------------------------------------------------------

    def _next_will(self) -> tuple[str, bytes]:
        # Runs before every connect attempt: each connection gets a new,
        # persisted bdSeq, and its Will names the same one as its birth.
        assert self.store is not None
        try:
            self._bd_seq = self.store.bump_counter("bdSeq")
        except StoreError as exc:
            # A full disk must not keep the kiosk off the broker; the value
            # still increases within this run.
            log.error("bdSeq not persisted: %s", exc)
            self._bd_seq += 1
        return self.topics.state, encode(envelope(self.cfg.kiosk.id, online=False, bdSeq=self._bd_seq,
                                                  reason="will"))

    def birth(self) -> dict[str, Any]:
        assert self.peripherals is not None
        inventory = self.peripherals.inventory()
        firmware = inventory.get("coproc", {}).get("firmware")
        return envelope(self.cfg.kiosk.id, online=True, bdSeq=self._bd_seq, boot_id=self.boot_id,
                        fleet=self.cfg.kiosk.fleet, site=self.cfg.kiosk.site, mode=self.mode,
                        versions={"agent": __version__, "firmware": firmware,
                                  "python": platform.python_version(), "contract": CONTRACT_VERSION},
                        peripherals=inventory)

    def _on_connected(self) -> None:
        assert self.uplink is not None and self.health is not None
        self.uplink.publish(self.topics.state, encode(self.birth()), qos=1, retain=True)
        self.health.publish_now("change")
        notify(f"STATUS=connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}")
        self._after_first_connect()

    def _after_first_connect(self) -> None:
        """Store upkeep kept off the start-up path; each runs once per store (store/database.py, runtime/alarms.py)."""
        assert self.store is not None and self.alarms is not None and self.uplink is not None
        # A damaged file: restarting the components reopens the store, which then checks it
        # on the start-up path (no clean-stop marker), sets it aside, salvages it and raises
        # store_corrupt saying what was kept.
        self.store.check_in_background(lambda _problem: self.request_restart())
        spawn(self.alarms.sweep_retained(self.uplink), name="alarm-sweep", keep=self._background)

    # -- sending --------------------------------------------------------------

    def _send_reliable(self, topic: str, payload: bytes, retain: bool = True) -> None:
        """Alarms: through the outbox (QoS 1, in order, kept across restarts)."""
        if self.outbox is not None:
            try:
                fut = self.outbox.enqueue_nowait("alarm", topic, payload, retain=retain)
                fut.add_done_callback(lambda f: self._reliable_failed(f, topic, payload, retain))
                return
            except StoreError as exc:
                log.error("alarm not queued durably (%s); sending it directly", exc)
        self._send_direct(topic, payload, retain)

    def _reliable_failed(self, fut: asyncio.Future[Any], topic: str, payload: bytes, retain: bool) -> None:
        if not fut.cancelled() and isinstance(fut.exception(), StoreError):
            log.error("alarm not queued durably (%s); sending it directly", fut.exception())
            self._send_direct(topic, payload, retain)

    def _send_direct(self, topic: str, payload: bytes, retain: bool) -> None:
        uplink = self.uplink
        if uplink is not None and uplink.connected:
            fut = uplink.publish(topic, payload, qos=1, retain=retain)
            fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    def _send_health(self, payload: bytes | dict[str, Any], _reason: str) -> None:
        # Droppable: the outbox keeps only the newest per topic while offline.
        data = payload if isinstance(payload, bytes) else encode(payload)
        if self.outbox is not None:
            try:
                fut = self.outbox.enqueue_nowait("health", self.topics.health, data, retain=True)
                fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
                return
            except StoreError:
                pass
        uplink = self.uplink
        if uplink is not None and uplink.connected:
            fut2 = uplink.publish(self.topics.health, data, qos=0, retain=True)
            fut2.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    def _agent_health(self) -> dict[str, Any]:
        uplink = self.uplink
        return {"connects": uplink.connects if uplink else 0,
                "refused_publishes": sum(uplink.refused.values()) if uplink else 0,
                "boot_id": self.boot_id}

    # -- events ---------------------------------------------------------------

    def _on_device_event(self, event: DeviceEvent) -> None:
        if self.store is None:        # queued on the loop before a stop, run after it
            return
        self._sync_device_alarms(event.device)
        self._health_changed()
        for listener in list(self.event_listeners):
            listener(event)

    def _sync_device_alarms(self, name: str) -> None:
        assert self.peripherals is not None and self.alarms is not None
        device = self.peripherals.devices.get(name)
        if device is None:
            return
        status = device.status()
        self.alarms.sync_device(name, status.alarms, status.detail)

    def _sync_all_alarms(self) -> None:
        assert self.peripherals is not None and self.alarms is not None
        for name in self.peripherals.devices:
            self._sync_device_alarms(name)
        # Left active by an earlier run for a device no longer configured.
        for code, alarm in list(self.alarms.active.items()):
            if alarm.device not in (None, SYSTEM, OUTBOX) and alarm.device not in self.peripherals.devices:
                self.alarms.clear(code, "device no longer configured")

    def _check_system(self) -> None:
        """Disk, temperature, supply and certificate-expiry alarms; re-armed every SYSTEM_CHECK_S."""
        if self.alarms is None:
            return
        snapshot = system_snapshot(self.cfg.storage.dir)
        found = system_alarms(snapshot, min_free_mb=self.cfg.storage.min_free_mb,
                              temp_high_c=self.cfg.health.temp_high_c)
        mqtt = self.cfg.mqtt
        if mqtt.tls_enabled and mqtt.tls.cert_file is not None:
            expiring = certificate_alarm(mqtt.tls.cert_file)
            if expiring is not None:
                found["cert_expiring"] = expiring
        for code in ("disk_low", "temp_high", "undervoltage", "cert_expiring"):
            owner = self.alarms.active.get(code)
            if code in found:
                self.alarms.raise_(code, found[code], device=SYSTEM)
            elif owner is not None and owner.device == SYSTEM:
                self.alarms.clear(code)
        self._system_timer = asyncio.get_running_loop().call_later(SYSTEM_CHECK_S, self._check_system)

    def _health_changed(self) -> None:
        if self.health is not None:
            self.health.changed()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if self.peripherals is not None:
            self.peripherals.show_mode(mode)
        self._health_changed()

    # -- systemd watchdog -----------------------------------------------------

    def _start_watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        loop = asyncio.get_running_loop()

        def ping() -> None:
            # Sent from the loop, never a side thread: a hung loop stops pinging.
            notify("WATCHDOG=1")
            self._watchdog = loop.call_later(interval, ping)

        ping()


def run_agent(cfg: Config, *, companions: Sequence[CompanionFactory] = ()) -> int:
    one_malloc_arena()      # before the daemon's threads exist (agent/runtime/memory.py says why)
    try:
        return asyncio.run(Agent(cfg, companions=companions).run())
    except AgentError as exc:
        log.error("%s: %s", exc.code, exc)
        return 1
