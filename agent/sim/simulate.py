# SPDX-License-Identifier: Apache-2.0
"""Simulated citizens: ``kiosk-agent simulate`` and the ``sim.sessions_per_minute`` trickle.

Both run the real agent (:class:`agent.runtime.daemon.Agent`: uplink, journal,
outbox, session engine) on simulated hardware and act as citizens would:
pick a service, place an ID card on the simulated reader (every card type
in turn, synthetic holders from the simulator), look at the face photo and
keep it (now and then after a retake), give a mailing address (half of them
"the address on my ID card", typed when the card has none), confirm, show a
payment code to the scanner, take the receipt, lift the card.

    $ kiosk-agent simulate --config .run/agent.toml --sessions 200
    [##############################] 200/200  completed 200  abandoned 0  failed 0
    200 sessions in 41.2 s (4.9/s): completed 200, abandoned 0, failed 0; outbox drained

    driver = Citizens(engine, simulators=peripherals.simulators, online=lambda: uplink.connected,
                      rng=random.Random(1))
    await driver.one("pension_record_print")      # -> "completed"
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.config import Config
from agent.errors import AgentError
from agent.sessions.engine import NoCardAddress

if TYPE_CHECKING:
    from agent.runtime.daemon import Agent
    from agent.sessions.engine import SessionEngine

__all__ = ["Citizens", "Trickle", "run_simulation", "SimulationError", "CARD_TYPES", "start_trickle"]

log = logging.getLogger(__name__)

CARD_TYPES = ("resident", "gat_permit", "foreign_pr_2017", "foreign_pr_2023")


class SimulationError(AgentError):
    """The simulation could not run (no simulators, the agent did not come up)."""

    code = "agent.simulate.error"


class Citizens:
    """Drives simulated citizens through the real engine and the simulators."""

    def __init__(self, engine: SessionEngine, *, simulators: Mapping[str, Any], online: Callable[[], bool],
                 rng: random.Random | None = None, cancel_rate: float = 0.0, step_delay_s: float = 0.0) -> None:
        self.engine = engine
        self.simulators = simulators
        self.online = online
        self.rng = rng or random.Random()
        self.cancel_rate = cancel_rate
        self.step_delay_s = step_delay_s
        self.served = 0
        self.cards = 0
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        engine.add_listener(self._events.put_nowait)

    def close(self) -> None:
        self.engine.remove_listener(self._events.put_nowait)

    def _sim(self, name: str) -> Any:
        sim = self.simulators.get(name)
        if sim is None:
            raise SimulationError(f"no {name} simulator: run with hal.backend = \"sim\" and the device enabled")
        return sim

    def choose_service(self, only: str | None = None) -> str:
        if only:
            return only
        ids = self.engine.catalogue.ids()
        if not self.online():     # offline: only what may run offline
            ids = [s.id for s in self.engine.catalogue if s.offline] or ids
        return str(ids[self.served % len(ids)])

    async def one(self, service_id: str | None = None, *, timeout: float = 120.0) -> str:
        """One citizen from start to finish; returns the session's outcome."""
        service = self.choose_service(service_id)
        self.served += 1
        while not self._events.empty():
            self._events.get_nowait()
        await self.engine.wait_idle()
        await self.engine.begin(service)
        cancel_at = self.rng.randrange(3) if self.rng.random() < self.cancel_rate else None
        placed = False
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self._events.get(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    raise SimulationError(f"citizen {self.served} got no answer within {timeout:.0f} s") from None
                kind = event["event"]
                if kind == "ended":
                    return str(event["outcome"])
                if kind == "photo_preview":
                    await self._look_at_photo(event)
                    continue
                if kind != "step":
                    continue
                if self.step_delay_s:
                    await asyncio.sleep(self.step_delay_s * self.rng.random())
                if cancel_at is not None and event["index"] >= cancel_at:
                    await self.engine.cancel()
                    continue
                step = event["step"]
                if step == "read_id":
                    # Card types in turn over the citizens who show one.
                    card_type = CARD_TYPES[self.cards % len(CARD_TYPES)]
                    self.cards += 1
                    await asyncio.to_thread(place_card, self._sim("idcard"), card_type)
                    placed = True
                elif step == "capture_photo" and self.rng.random() < 0.5:
                    await self.engine.set_consent(face=True)
                elif step == "capture_address":
                    await self._give_address()
                elif step == "confirm":
                    await self.engine.confirm()
                elif step == "scan_payment":
                    await asyncio.to_thread(scan_code, self._sim("scanner"), *payment_code(self.rng))
        finally:
            if placed:
                await asyncio.to_thread(lift_card, self._sim("idcard"))

    async def _look_at_photo(self, event: dict[str, Any]) -> None:
        """Keep the photo; one citizen in five asks for another while retakes are left."""
        if event["retakes_left"] > 0 and self.rng.random() < 0.2:
            await self.engine.retake_photo()
        else:
            await self.engine.accept_photo()

    async def _give_address(self) -> None:
        address = synthetic_address(self.rng)
        if self.rng.random() < 0.5:
            try:
                await self.engine.provide_address(use_card_address=True, phone=address["phone"])
                return
            except NoCardAddress:     # a foreigner's permanent residence card has no address: type one
                pass
        await self.engine.provide_address(recipient=address["recipient"], phone=address["phone"],
                                          address=address["address"], postcode=address["postcode"])


# -- what a citizen brings (synthetic; ID numbers come from the card simulator) ------

_STREETS = ("模拟路", "测试街", "样例大道", "示范巷")


def synthetic_address(rng: random.Random) -> dict[str, str]:
    """An obviously fake mailing address: never a real person's."""
    return {"recipient": f"模拟收件人{rng.randrange(1000):03d}", "phone": f"1990000{rng.randrange(10000):04d}",
            "address": f"模拟省测试市{rng.choice(_STREETS)}{rng.randrange(1, 999)}号",
            "postcode": f"{rng.randrange(100000, 999999)}"}


def payment_code(rng: random.Random) -> tuple[str, str]:
    """A code shaped like a WeChat (``1[0-5]`` + 16 digits) or Alipay (``25``–``30`` + 14–22) one."""
    if rng.random() < 0.5:
        return f"1{rng.randrange(6)}" + "".join(rng.choice("0123456789") for _ in range(16)), "wechat"
    return f"{rng.randrange(25, 31)}" + "".join(rng.choice("0123456789") for _ in range(16)), "alipay"


# -- simulator adapters ------------------------------------------------------------------

def place_card(sim: Any, card_type: str) -> None:
    from hal.sim.idcard import sample_card  # synthetic holders live with the simulator
    sim.place(sample_card(card_type))


def lift_card(sim: Any) -> None:
    sim.remove()


def scan_code(sim: Any, code: str, _method: str) -> None:
    # A scanner in serial-trigger mode reads only once the engine's trigger has arrived.
    for _ in range(50):
        if sim.scan(code):
            return
        time.sleep(0.02)
    raise SimulationError("the scanner was never triggered")


# -- the two entry points -------------------------------------------------------------------

class Trickle:
    """``sim.sessions_per_minute``: a steady stream of citizens while the agent runs."""

    def __init__(self, engine: SessionEngine, per_minute: float, *, simulators: Mapping[str, Any],
                 online: Callable[[], bool], mode: Callable[[], str]) -> None:
        self.engine = engine
        self.simulators = simulators
        self.online = online
        self.mode = mode
        self.interval = 60.0 / per_minute
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="sim-citizens")

    async def stop(self) -> None:
        # Python 3.11's asyncio.wait_for can swallow a cancel that lands as its
        # inner future completes (fixed in 3.12): the flag ends the loop even
        # then, and the cancel is repeated until the task is really done.
        self._stopping = True
        task = self._task
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        self._task = None

    async def _run(self) -> None:
        citizens = Citizens(self.engine, simulators=self.simulators, online=self.online,
                            step_delay_s=min(2.0, self.interval / 10))
        try:
            while not self._stopping:
                await asyncio.sleep(self.interval * random.uniform(0.5, 1.5))
                if self.mode() != "in_service" or self.engine.session is not None:
                    continue
                try:
                    outcome = await citizens.one()
                    log.info("simulated citizen: %s", outcome)
                except AgentError as exc:
                    log.warning("simulated citizen turned away: %s: %s", exc.code, exc)
                except Exception:  # the trickle must outlive one bad citizen
                    log.exception("simulated citizen failed")
        finally:
            citizens.close()


@dataclasses.dataclass
class Summary:
    sessions: int
    outcomes: dict[str, int]
    seconds: float
    drained: bool
    refused: dict[str, int]

    def line(self) -> str:
        rate = self.sessions / self.seconds if self.seconds else 0.0
        parts = ", ".join(f"{k} {v}" for k, v in self.outcomes.items())
        turned = f"; turned away {sum(self.refused.values())}" if self.refused else ""
        return (f"{self.sessions} sessions in {self.seconds:.1f} s ({rate:.1f}/s): {parts}{turned}; "
                f"outbox {'drained' if self.drained else 'NOT drained'}")


def _bar(done: int, total: int, outcomes: dict[str, int], stream: Any) -> None:
    width = 30
    filled = width * done // max(1, total)
    text = "  ".join(f"{k} {v}" for k, v in outcomes.items())
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {text}")
    stream.flush()


async def _wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


def start_trickle(agent: Agent, engine: SessionEngine) -> Trickle | None:
    """The daemon's companion for ``sim.sessions_per_minute`` (sim backend only); None when off."""
    per_minute = agent.cfg.sim.sessions_per_minute
    peripherals, uplink = agent.peripherals, agent.uplink
    if per_minute <= 0 or peripherals is None or uplink is None or not peripherals.backend.simulated:
        return None
    trickle = Trickle(engine, per_minute, simulators=peripherals.simulators, online=lambda: uplink.connected,
                      mode=lambda: agent.mode)
    trickle.start()
    return trickle


def outbox_pending(agent: Agent) -> int | None:
    """Messages the outbox still holds, or None when there is no outbox (the agent is not running)."""
    return agent.outbox.pending_count() if agent.outbox is not None else None


async def simulate(cfg: Config, sessions: int, service: str | None = None, *, progress: Any = sys.stderr,
                   cancel_rate: float = 0.0, connect_timeout: float = 15.0,
                   drain_timeout: float = 120.0) -> Summary:
    """Run the agent in-process, drive ``sessions`` citizens, drain, stop."""
    from agent.runtime.daemon import Agent

    agent = Agent(cfg)
    runner = asyncio.create_task(agent.run(), name="agent")
    try:
        if not await _wait_for(lambda: agent.session_engine is not None or runner.done(), 30):
            raise SimulationError("the agent did not start its session engine")
        if runner.done():
            runner.result()
            raise SimulationError("the agent stopped before the simulation began")
        engine = agent.session_engine
        assert engine is not None and agent.peripherals is not None and agent.uplink is not None
        uplink = agent.uplink
        if service is not None:
            engine.catalogue.get(service)
        online = await uplink.wait_connected(connect_timeout)
        if not online and progress is not None:
            progress.write(f"broker {cfg.mqtt.host}:{cfg.mqtt.port} not reachable: offline services only, "
                           "the outbox keeps everything for later\n")
        citizens = Citizens(engine, simulators=agent.peripherals.simulators, online=lambda: uplink.connected,
                            rng=random.Random(sessions), cancel_rate=cancel_rate)
        outcomes = {"completed": 0, "abandoned": 0, "failed": 0}
        refused: dict[str, int] = {}
        started = time.monotonic()
        for done in range(sessions):
            try:
                outcome = await citizens.one(service)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            except AgentError as exc:
                refused[exc.code] = refused.get(exc.code, 0) + 1
            if progress is not None:
                _bar(done + 1, sessions, outcomes, progress)
        if progress is not None:
            progress.write("\n")
        citizens.close()
        drained = online and outbox_pending(agent) is not None and \
            await _wait_for(lambda: outbox_pending(agent) == 0, drain_timeout, 0.1)
        return Summary(sessions, outcomes, time.monotonic() - started, drained, refused)
    finally:
        agent.request_stop()
        try:
            await asyncio.wait_for(runner, 15)
        except TimeoutError:
            runner.cancel()


def run_simulation(cfg: Config, sessions: int, service: str | None = None, cancel_rate: float = 0.0) -> int:
    """The body of ``kiosk-agent simulate``; returns the exit code."""
    if cfg.hal.backend != "sim":
        print("kiosk-agent simulate needs hal.backend = \"sim\"", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(simulate(cfg, sessions, service, cancel_rate=cancel_rate))
    except AgentError as exc:
        print(f"kiosk-agent simulate: {exc.code}: {exc}", file=sys.stderr)
        return 1
    print(summary.line(), flush=True)
    ok = summary.drained and not summary.refused and not summary.outcomes.get("failed")
    return 0 if ok else 1
