# SPDX-License-Identifier: Apache-2.0
"""A simulated fleet for the dashboard's tests and bench: many light kiosks, each on its own MQTT 5 connection.

    kiosks = make_fleet(1000, "north", with_keys=True) # SimKiosk: what one kiosk says, as the agent says it
    with FleetSim(broker.port, kiosks) as sim:         # 250 connections per process, 4 processes
        sim.start()                                    # every kiosk connected, born, its first health sent
        at = sim.alarm("k0007", "door_open")           # time.time() of the raise, at the kiosk
        sim.alarm("k0007", "door_open", active=False)
        sim.command("k0007", "ping", result={"pong": True})
        sim.transactions("k0007", 3)                   # signed, chained records (register the kiosk first)
        sim.kill(0)                                    # kill -9 of a process: the broker sends its kiosks' Wills
        sim.restart(0)                                 # ... and they come back: new agent run, next bdSeq

Registering the kiosks with a ledger: ``register_kiosk(conn, k.kiosk, k.fleet, k.ledger.public_key)``
(fleet/ledger/db.py) for each, as bench/dashboard.py does.

A light kiosk is not an agent: no peripherals, no store, no outbox. It
publishes what the agent publishes on the same topics with the same
payload shapes (those of ``agent/runtime/daemon.py``'s birth and Will,
``agent/runtime/health.py``'s health, ``agent/runtime/alarms.py``'s alarms,
captured from a real agent and cut down): a Will ``state`` online=false
with the connection's ``bdSeq``; a retained birth (site, mode, versions,
peripherals inventory); retained health every interval and on change
(QoS 0, as the agent's direct path); retained alarm raises and clears
(QoS 1), with the deprecated alias beside a renamed code as the agent does;
optional command results and signed transaction records (real Ed25519
keys and chains: ``tests/ledger/ledgerkit.py``'s ``LightKiosk``).
tests/dashboard/test_fleetsim.py checks every kind against the agent's JSON
Schemas: a simulator that drifts from the contract makes every figure a lie.

paho waits with select(), which cannot watch a descriptor above 1023, and
each client holds three: kiosks are spread over processes of at most
``PER_PROCESS``. The processes are forked, so each kiosk's keys and chain
head go to its process without pickling; the parent drives them through a
pipe per process.
"""

from __future__ import annotations

import heapq
import json
import multiprocessing
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.runtime.alarms import ALIASES, LATCHING, SEVERITY
from agent.wire.contract import CONTRACT_VERSION, Topics, encode, envelope
from agent.wire.txformat import record_hash

# ledgerkit sits beside the ledger's tests, which are no package (pytest puts each test directory on
# sys.path, and bench/ has a ledger.py of its own): appended, so it shadows nothing.
_LEDGER_TESTS = str(Path(__file__).resolve().parents[1] / "ledger")
if _LEDGER_TESTS not in sys.path:
    sys.path.append(_LEDGER_TESTS)
from ledgerkit import LightKiosk  # noqa: E402

__all__ = ["SimKiosk", "FleetSim", "Message", "make_fleet", "session_record", "every_message_kind", "PER_PROCESS",
           "SERVICES", "ALARM_DEVICE"]

PER_PROCESS = 250

# (topic, payload, qos, retain), the payload as the dict the agent encodes.
Message = tuple[str, dict[str, Any], int, bool]

# The default simulated kiosk's peripherals (agent/config.py DEFAULT_SIM_CONFIG), as its birth lists them.
INVENTORY: dict[str, dict[str, Any]] = {
    "camera": {"kind": "camera", "model": "simulated"},
    "coproc": {"kind": "coproc", "firmware": "1.0.0", "slot": "a"},
    "door": {"kind": "gpio-input", "pin": 17},
    "idcard": {"kind": "idcard", "model": "GA 467 SAM"},
    "light_tower": {"kind": "light-tower"},
    "presence": {"kind": "gpio-input", "pin": 22},
    "printer": {"kind": "printer", "model": "ESC/POS", "protocol": "DLE EOT"},
    "scanner": {"kind": "scanner", "model": "serial scanner"},
    "tamper": {"kind": "gpio-input", "pin": 27},
}

# Which peripheral asserts an alarm (the agent's ``device`` field), and the state it leaves that peripheral in.
ALARM_DEVICE: dict[str, tuple[str, str]] = {
    "paper_low": ("printer", "degraded"), "paper_out": ("printer", "fault"), "printer_fault": ("printer", "fault"),
    "printer_offline": ("printer", "offline"), "door_open": ("door", "degraded"), "tamper": ("tamper", "degraded"),
    "idcard_offline": ("idcard", "offline"), "idcard_fault": ("idcard", "fault"),
    "scanner_offline": ("scanner", "offline"), "camera_fault": ("camera", "fault"),
    "coproc_offline": ("coproc", "offline"),
}
SYSTEM_DEVICE = "system"     # disk_low, temp_high, undervoltage (agent/runtime/daemon.py SYSTEM)

SERVICES = ("pension_record_print", "bill_water", "bill_electricity", "licence_renewal", "residence_permit")
CITIES = ("beijing", "tianjin", "shijiazhuang", "taiyuan", "jinan", "zhengzhou", "hefei", "nanjing")


def session_record(rng: random.Random, n: int) -> dict[str, Any]:
    """A citizen session's transaction data as the session engine journals it, with a masked id only."""
    outcome = rng.choices(("completed", "abandoned", "failed"), (90, 8, 2))[0]
    service = rng.choice(SERVICES)
    ended = int(time.time() * 1000)
    return {"type": "session", "session": uuid.uuid4().hex, "service": service, "outcome": outcome,
            "reason": None if outcome == "completed" else "timeout:confirm", "started": ended - 90_000, "ended": ended,
            "duration_ms": 90_000,
            "steps": [{"kind": "read_id", "status": "done", "ms": 2_100},
                      {"kind": "confirm", "status": "done" if outcome == "completed" else "timeout", "ms": 4_800}],
            "card_type": "resident",
            "id_masked": f"11************{n % 10_000:04d}", "receipt": None, "payment": None, "waybill": None,
            "face": None, "evidence": False, "language": "zh"}


class SimKiosk:
    """What one kiosk says: birth, Will, health, alarms, command results, transaction records.

    Pure bookkeeping and payload building; ``FleetSim`` puts it on a connection.
    """

    def __init__(self, kiosk: str, fleet: str, site: str, *, seed: int = 0, agent_version: str = "0.9.0",
                 firmware: str | None = "1.2.0", ledger: LightKiosk | None = None) -> None:
        self.kiosk, self.fleet, self.site = kiosk, fleet, site
        self.topics = Topics(fleet, kiosk)
        self.rng = random.Random(f"{seed}:{kiosk}")
        self.agent_version, self.firmware = agent_version, firmware
        self.ledger = ledger
        self.bd_seq = 0
        self.boot_id = uuid.uuid4().hex
        self.mode = "in_service"
        self.started = time.monotonic()
        self.connects = 0
        self.alarms: dict[str, tuple[int, str, str]] = {}      # code -> (since ms, detail, device)
        self.completed = self.abandoned = self.failed = 0
        self.disk_total_mb = 29_800.0
        self.disk_free_mb = self.rng.uniform(9_000, 25_000)
        self.cpu_temp_c = self.rng.uniform(42, 58)

    # -- presence -----------------------------------------------------------------------------------

    def next_connection(self) -> dict[str, Any]:
        """A new connection's Will (the agent persists and bumps bdSeq before every connect)."""
        self.bd_seq += 1
        self.connects += 1
        return envelope(self.kiosk, online=False, bdSeq=self.bd_seq, reason="will")

    def agent_restarted(self) -> None:
        """A new agent run (after a crash): a new boot id, uptime and connection count from zero."""
        self.boot_id = uuid.uuid4().hex
        self.started = time.monotonic()
        self.connects = 0

    def birth(self) -> dict[str, Any]:
        peripherals = {name: {**entry, "simulated": True} for name, entry in INVENTORY.items()}
        if self.firmware is not None:
            peripherals["coproc"]["firmware"] = self.firmware
        return envelope(self.kiosk, online=True, bdSeq=self.bd_seq, boot_id=self.boot_id, fleet=self.fleet,
                        site=self.site, mode=self.mode,
                        versions={"agent": self.agent_version, "firmware": self.firmware, "python": "3.11.2",
                                  "contract": CONTRACT_VERSION},
                        peripherals=peripherals)

    def shutdown(self) -> dict[str, Any]:
        """The clean stop's last word (the agent sends it before disconnecting)."""
        return envelope(self.kiosk, online=False, bdSeq=self.bd_seq, reason="shutdown")

    # -- health -------------------------------------------------------------------------------------

    def health(self, reason: str = "periodic") -> dict[str, Any]:
        # The disk fills slowly and the board warms and cools, so the plots have something to show.
        self.disk_free_mb = max(50.0, self.disk_free_mb - self.rng.uniform(0, 3))
        self.cpu_temp_c = min(85.0, max(35.0, self.cpu_temp_c + self.rng.uniform(-1.5, 1.5)))
        peripherals: dict[str, dict[str, Any]] = {name: {"state": "ok"} for name in INVENTORY}
        for code in self.alarms:
            device, state = ALARM_DEVICE.get(code, (None, "ok"))
            if device is not None:
                entry = peripherals[device]
                entry["state"] = state
                entry.setdefault("alarms", []).append(code)
        uptime = round(time.monotonic() - self.started, 1)
        unacked = self.rng.choice((0, 0, 0, 1, 2))
        return envelope(
            self.kiosk, reason=reason, uptime_s=uptime, mode=self.mode,
            system={"uptime_s": uptime + 3600, "load": [round(self.rng.uniform(0.1, 1.5), 2) for _ in range(3)],
                    "mem_total_mb": 1906.0, "mem_available_mb": round(self.rng.uniform(900, 1400), 1),
                    "disk_free_mb": round(self.disk_free_mb, 1), "disk_total_mb": self.disk_total_mb,
                    "cpu_temp_c": round(self.cpu_temp_c, 1)},
            agent={"rss_mb": round(self.rng.uniform(38, 46), 1), "version": self.agent_version, "python": "3.11.2",
                   "connects": self.connects, "refused_publishes": 0, "boot_id": self.boot_id},
            peripherals=peripherals, alarms=sorted(self.alarms),
            outbox={"backlog": False, "pending": unacked, "inflight": 0,
                    "tx": {"epoch": self.ledger.epoch if self.ledger else uuid.UUID(int=0).hex,
                           "seq": self.ledger.seq if self.ledger else 0, "first_seq": 1 if self.ledger else None,
                           "unacked": unacked, "oldest_unacked_age_s": 1.5 if unacked else None,
                           "acks_refused": 0}},
            commands={"accepted": 0, "failed": 0, "received": 0, "refused": 0, "refused_by": {}, "succeeded": 0},
            sessions={"completed": self.completed, "abandoned": self.abandoned, "failed": self.failed,
                      "receipts": {"printed": self.completed, "failed": 0, "skipped": 0}})

    # -- alarms -------------------------------------------------------------------------------------

    def set_alarm(self, code: str, active: bool = True, detail: str = "") -> list[Message]:
        """Raise or clear ``code``: its retained message (and its deprecated alias's), then health on change.

        Nothing when it is already in that state, as the agent sends nothing then.
        """
        if active == (code in self.alarms):
            return []
        now = int(time.time() * 1000)
        device = ALARM_DEVICE.get(code, (SYSTEM_DEVICE, ""))[0]
        if active:
            detail = detail or f"{device}: {code}"
            self.alarms[code] = (now, detail, device)
        else:
            self.alarms.pop(code)
            detail = detail or "cleared"
        fields: dict[str, Any] = {"code": code, "active": active, "since": now, "detail": detail,
                                  "severity": SEVERITY.get(code, "warning"), "device": device}
        if code in LATCHING and active:
            fields["latched"] = False
        out: list[Message] = [(self.topics.alarm(code), envelope(self.kiosk, ts=now, **fields), 1, True)]
        alias = ALIASES.get(code)
        if alias is not None:
            out.append((self.topics.alarm(alias), envelope(self.kiosk, ts=now, **{**fields, "code": alias,
                                                                                  "alias_of": code}), 1, True))
        out.append((self.topics.health, self.health("change"), 0, True))
        return out

    def set_mode(self, mode: str) -> list[Message]:
        self.mode = mode
        return [(self.topics.health, self.health("change"), 0, True)]

    def retained_alarms(self) -> list[Message]:
        """The active alarms' retained state, sent again after a connect (what the outbox redelivers)."""
        return [(self.topics.alarm(code), envelope(self.kiosk, ts=since, code=code, active=True, since=since,
                                                   detail=detail, severity=SEVERITY.get(code, "warning"),
                                                   device=device), 1, True)
                for code, (since, detail, device) in sorted(self.alarms.items())]

    # -- commands and transactions ------------------------------------------------------------------

    def cmd_result(self, name: str, status: str, *, correlation: str = "", code: str | None = None,
                   result: dict[str, Any] | None = None) -> Message:
        fields: dict[str, Any] = {"name": name, "status": status, "correlation": correlation or os.urandom(8).hex()}
        if code is not None:
            fields["code"] = code
        if result is not None:
            fields["result"] = result
        return self.topics.cmd_result(name), envelope(self.kiosk, **fields), 1, False

    def transaction(self, data: dict[str, Any] | None = None) -> tuple[str, bytes]:
        """The next signed record of this kiosk's chain: (topic, payload bytes)."""
        if self.ledger is None:
            raise ValueError(f"{self.kiosk} was made without a ledger key")
        record = data if data is not None else session_record(self.rng, self.ledger.seq + 1)
        outcome = record.get("outcome")
        if outcome == "completed":
            self.completed += 1
        elif outcome == "abandoned":
            self.abandoned += 1
        elif outcome == "failed":
            self.failed += 1
        return self.ledger.record(record)


def make_fleet(n: int, fleet: str, *, seed: int = 0, per_site: int = 16, with_keys: bool = False,
               prefix: str = "k") -> list[SimKiosk]:
    """``n`` kiosks ``k0001``..., ``per_site`` to an outlet, a few on older agent and firmware versions."""
    kiosks = []
    for i in range(n):
        name = f"{prefix}{i + 1:04d}"
        city = CITIES[(i // per_site) % len(CITIES)]
        site = f"{city}-{i // per_site + 1:03d}"
        older = i % 10 == 9
        kiosks.append(SimKiosk(name, fleet, site, seed=seed, agent_version="0.8.4" if older else "0.9.0",
                               firmware="1.1.0" if older else "1.2.0",
                               ledger=LightKiosk(name, fleet) if with_keys else None))
    return kiosks


# -- on the wire ------------------------------------------------------------------------------------

def _publish(client: paho.Client, message: Message) -> paho.MQTTMessageInfo:
    topic, payload, qos, retain = message
    return client.publish(topic, encode(payload), qos=qos, retain=retain)


class _Connected:
    """One kiosk's paho MQTT 5 client: the Will set before connecting, birth, health, retained alarms."""

    def __init__(self, kiosk: SimKiosk, host: str, port: int, keepalive: int) -> None:
        self.kiosk = kiosk
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"kiosk-{kiosk.fleet}-{kiosk.kiosk}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(100)
        will = kiosk.next_connection()
        self.client.will_set(kiosk.topics.state, encode(will), qos=1, retain=True)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.connect(host, port, keepalive=keepalive)
        self.client.loop_start()

    def born(self, timeout: float) -> None:
        if not self.connected.wait(timeout):
            raise RuntimeError(f"{self.kiosk.kiosk}: no CONNACK within {timeout:.0f} s")
        birth = _publish(self.client, (self.kiosk.topics.state, self.kiosk.birth(), 1, True))
        for message in self.kiosk.retained_alarms():
            _publish(self.client, message)
        _publish(self.client, (self.kiosk.topics.health, self.kiosk.health("change"), 0, True))
        birth.wait_for_publish(timeout)

    def send(self, messages: Iterable[Message]) -> float:
        """Publish in order; returns time.time() just before the first (the moment the kiosk said it)."""
        at = time.time()
        infos = [_publish(self.client, m) for m in messages]
        for info in infos:
            if info.rc == paho.MQTT_ERR_SUCCESS:
                info.wait_for_publish(30)
        return at

    def close(self) -> None:
        self.send([(self.kiosk.topics.state, self.kiosk.shutdown(), 1, True)])
        self.client.disconnect()
        self.client.loop_stop()


def _serve(kiosks: list[SimKiosk], host: str, port: int, keepalive: int, health_interval_s: float,
           pipe: Connection) -> None:
    """One process's kiosks: connect them all, then periodic health and the parent's orders until "stop"."""
    try:
        conns = {k.kiosk: _Connected(k, host, port, keepalive) for k in kiosks}
        for conn in conns.values():
            conn.born(60)
        pipe.send(("ok", len(conns)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails its start
        pipe.send(("error", f"{exc.__class__.__name__}: {exc}"))
        return
    rng = random.Random(os.getpid())
    # Health every interval per kiosk, spread over the interval as a real fleet's clocks are.
    due = [(time.monotonic() + rng.uniform(0, health_interval_s), k.kiosk) for k in kiosks]
    heapq.heapify(due)
    while True:
        wait = max(0.0, due[0][0] - time.monotonic()) if due else None
        if pipe.poll(wait):
            op, args = pipe.recv()
            if op == "stop":
                for conn in conns.values():
                    conn.close()
                pipe.send(("ok", None))
                return
            try:
                if op == "health_all":
                    pipe.send(("ok", _health_all(conns.values())))
                    continue
                pipe.send(("ok", _order(conns[args["kiosk"]], op, args)))
            except Exception as exc:  # noqa: BLE001 - an order that fails is the parent's error, not ours
                pipe.send(("error", f"{op} {args}: {exc.__class__.__name__}: {exc}"))
            continue
        at, name = heapq.heappop(due)
        conn = conns[name]
        _publish(conn.client, (conn.kiosk.topics.health, conn.kiosk.health("periodic"), 0, True))
        heapq.heappush(due, (at + health_interval_s, name))


def _health_all(conns: Iterable[_Connected]) -> float:
    """Every kiosk of the process publishes health at once (reason request); time.time() before the first."""
    at = time.time()
    infos = [_publish(c.client, (c.kiosk.topics.health, c.kiosk.health("request"), 0, True)) for c in conns]
    for info in infos:
        info.wait_for_publish(30)
    return at


def _order(conn: _Connected, op: str, args: dict[str, Any]) -> Any:
    kiosk = conn.kiosk
    if op == "alarm":
        messages = kiosk.set_alarm(args["code"], args["active"], args.get("detail", ""))
        return conn.send(messages) if messages else None
    if op == "mode":
        return conn.send(kiosk.set_mode(args["mode"]))
    if op == "health":
        return conn.send([(kiosk.topics.health, kiosk.health(args.get("reason", "request")), 0, True)])
    if op == "cmd":
        return conn.send([kiosk.cmd_result(args["name"], status, correlation=args["correlation"],
                                           result=args.get("result") if status == "succeeded" else None)
                          for status in args["statuses"]])
    if op == "tx":
        records = [kiosk.transaction() for _ in range(args["count"])]
        infos = [conn.client.publish(topic, payload, qos=1) for topic, payload in records]
        for info in infos:
            info.wait_for_publish(30)
        return [payload for _topic, payload in records]
    raise ValueError(f"unknown order {op!r}")


class FleetSim:
    """``kiosks`` on their own connections to the broker on ``port``, in processes of ``per_process``.

    The parent keeps its copy of each kiosk in step with what its process did (bdSeq, alarms, mode, chain
    head), so a killed process can be started again (``restart``) as the same kiosks coming back.
    """

    def __init__(self, port: int, kiosks: list[SimKiosk], *, host: str = "127.0.0.1", keepalive: int = 30,
                 health_interval_s: float = 300.0, per_process: int = PER_PROCESS) -> None:
        self.port, self.host, self.keepalive = port, host, keepalive
        self.health_interval_s = health_interval_s
        self.kiosks = kiosks
        self.by_name = {k.kiosk: k for k in kiosks}
        self.slices = [kiosks[i:i + per_process] for i in range(0, len(kiosks), per_process)]
        self.where = {k.kiosk: n for n, part in enumerate(self.slices) for k in part}
        self.procs: list[Any] = [None] * len(self.slices)
        self.pipes: list[Connection | None] = [None] * len(self.slices)
        self._locks = [threading.Lock() for _ in self.slices]

    def start(self, timeout: float = 300.0) -> FleetSim:
        """Fork the processes; returns once every kiosk is connected and its birth acknowledged."""
        for n in range(len(self.slices)):
            self._fork(n)
        for n in range(len(self.slices)):
            self._started(n, timeout)
        return self

    def restart(self, index: int, timeout: float = 120.0) -> list[str]:
        """Process ``index`` again (after ``kill``): its kiosks' agents start again (new boot id), reconnect with
        the next bdSeq and are born again, their alarms and chains where they were."""
        if self.procs[index] is not None and self.procs[index].is_alive():
            raise RuntimeError(f"fleetsim process {index} is still running")
        for k in self.slices[index]:
            k.agent_restarted()
        self._fork(index)
        self._started(index, timeout)
        return [k.kiosk for k in self.slices[index]]

    def _fork(self, n: int) -> None:
        ctx = multiprocessing.get_context("fork")     # keys and chains go to the children without pickling
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(self.slices[n], self.host, self.port, self.keepalive,
                                                self.health_interval_s, child), daemon=True)
        proc.start()
        child.close()
        self.procs[n], self.pipes[n] = proc, parent

    def _started(self, n: int, timeout: float) -> None:
        pipe = self.pipes[n]
        assert pipe is not None
        if not pipe.poll(timeout):
            raise RuntimeError(f"fleetsim process {n} did not connect its kiosks within {timeout:.0f} s")
        status, value = pipe.recv()
        if status != "ok":
            raise RuntimeError(f"fleetsim process {n}: {value}")
        for k in self.slices[n]:
            k.next_connection()       # as the child did before connecting: the next start goes one further

    def _ask(self, kiosk: str, op: str, **args: Any) -> Any:
        n = self.where[kiosk]
        pipe = self.pipes[n]
        if pipe is None or not self.procs[n].is_alive():
            raise RuntimeError(f"{kiosk}'s process ({n}) is not running")
        with self._locks[n]:
            pipe.send((op, {"kiosk": kiosk, **args}))
            if not pipe.poll(60):
                raise RuntimeError(f"fleetsim process {n} did not answer {op} for {kiosk}")
            status, value = pipe.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def alarm(self, kiosk: str, code: str, active: bool = True, detail: str = "") -> float | None:
        """Raise (or clear) an alarm at ``kiosk``: time.time() when it published, None if nothing changed."""
        result: float | None = self._ask(kiosk, "alarm", code=code, active=active, detail=detail)
        self.by_name[kiosk].set_alarm(code, active, detail)
        return result

    def mode(self, kiosk: str, mode: str) -> float:
        result: float = self._ask(kiosk, "mode", mode=mode)
        self.by_name[kiosk].set_mode(mode)
        return result

    def health(self, kiosk: str, reason: str = "request") -> float:
        result: float = self._ask(kiosk, "health", reason=reason)
        return result

    def command(self, kiosk: str, name: str, *, statuses: tuple[str, ...] = ("accepted", "succeeded"),
                result: dict[str, Any] | None = None) -> str:
        """A command's results as the kiosk publishes them; returns the correlation (hex)."""
        correlation = os.urandom(8).hex()
        self._ask(kiosk, "cmd", name=name, statuses=list(statuses), correlation=correlation, result=result)
        return correlation

    def transactions(self, kiosk: str, count: int = 1) -> list[bytes]:
        """``count`` signed records of the kiosk's chain, published QoS 1; their payloads."""
        result: list[bytes] = self._ask(kiosk, "tx", count=count)
        chain = self.by_name[kiosk].ledger
        if chain is not None and result:
            chain.seq, chain.prev = json.loads(result[-1])["seq"], record_hash(result[-1])
        return result

    def health_burst(self) -> float:
        """Every kiosk of every running process publishes health at once; time.time() before the first."""
        running = [n for n, proc in enumerate(self.procs) if proc is not None and proc.is_alive()]
        pipes = {n: self.pipes[n] for n in running}
        for n, pipe in pipes.items():
            assert pipe is not None
            with self._locks[n]:
                pipe.send(("health_all", {}))
        started = []
        for n, pipe in pipes.items():
            assert pipe is not None
            with self._locks[n]:
                if not pipe.poll(120):
                    raise RuntimeError(f"fleetsim process {n} did not finish its health burst")
                status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(value)
            started.append(value)
        return min(started)

    def kill(self, index: int) -> list[str]:
        """kill -9 process ``index``: its connections drop, the broker publishes their Wills; their kiosks."""
        proc = self.procs[index]
        proc.kill()
        proc.join(10)
        return [k.kiosk for k in self.slices[index]]

    def process_of(self, kiosk: str) -> int:
        return self.where[kiosk]

    def stop(self) -> None:
        """Every live process says goodbye (state online=false, reason shutdown) and ends."""
        for n, proc in enumerate(self.procs):
            if proc is None:
                continue
            pipe = self.pipes[n]
            if proc.is_alive() and pipe is not None:
                try:
                    with self._locks[n]:
                        pipe.send(("stop", {}))
                        pipe.poll(30)
                except (BrokenPipeError, OSError):
                    pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            self.procs[n] = self.pipes[n] = None

    def __enter__(self) -> FleetSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def every_message_kind(kiosk: SimKiosk) -> Iterator[Message]:
    """One of each message the simulator can send (for the schema test)."""
    yield kiosk.topics.state, kiosk.next_connection(), 1, True
    yield kiosk.topics.state, kiosk.birth(), 1, True
    yield kiosk.topics.health, kiosk.health(), 0, True
    for code in (*ALARM_DEVICE, "disk_low", "temp_high"):
        yield from kiosk.set_alarm(code, True)
    yield from kiosk.retained_alarms()
    for code in list(kiosk.alarms):
        yield from kiosk.set_alarm(code, False)
    yield from kiosk.set_mode("maintenance")
    yield kiosk.cmd_result("ping", "accepted")
    yield kiosk.cmd_result("ping", "succeeded", result={"pong": True})
    yield kiosk.cmd_result("reboot", "refused", code="cmd.expired")
    yield kiosk.topics.state, kiosk.shutdown(), 1, True
