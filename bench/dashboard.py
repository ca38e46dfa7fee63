# SPDX-License-Identifier: Apache-2.0
"""bench/dashboard: the fleet page with 1,000 kiosks, each figure against a floor measured in the same run.

The stack is the real one, on this machine: a private PostgreSQL cluster (as
the ``postgres`` user), Mosquitto, ``kiosk-ledger serve`` (ingest and the
history worker that keeps ``kiosk_status`` and the history tables),
``kiosk-ledger dashboard``, Debian's chromium driven by Playwright, and
1,000 light simulated kiosks (tests/dashboard/fleetsim.py: real MQTT 5
connections with Wills, retained births, health and alarms, signed records)
in four processes. A user made with ``kiosk-ledger users add`` logs in
through the login page.

Before measuring, the database is given a day of a 1,000-kiosk fleet, so the
queries run on realistic table sizes (``--hours``, default 24): health every
5 minutes (288,000 rows), a few connects per kiosk, alarm episodes, command
results and ``--tx-per-kiosk`` signed transaction records (default 120:
120,000 rows, spread over the day). That history is COPYed straight into the
tables, not sent through MQTT: the live part below measures the real path's
rate (the kiosks' retained births and health through the broker and the
history worker) and prints how long the day would have taken through it. The
rows are what the ledger and the history worker write (the records are
really signed and chained, and each kiosk's live records continue the
chain), except that the ledger's own timestamps are set to the day they
belong to. The present comes through the real path: every kiosk connects,
is born, sends health; some start with alarms (paper low or out, a printer
off line, a door open), some in maintenance, 2 % are killed (their Wills
make them offline) and 1 % are registered but never connect.

Printed, with the limit each is held to and why (each limit is a sum of
floors measured here, in this run, times an allowance):

A. **server time of ``GET /api/fleet``** (1,000 rows) p50/p99, sequential
   requests on one keep-alive connection, each round interleaved with one
   sample of each floor: (a) a trivial request to
   the same server (``GET /api/me``: the session check every API request
   pays), (b) a raw SELECT over psycopg of the same rows (the columns a
   fleet row needs, reduced in SQL), (c) ``json.dumps`` of the same
   response body (and gzip level 1 when the server sends it compressed, as
   it does to a browser, which the bench's client poses as). Budget:
   p99 <= 2 x (a + b + c p99). The answer is those rows, checked and
   encoded; building the row dicts costs about what fetching and encoding
   them does, hence twice. A query per kiosk (1,000 round trips) or an
   unbounded scan of ``tx`` lands far above. Today's transaction counts
   are timed and printed too, outside the floor: the server keeps them
   between requests.
   Beside it, because the day of history is there: a kiosk page's plots
   (``/api/kiosks/K/series?hours=24``, 50 kiosks) against the raw SELECTs of
   the same rows, with the same budget (not one of issue 17's figures).
B. **page render** of the fleet page in chromium, navigation start to the
   frame that paints the table with every row (a ``tr[data-kiosk]`` each),
   p50/p99 of warm loads, against a static page of the same size in the
   same browser: the page's own rendered DOM saved as HTML with its
   stylesheets and no script, served from a bare aiohttp server. Budget:
   p99 <= 3 x static p99 + the p99 of the two API requests the page must
   make (A). Building the same DOM from script costs about what the parser
   does; 3x leaves room for loading the modules and opening the event
   stream, while a render quadratic in rows is 10x and more at 1,000.
C. **live update latency**, an alarm raised (and cleared) at a kiosk to the
   frame that paints its row changed on the open fleet page, p50/p99,
   against the floors of each hop of that path: (a) raw MQTT, a paho QoS 1
   publish to a paho subscriber on the same broker; (b) a PostgreSQL
   commit with NOTIFY to a LISTENing connection; (c) a one-row SELECT
   (the dashboard reads the changed kiosk's row); (d) a server-sent event
   from a bare aiohttp server to an attribute change painted in the same
   browser (its own tab, brought to the front for each sample as the fleet
   page's is for each alarm). The floors are sampled after every alarm
   change, interleaved with them, so both see the same neighbours.
   Budget: p99 <= 2 x (a + b + c + d p99) + the history worker's batch
   cap (``history.batch_ms``: the longest a message waits for others to
   share its transaction, by design). Each hop's real work (validating
   and upserting several tables, building a fleet row, re-rendering a row
   and recounting the totals) costs at most about as much again as its
   floor. The floors' p99s are added, which is more than the p99 of their
   sum: the budget errs towards the stack. A breakdown (the alarm episode's
   ``updated_at``, the page's own EventSource arrivals) says which hop a
   slow figure comes from.

Times across processes are wall-clock (time.time() in the kiosk's process,
performance.timeOrigin + performance.now() in the page): one machine, one
clock. The bench prints the offset it sees between the two.

    .venv/bin/python bench/dashboard.py [--kiosks 1000] [--quick] [--parts ABC] [--requests 200]
                                        [--renders 20] [--alarms 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "ledger"))
sys.path.insert(0, str(ROOT / "tests" / "dashboard"))

import paho.mqtt.client as paho
import psycopg
from corekit import LedgerProcess, write_ledger_config
from fleetsim import ALARM_DEVICE, FleetSim, SimKiosk, make_fleet, session_record
from ledger import scalar, wait_for  # bench/ledger.py, beside this script
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pgcluster import PgCluster

from agent.runtime.alarms import SEVERITY
from agent.sim.devbroker import DevBroker, free_port
from agent.wire.txformat import record_hash
from fleet.keys import init_key
from fleet.ledger.config import HistoryConfig
from fleet.ledger.db import register_kiosk
from fleet.ledger.schema import migrate

FLEET = "bench"
USER, PASSWORD = "bench-viewer", "correct horse battery staple 17"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEZONE = "Asia/Shanghai"
SERVER_ALLOWANCE, RENDER_ALLOWANCE, LIVE_ALLOWANCE = 2.0, 3.0, 2.0


# -- small things ----------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p99": pct(values, 99), "n": len(values)}


def say(text: str) -> None:
    print(text, flush=True)


# -- a day of history, COPYed -----------------------------------------------------------------------

ALARM_EPISODES = ("paper_low", "paper_low", "paper_out", "door_open", "printer_offline", "scanner_offline",
                  "temp_high", "idcard_fault")


def backfill(dsn: str, kiosks: list[SimKiosk], *, hours: float, health_every_s: float, tx_per_kiosk: int,
             seed: int) -> dict[str, int]:
    """A day of the fleet's history, as the ledger and history worker would have written it; row counts.

    Each kiosk's records are signed and chained for real (its live records go on from there), its
    connects take bdSeq 1..n (its live connection the next), and ``received_at`` is the day's, not now.
    """
    rng = random.Random(seed)
    now = time.time()
    start = now - hours * 3600
    counts = {"tx": 0, "health_history": 0, "state_history": 0, "alarm_history": 0, "cmd_results": 0}

    def ts(t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, dt.UTC)

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY tx (kiosk, epoch, seq, id, fleet, hash, prev, kid, ts_ms, kind, has_evidence, payload, "
                      "received_at, linked_at, acked_at) FROM STDIN") as copy:
            for k in kiosks:
                assert k.ledger is not None
                times = sorted(rng.uniform(start, now - 60) for _ in range(tx_per_kiosk))
                for t in times:
                    data = session_record(k.rng, k.ledger.seq + 1)
                    data["ended"] = int(t * 1000)
                    data["started"] = data["ended"] - data["duration_ms"]
                    prev = k.ledger.prev
                    _topic, payload = k.ledger.record(data, ts_ms=int(t * 1000))
                    doc = json.loads(payload)
                    got = t + rng.uniform(0.05, 0.5)
                    copy.write_row((k.kiosk, k.ledger.epoch, k.ledger.seq, doc["id"], FLEET, record_hash(payload),
                                    prev, k.ledger.kid, int(t * 1000), "session", False, payload, ts(got), ts(got),
                                    ts(got + 0.2)))
                    counts["tx"] += 1
        with cur.copy("COPY epochs (kiosk, epoch, first_seen_at) FROM STDIN") as copy:
            for k in kiosks:
                assert k.ledger is not None
                copy.write_row((k.kiosk, k.ledger.epoch, ts(start)))
        with cur.copy("COPY health_history (kiosk, fleet, ts, mode, disk_free_mb, cpu_temp_c, outbox_backlog, "
                      "connects, rss_mb, payload, received_at) FROM STDIN") as copy:
            for k in kiosks:
                t = start + rng.uniform(0, health_every_s)
                while t < now - 60:
                    h = k.health("periodic")
                    h["ts"] = int(t * 1000)
                    copy.write_row((k.kiosk, FLEET, ts(t), h["mode"], h["system"]["disk_free_mb"],
                                    h["system"]["cpu_temp_c"], h["outbox"]["tx"]["unacked"], h["agent"]["connects"],
                                    h["agent"]["rss_mb"], json.dumps(h), ts(t + 0.05)))
                    counts["health_history"] += 1
                    t += health_every_s
        with cur.copy("COPY state_history (kiosk, fleet, ts, online, bd_seq, reason, mode, received_at) "
                      "FROM STDIN") as copy:
            for k in kiosks:
                # A few reconnects over the day: birth, then the Will (or a clean shutdown), then the next birth.
                connects = sorted(rng.uniform(start, now - 600) for _ in range(rng.choice((1, 1, 2, 3))))
                for n, t in enumerate(connects):
                    k.bd_seq += 1
                    copy.write_row((k.kiosk, FLEET, ts(t), True, k.bd_seq, None, "in_service", ts(t)))
                    if n + 1 < len(connects):
                        down = min(connects[n + 1] - 1, t + rng.uniform(600, 6 * 3600))
                        copy.write_row((k.kiosk, FLEET, ts(down), False, k.bd_seq, rng.choice(("will", "shutdown")),
                                        None, ts(down + 1)))
                    counts["state_history"] += 1 + (n + 1 < len(connects))
        with cur.copy("COPY alarm_history (kiosk, fleet, code, raised_at, cleared_at, severity, detail, device, "
                      "updated_at) FROM STDIN") as copy:
            for k in kiosks:
                for _ in range(rng.choice((0, 1, 2, 3))):
                    code = rng.choice(ALARM_EPISODES)
                    raised = rng.uniform(start, now - 3 * 3600)
                    cleared = raised + rng.uniform(30, 2 * 3600)
                    device = ALARM_DEVICE.get(code, ("system",))[0]
                    copy.write_row((k.kiosk, FLEET, code, ts(raised), ts(cleared), SEVERITY.get(code, "warning"),
                                    f"{device}: {code}", device, ts(cleared)))
                    counts["alarm_history"] += 1
        with cur.copy("COPY cmd_results (kiosk, fleet, name, correlation, status, code, message, result, ts, "
                      "received_at) FROM STDIN") as copy:
            for k in kiosks:
                for name, result in (("ping", {"pong": True}), ("selftest", {"passed": True, "devices": []})):
                    t = rng.uniform(start, now - 60)
                    correlation = os.urandom(8).hex()
                    for status, delay in (("accepted", 0.0), ("succeeded", 0.4)):
                        copy.write_row((k.kiosk, FLEET, name, correlation, status, None, None,
                                        json.dumps(result) if status == "succeeded" else None, ts(t + delay),
                                        ts(t + delay + 0.05)))
                        counts["cmd_results"] += 1
        conn.commit()
        conn.execute("ANALYZE")
    return counts


# -- the stack -------------------------------------------------------------------------------------

class Dashboard:
    """``kiosk-ledger dashboard`` in its own process."""

    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.log_path = workdir / "dashboard.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *argv: str) -> str:
        """``kiosk-ledger ARGV --config ...``; its output, or RuntimeError with it."""
        result = subprocess.run([sys.executable, "-m", "fleet.ledger.cli", *argv, "--config", str(self.config)],
                                cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kiosk-ledger {' '.join(argv)}: exit {result.returncode}\n{result.stdout}"
                               f"{result.stderr}")
        return result.stdout

    def start(self) -> Dashboard:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "fleet.ledger.cli", "dashboard", "--config",
                                          str(self.config)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kiosk-ledger dashboard exited {self.proc.returncode}:\n{self.log[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/login")
                return conn.getresponse().status == 200
            except OSError:
                return False
        wait_for("the dashboard answering /login", answers, 60, 0.2)
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Stack:
    """Everything under the bench, started in order; ``close`` stops it all."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir, self.args = workdir, args
        self.pg: PgCluster | None = None
        self.broker: DevBroker | None = None
        self.ledger: LedgerProcess | None = None
        self.dashboard: Dashboard | None = None
        self.sims: list[FleetSim] = []
        self.dsn = ""
        self.kiosks: list[SimKiosk] = []
        self.live: list[SimKiosk] = []          # connected for the whole run
        self.dying: list[SimKiosk] = []         # connected, then killed (kill -9: their Wills)
        self.never: list[SimKiosk] = []         # registered, never connected
        self.history_batch_ms = float(HistoryConfig().batch_ms)
        self.backfilled: dict[str, int] = {}
        self.real_path: dict[str, float] = {}

    def up(self) -> None:
        args = self.args
        self.pg = PgCluster().start()
        self.dsn = self.pg.create_database("dashboard")
        self.broker = DevBroker(self.workdir / "broker").start()
        self.kiosks = make_fleet(args.kiosks, FLEET, seed=args.seed, with_keys=True)
        with psycopg.connect(self.dsn) as conn:
            migrate(conn)
            for k in self.kiosks:
                assert k.ledger is not None
                register_kiosk(conn, k.kiosk, FLEET, k.ledger.public_key, source="bench")
        started = time.perf_counter()
        counts = backfill(self.dsn, self.kiosks, hours=args.hours, health_every_s=300.0,
                          tx_per_kiosk=args.tx_per_kiosk, seed=args.seed)
        say(f"history COPYed in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{name} {n:,}" for name, n in counts.items()))
        self.backfilled = counts

        key = init_key(self.workdir / "keys", "bench-backoffice")[0].private
        dash_port = free_port()
        extra = (f'\n[history]\nbatch_ms = {int(self.history_batch_ms)}\n'
                 f'\n[dashboard]\nlisten = "127.0.0.1:{dash_port}"\nsecure_cookies = false\n'
                 f'timezone = "{TIMEZONE}"\n')
        config = write_ledger_config(self.workdir / "ledger.toml", dsn=self.dsn, broker_url=self.broker.url,
                                     client_id="ledger-bench-1", key_file=key, fleet=FLEET, extra=extra)
        self.ledger = LedgerProcess(self.workdir, config).start()
        def ledger_up() -> bool:
            assert self.ledger is not None
            if not self.ledger.alive():
                raise RuntimeError(f"kiosk-ledger serve exited:\n{self.ledger_log()[-3000:]}")
            return "connected to the broker" in self.ledger_log()
        wait_for("the ledger connected", ledger_up, 60)
        self.dashboard = Dashboard(self.workdir, config, dash_port)
        password = self.workdir / "password"
        password.write_text(PASSWORD + "\n", encoding="utf-8")
        self.dashboard.cli("users", "add", USER, "--role", "viewer", "--password-file", str(password))
        self.dashboard.start()
        self.fleet_up()

    def ledger_log(self) -> str:
        return self.ledger.log if self.ledger is not None else ""

    def fleet_up(self) -> None:
        """The present, through the real path; prints the rate the history worker took it at."""
        assert self.broker is not None
        rng = random.Random(self.args.seed)
        n = len(self.kiosks)
        never = self.kiosks[n - max(1, n // 100):]
        dying = self.kiosks[n - max(1, n // 100) - max(1, n // 50):n - max(1, n // 100)]
        self.live = self.kiosks[:n - len(never) - len(dying)]
        for k in self.live:
            roll = rng.random()
            code = "paper_low" if roll < 0.04 else "paper_out" if roll < 0.05 else \
                "printer_offline" if roll < 0.06 else "door_open" if roll < 0.065 else None
            if code is not None:
                k.set_alarm(code, True)
            if rng.random() < 0.02:
                k.set_mode("maintenance")
        expected = len(self.live) + len(dying)
        started = time.perf_counter()
        interval = self.args.health_interval
        self.sims = [FleetSim(self.broker.port, self.live, health_interval_s=interval).start(),
                     FleetSim(self.broker.port, dying, health_interval_s=interval).start()]
        connected = time.perf_counter() - started
        wait_for(f"{expected} kiosks in kiosk_status with health", lambda: scalar(
            self.dsn, "SELECT count(*) FROM kiosk_status WHERE health_at IS NOT NULL") >= expected, 300, 0.2)
        took = time.perf_counter() - started
        say(f"{expected} kiosks connected in {connected:.1f} s, all in kiosk_status {took:.1f} s after the first "
            "connect (births, health, alarms through the broker and the history worker)")
        # The real path's rate: every live kiosk sends health at once; until the last is in health_history.
        before = scalar(self.dsn, "SELECT count(*) FROM health_history")
        at = self.sims[0].health_burst()
        wait_for("the health burst stored", lambda: scalar(
            self.dsn, "SELECT count(*) FROM health_history") >= before + len(self.live), 300, 0.05)
        newest = scalar(self.dsn, "SELECT extract(epoch FROM max(received_at)) FROM health_history")
        rate = len(self.live) / max(1e-3, float(newest) - at)
        history_rows = sum(self.backfilled.values()) - self.backfilled["tx"]
        self.real_path = {"health_burst": len(self.live), "msg_per_s": rate, "day_s": history_rows / rate}
        say(f"real path: {len(self.live)} health messages at once stored at {rate:.0f} msg/s; the "
            f"{history_rows:,} history rows COPYed above would have taken {history_rows / rate:.0f} s through it")
        self.sims[1].kill(0)
        wait_for("the killed kiosks offline", lambda: scalar(
            self.dsn, "SELECT count(*) FROM kiosk_status WHERE online IS false") >= len(dying), 60, 0.2)
        self.dying, self.never = dying, never
        # A few live records through the ledger: each continues its kiosk's COPYed chain, so a chain the COPY
        # got wrong would leave them pending or quarantined instead of linked.
        sample = self.live[:: max(1, len(self.live) // 10)][:10]
        for k in sample:
            self.sims[0].transactions(k.kiosk, 2)
        total = self.backfilled["tx"] + 2 * len(sample)
        wait_for("the live records linked", lambda: scalar(
            self.dsn, "SELECT count(*) FROM tx WHERE linked_at IS NOT NULL") >= total, 120, 0.2)
        quarantined = scalar(self.dsn, "SELECT count(*) FROM quarantine")
        if quarantined:
            raise RuntimeError(f"{quarantined} records quarantined: the COPYed chains are not what the ledger holds")
        say(f"{2 * len(sample)} live records of {len(sample)} kiosks linked onto their COPYed chains by the ledger, "
            "none quarantined")

    def check_fleet(self, doc: dict[str, Any]) -> None:
        """The figures are of the right page: /api/fleet shows the fleet this bench made."""
        rows = {r["kiosk"]: r for r in doc["kiosks"]}
        problems = []
        if len(rows) != len(self.kiosks):
            problems.append(f"{len(rows)} rows for {len(self.kiosks)} kiosks")
        for group, want in ((self.live, True), (self.dying, False), (self.never, None)):
            wrong = [k.kiosk for k in group if rows.get(k.kiosk, {}).get("online", "missing") is not want]
            if wrong:
                problems.append(f"online should be {want} for {wrong[:5]}")
        for k in self.live:
            shown = sorted(a["code"] for a in rows.get(k.kiosk, {}).get("active_alarms") or [])
            if shown != sorted(k.alarms):
                problems.append(f"{k.kiosk} shows alarms {shown}, has {sorted(k.alarms)}")
                break
        if problems:
            raise RuntimeError("/api/fleet does not show the simulated fleet: " + "; ".join(problems))

    def close(self) -> None:
        for sim in self.sims:
            sim.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.ledger is not None and self.ledger.alive():
            self.ledger.terminate()
        if self.broker is not None:
            self.broker.stop()
        if self.pg is not None:
            self.pg.stop()


# -- A. server time -----------------------------------------------------------------------------------

class Session:
    """A logged-in dashboard session over one keep-alive HTTP connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("POST", "/login", body=f"username={USER}&password={PASSWORD.replace(' ', '+')}",
                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                   "Origin": f"http://127.0.0.1:{port}"})
        response = self.conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
        match = re.search(r"kd_session=([^;]+)", cookie)
        if response.status != 303 or match is None:
            raise RuntimeError(f"login: {response.status} {cookie!r}")
        self.cookie = f"kd_session={match.group(1)}"
        self.gzipped = False

    def get(self, path: str) -> tuple[int, bytes]:
        """As a browser asks (gzip accepted); the body as sent, and whether it came compressed in ``gzipped``."""
        self.conn.request("GET", path, headers={"Cookie": self.cookie, "Accept-Encoding": "gzip"})
        response = self.conn.getresponse()
        body = response.read()
        self.gzipped = response.getheader("Content-Encoding") == "gzip"
        return response.status, gzip.decompress(body) if self.gzipped else body

    def timed(self, path: str, count: int) -> tuple[list[float], bytes]:
        times, body = [], b""
        for _ in range(count):
            t0 = time.perf_counter()
            status, body = self.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return times, body


# What a fleet row needs and no more, the jsonb reduced in SQL (the open alarms as text, the versions' two
# strings, the printer's last state), so the floor is the database's share and not a client's JSON parsing.
FLEET_ROWS_SQL = """
SELECT k.kiosk, s.site, s.online, s.online_since, s.last_seen, s.mode, s.active_alarms::text,
       s.versions ->> 'agent', s.versions ->> 'firmware', s.health -> 'peripherals' -> 'printer' ->> 'state'
  FROM kiosks k LEFT JOIN kiosk_status s USING (kiosk)
 WHERE k.fleet = %(fleet)s
 ORDER BY k.kiosk
"""
TX_TODAY_SQL = """
SELECT kiosk, count(*) FROM tx
 WHERE fleet = %(fleet)s AND kind = 'session' AND received_at >= %(since)s
   AND ts_ms >= %(from_ms)s AND ts_ms < %(to_ms)s
 GROUP BY kiosk
"""


class RawSelect:
    """The columns a fleet row needs, and today's transaction counts, read by psycopg without the server."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        today = dt.datetime.now(ZoneInfo(TIMEZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
        self.params = {"fleet": FLEET, "since": today - dt.timedelta(days=1),
                       "from_ms": int(today.timestamp() * 1000),
                       "to_ms": int((today + dt.timedelta(days=1)).timestamp() * 1000)}

    def timed(self) -> tuple[float, float]:
        """(rows ms, today's counts ms)."""
        t0 = time.perf_counter()
        rows = self.conn.execute(FLEET_ROWS_SQL, self.params).fetchall()
        t1 = time.perf_counter()
        self.conn.execute(TX_TODAY_SQL, self.params).fetchall()
        if not rows:
            raise RuntimeError("the raw SELECT found no rows")
        return (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000

    def close(self) -> None:
        self.conn.close()


def encode_like_server(doc: dict[str, Any], gzipped: bool) -> float:
    """ms to encode ``doc`` as the server answers (compact JSON, gzip level 1 when it compressed)."""
    t0 = time.perf_counter()
    encoded = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    if gzipped:
        gzip.compress(encoded, compresslevel=1)
    return (time.perf_counter() - t0) * 1000


def part_server(stack: Stack, requests: int) -> dict[str, Any]:
    assert stack.dashboard is not None
    session = Session(stack.dashboard.port)
    raw = RawSelect(stack.dsn)
    for _ in range(5):                          # warm: connections, caches, plans
        session.get("/api/me")
        raw.timed()
    _times, body = session.timed("/api/fleet", 5)
    doc = json.loads(body)
    stack.check_fleet(doc)
    rows, gzipped = len(doc["kiosks"]), session.gzipped
    # Interleaved, one of each per round: a burst of the neighbours' work lands on all of them alike.
    fleet_ms, me_ms, raw_ms, tx_ms, encode_ms = [], [], [], [], []
    for _ in range(requests):
        fleet_ms += session.timed("/api/fleet", 1)[0]
        me_ms += session.timed("/api/me", 1)[0]
        rows_ms, counts_ms = raw.timed()
        raw_ms.append(rows_ms)
        tx_ms.append(counts_ms)
        encode_ms.append(encode_like_server(doc, gzipped))
    raw.close()
    result = {"fleet": summary(fleet_ms), "me": summary(me_ms), "raw": summary(raw_ms), "encode": summary(encode_ms),
              "tx_today": summary(tx_ms), "rows": rows, "bytes": len(body), "totals": doc.get("totals")}
    floor = result["me"]["p99"] + result["raw"]["p99"] + result["encode"]["p99"]
    result["budget"] = SERVER_ALLOWANCE * floor
    result["ok"] = result["fleet"]["p99"] <= result["budget"]
    say(f"A. GET /api/fleet, {rows} rows, {len(body):,} bytes, {requests} rounds of sequential requests on one "
        f"connection, interleaved with the floors:\n"
        f"   /api/fleet            p50 {result['fleet']['p50']:7.1f} ms  p99 {result['fleet']['p99']:7.1f} ms\n"
        f"   (a) /api/me, trivial  p50 {result['me']['p50']:7.1f} ms  p99 {result['me']['p99']:7.1f} ms\n"
        f"   (b) raw SELECT        p50 {result['raw']['p50']:7.1f} ms  p99 {result['raw']['p99']:7.1f} ms"
        f"   (the fleet rows' columns, psycopg)\n"
        f"   (c) {'json.dumps+gzip' if gzipped else 'json.dumps body':<17} p50 {result['encode']['p50']:7.1f} ms  p99 "
        f"{result['encode']['p99']:7.1f} ms\n"
        f"   (today's counts, raw  p50 {result['tx_today']['p50']:7.1f} ms  p99 {result['tx_today']['p99']:7.1f} ms:"
        f" the server keeps them between requests ([dashboard] tx_today_refresh_s), not in the floor)\n"
        f"   p99 = {result['fleet']['p99'] / floor:.2f} x (a+b+c); "
        f"{result['fleet']['p99'] / result['me']['p99']:.1f} x trivial, "
        f"{result['fleet']['p99'] / result['raw']['p99']:.1f} x raw SELECT; "
        f"budget {SERVER_ALLOWANCE:.0f} x (a+b+c) = {result['budget']:.1f} ms: "
        f"{'ok' if result['ok'] else 'OVER BUDGET'}")
    return result


SERIES_SQL = (
    ("SELECT floor(extract(epoch FROM ts))::bigint, disk_free_mb, cpu_temp_c, outbox_backlog, connects "
     "FROM health_history WHERE kiosk = %(k)s AND fleet = %(f)s AND ts >= %(s)s ORDER BY ts"),
    ("SELECT ts_ms / 3600000, count(*) FROM tx WHERE kiosk = %(k)s AND fleet = %(f)s AND received_at >= %(s)s "
     "AND kind = 'session' GROUP BY 1 ORDER BY 1"),
    "SELECT ts, online FROM state_history WHERE kiosk = %(k)s AND fleet = %(f)s AND ts >= %(s)s ORDER BY ts",
)


def part_kiosk_series(stack: Stack, me: dict[str, float], count: int) -> dict[str, Any]:
    """A kiosk page's plots over a day of history: ``/series?hours=24`` against the raw SELECTs of its rows.

    Not one of issue 17's figures: printed because the day of history is there, with the same budget as A.
    """
    assert stack.dashboard is not None
    session = Session(stack.dashboard.port)
    chosen = random.Random(stack.args.seed + 2).sample(stack.live, min(count, len(stack.live)))
    api_ms, raw_ms, points = [], [], 0
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        for k in chosen:
            t0 = time.perf_counter()
            status, body = session.get(f"/api/kiosks/{k.kiosk}/series?hours=24")
            api_ms.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"series of {k.kiosk}: {status} {body[:200]!r}")
            points += len(json.loads(body)["health"]["t"])
            t0 = time.perf_counter()
            for sql in SERIES_SQL:
                conn.execute(sql, {"k": k.kiosk, "f": FLEET, "s": since}).fetchall()
            raw_ms.append((time.perf_counter() - t0) * 1000)
    result = {"series": summary(api_ms), "raw": summary(raw_ms), "points": points / len(chosen)}
    floor = me["p99"] + result["raw"]["p99"]
    result["budget"] = SERVER_ALLOWANCE * floor
    result["ok"] = result["series"]["p99"] <= result["budget"]
    say(f"   a kiosk's plots, GET /api/kiosks/K/series?hours=24 ({result['points']:.0f} health points each, "
        f"{len(chosen)} kiosks): p50 {result['series']['p50']:.1f} ms, p99 {result['series']['p99']:.1f} ms; raw "
        f"SELECTs of its rows p50 {result['raw']['p50']:.1f} ms, p99 {result['raw']['p99']:.1f} ms; p99 = "
        f"{result['series']['p99'] / floor:.2f} x (trivial + raw); budget {SERVER_ALLOWANCE:.0f} x = "
        f"{result['budget']:.1f} ms: {'ok' if result['ok'] else 'OVER BUDGET'}")
    return result


# -- a bare aiohttp server: the static page and the bare event stream ------------------------------------

class BareServer:
    """Static files and a server-sent event stream pushed on demand, in a thread of this process."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.queues: list[asyncio.Queue[str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-server", daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        async def static(request: web.Request) -> web.StreamResponse:
            found = self.files.get(request.path)
            if found is None:
                raise web.HTTPNotFound()
            return web.Response(body=found[0], content_type=found[1])

        async def events(_request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
            await response.prepare(_request)
            queue: asyncio.Queue[str] = asyncio.Queue()
            self.queues.append(queue)
            try:
                while True:
                    data = await queue.get()
                    await response.write(f"event: kiosk\ndata: {data}\n\n".encode())
            finally:
                self.queues.remove(queue)

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/events", events)
            app.router.add_get("/{tail:.*}", static)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())

    def start(self) -> BareServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the bare server did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, data: str) -> float:
        """Send ``data`` to every open stream; time.time() just before."""
        at = time.time()

        def send() -> None:
            for queue in self.queues:
                queue.put_nowait(data)
        self.loop.call_soon_threadsafe(send)
        return at


# -- B. page render ------------------------------------------------------------------------------------

# Installed before any of the page's scripts: the frame that paints the table with every row (a
# ``tr[data-kiosk]`` each). The same script times the fleet page and its static copy: the condition is the
# rows, not who made them.
RENDER_TIMER = """(() => {
    const bench = window.__bench = {rendered: 0, painted: 0, expected: %d};
    const done = () => document.querySelectorAll('tr[data-kiosk]').length >= bench.expected;
    const check = () => {
        if (!bench.rendered && done()) {
            bench.rendered = performance.now();
            requestAnimationFrame(() => { bench.painted = performance.now(); });
        }
    };
    new MutationObserver(check).observe(document, {childList: true, subtree: true});
    document.addEventListener('DOMContentLoaded', check);
})();"""


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def login(page: Any, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button, form input[type=submit]").first.click()
    page.wait_for_url(re.compile(r".*/(\?.*)?$"), timeout=30_000)


def timed_load(page: Any, url: str) -> float:
    page.goto(url, wait_until="commit")
    page.wait_for_function("() => window.__bench && window.__bench.painted > 0", timeout=60_000)
    return float(page.evaluate("() => window.__bench.painted"))


# Where a fleet page load spends its time (the page's own marks, fleet.js: fleet-data, fleet-rendered;
# the resource timing of its /api/fleet request); null where a mark is missing.
LOAD_BREAKDOWN = """() => {
    const mark = (name) => { const e = performance.getEntriesByName(name); return e.length ? e[0].startTime : null; };
    const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/fleet'));
    return {request: api.length ? api[0].requestStart : null, response: api.length ? api[0].responseEnd : null,
            data: mark('fleet-data'), rendered: mark('fleet-rendered'), painted: window.__bench.painted};
}"""


def static_copies(page: Any, bare: BareServer, base: str) -> tuple[str, str]:
    """The rendered fleet page, same DOM and stylesheets, no script of its own, twice on the bare server.

    ``/fleet-static.html``: the DOM as an HTML file (the parser builds it, painting as it goes);
    ``/fleet-onepass.html``: an empty body and one script file that sets the same body in one assignment
    (built and laid out at once: the browser's floor for any page that shows this DOM).
    """
    html = page.content()
    html = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S | re.I)
    # No script, so none of the page's module preloads either.
    html = re.sub(r"<link\b[^>]*rel=\"(?:modulepreload|preload)\"[^>]*>", "", html, flags=re.I)
    for href in re.findall(r'<link[^>]+rel="stylesheet"[^>]*href="([^"]+)"', html) + \
            re.findall(r'<link[^>]+href="([^"]+)"[^>]*rel="stylesheet"', html):
        response = page.request.get(base + href if href.startswith("/") else f"{base}/{href}")
        bare.files[href if href.startswith("/") else f"/{href}"] = (response.body(), "text/css")
    bare.files["/fleet-static.html"] = (html.encode(), "text/html")
    body = str(page.evaluate("() => document.body.innerHTML"))
    head = html[:html.lower().index("<body")]
    bare.files["/fleet-onepass.html"] = ((head + '<body><script src="/fleet-onepass.js"></script></body></html>')
                                         .encode(), "text/html")
    bare.files["/fleet-onepass.js"] = (f"document.body.innerHTML = {json.dumps(body)};\n".encode(), "text/javascript")
    return f"{bare.url}/fleet-static.html", f"{bare.url}/fleet-onepass.html"


def part_render(stack: Stack, bare: BareServer, renders: int, api: dict[str, Any] | None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright
    assert stack.dashboard is not None
    base = stack.dashboard.url
    expected = int(scalar(stack.dsn, "SELECT count(*) FROM kiosks WHERE fleet = %s", (FLEET,)))
    with sync_playwright() as p:
        browser = launch_browser(p)
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        context.add_init_script(RENDER_TIMER % expected)
        page = context.new_page()
        login(page, base)
        timed_load(page, f"{base}/")                        # warm: modules and stylesheets cached
        static_url, onepass_url = static_copies(page, bare, base)
        timed_load(page, static_url)
        timed_load(page, onepass_url)
        page_ms, static_ms, onepass_ms = [], [], []
        phases: dict[str, list[float]] = {"before": [], "fetch": [], "draw": [], "paint": []}
        for _ in range(renders):                            # interleaved: the machine is shared
            page_ms.append(timed_load(page, f"{base}/"))
            marks = page.evaluate(LOAD_BREAKDOWN)
            if None not in marks.values():
                phases["before"].append(marks["request"])
                phases["fetch"].append(marks["response"] - marks["request"])
                phases["draw"].append(marks["rendered"] - marks["data"])
                phases["paint"].append(marks["painted"] - marks["rendered"])
            static_ms.append(timed_load(page, static_url))
            onepass_ms.append(timed_load(page, onepass_url))
        size = len(bare.files["/fleet-static.html"][0])
        browser.close()
    result = {"page": summary(page_ms), "static": summary(static_ms), "onepass": summary(onepass_ms),
              "rows": expected, "html_bytes": size}
    result["phases"] = {name: summary(values) for name, values in phases.items() if values}
    floor = min(result["static"]["p99"], result["onepass"]["p99"])
    api_p99 = (api["fleet"]["p99"] + api["me"]["p99"]) if api else 0.0
    result["budget"] = RENDER_ALLOWANCE * floor + api_p99
    result["ok"] = result["page"]["p99"] <= result["budget"]
    say(f"B. the fleet page in chromium, {expected} rows (its DOM as static HTML: {size:,} bytes), {renders} warm "
        f"loads each, interleaved; navigation start to the frame painting every row:\n"
        f"   fleet page              p50 {result['page']['p50']:7.1f} ms  p99 {result['page']['p99']:7.1f} ms\n"
        + (f"     where (p50): navigation -> /api/fleet asked {result['phases']['before']['p50']:.0f} ms (modules, "
           f"/api/me), its answer {result['phases']['fetch']['p50']:.0f} ms, building the DOM (fleet.js drawAll) "
           f"{result['phases']['draw']['p50']:.0f} ms, -> painted {result['phases']['paint']['p50']:.0f} ms\n"
           if len(result["phases"]) == 4 else "     (the page's fleet-data / fleet-rendered marks are missing)\n")
        + f"   static page, same DOM   p50 {result['static']['p50']:7.1f} ms  p99 {result['static']['p99']:7.1f} ms"
        f"   (parsed as it arrives)\n"
        f"   same DOM, one innerHTML p50 {result['onepass']['p50']:7.1f} ms  p99 {result['onepass']['p99']:7.1f} ms"
        f"   (one script file sets the body)\n"
        f"   p99 = {result['page']['p99'] / result['static']['p99']:.2f} x static, "
        f"{result['page']['p99'] / result['onepass']['p99']:.2f} x one pass; budget {RENDER_ALLOWANCE:.0f} x the "
        f"lower + the page's API requests ({api_p99:.1f} ms, A) = {result['budget']:.1f} ms: "
        f"{'ok' if result['ok'] else 'OVER BUDGET'}")
    return result


# -- C. live update latency --------------------------------------------------------------------------------

# Watches one row at a time: when its data-alarms attribute says what the bench waits for, the time of the
# frame that paints it (wall clock, comparable with time.time() in the kiosk's process).
LIVE_WATCH = """() => {
    const live = window.__live = {watch: null, seen: 0, painted: 0};
    const check = () => {
        const w = live.watch;
        if (!w || live.seen) return;
        const row = document.querySelector(`[data-kiosk="${w.kiosk}"]`);
        if (!row) return;
        const codes = (row.getAttribute('data-alarms') || '').split(/\\s+/);
        if (codes.includes(w.code) === w.active) {
            live.seen = performance.timeOrigin + performance.now();
            requestAnimationFrame(() => { live.painted = performance.timeOrigin + performance.now(); });
        }
    };
    new MutationObserver(check).observe(document.body, {childList: true, subtree: true, attributes: true,
                                                        attributeFilter: ['data-alarms']});
    live.check = check;
}"""


class MqttFloor:
    """Raw paho QoS 1 publish to a paho subscriber on the same broker."""

    def __init__(self, port: int) -> None:
        self.got: dict[int, float] = {}
        self.n = 0
        ready = threading.Event()
        self.clients = []
        for name in ("floor-sub", "floor-pub"):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                            protocol=MQTTProtocolVersion.MQTTv5)
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients.append(c)
        self.sub, self.pub = self.clients
        self.sub.on_message = lambda _c, _u, msg: self.got.__setitem__(int(msg.payload), time.time())
        self.sub.on_subscribe = lambda *_a: ready.set()
        self.sub.subscribe("bench/floor", qos=1)
        if not ready.wait(10):
            raise RuntimeError("no SUBACK for bench/floor")

    def sample(self) -> float:
        """ms from publish to delivery."""
        self.n += 1
        n = self.n
        t0 = time.time()
        self.pub.publish("bench/floor", str(n).encode(), qos=1)
        wait_for("the floor message", lambda: n in self.got, 10, 0.0005)
        return (self.got[n] - t0) * 1000

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


class NotifyFloor:
    """A commit with NOTIFY to a LISTENing connection, and a one-row SELECT of kiosk_status."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.got: dict[str, float] = {}
        self.n = 0
        self._stop = threading.Event()
        listening = threading.Event()

        def listen() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("LISTEN bench_floor")
                listening.set()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.2, stop_after=1):
                        self.got[note.payload] = time.time()

        self._thread = threading.Thread(target=listen, name="notify-floor", daemon=True)
        self._thread.start()
        if not listening.wait(10):
            raise RuntimeError("the floor's LISTEN connection did not start")
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("CREATE TABLE bench_floor (n integer PRIMARY KEY, at timestamptz)")
        self.kiosks = [r[0] for r in self.conn.execute("SELECT kiosk FROM kiosk_status").fetchall()]

    def sample(self) -> tuple[float, float]:
        """(ms from commit start to the notification, ms of a one-row SELECT)."""
        self.n += 1
        key = str(self.n)
        t0 = time.time()
        with self.conn.transaction():
            self.conn.execute("INSERT INTO bench_floor VALUES (%s, now())", (self.n,))
            self.conn.execute("SELECT pg_notify('bench_floor', %s)", (key,))
        wait_for("the notification", lambda: key in self.got, 10, 0.0005)
        notify_ms = (self.got[key] - t0) * 1000
        t1 = time.perf_counter()
        self.conn.execute("SELECT kiosk, site, online, mode, active_alarms, versions FROM kiosk_status "
                          "WHERE kiosk = %s", (self.kiosks[self.n % len(self.kiosks)],)).fetchall()
        return notify_ms, (time.perf_counter() - t1) * 1000

    def close(self) -> None:
        self.conn.execute("DROP TABLE bench_floor")
        self.conn.close()
        self._stop.set()
        self._thread.join(5)


SSE_FLOOR_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>sse floor</title></head>
<body><table><tbody><tr data-kiosk="floor" data-alarms=""><td>floor</td></tr></tbody></table>
<script src="/sse-floor.js"></script></body></html>"""
SSE_FLOOR_JS = b"""const source = new EventSource('/events');
source.addEventListener('kiosk', (e) => {
    document.querySelector('[data-kiosk="floor"]').setAttribute('data-alarms', e.data);
});
source.onopen = () => { window.__open = true; };"""


def watch_change(page: Any, kiosk: str, code: str, active: bool) -> None:
    """From now on, note the frame that paints ``kiosk``'s row with ``code`` among its alarms (or not)."""
    page.evaluate("(w) => { window.__live.watch = w; window.__live.seen = 0; window.__live.painted = 0; }",
                  {"kiosk": kiosk, "code": code, "active": active})
    if page.evaluate("() => { window.__live.check(); return window.__live.seen; }"):
        raise RuntimeError(f"{kiosk}'s row already shows what the bench is about to cause ({code}: {active})")


def painted(page: Any, what: str) -> float:
    """Wall-clock seconds of the frame ``watch_change`` waited for."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.wait_for_function("() => window.__live.painted > 0", timeout=30_000)
    except PlaywrightTimeout:
        raise RuntimeError(f"the page never showed {what} (30 s)") from None
    return float(page.evaluate("() => window.__live.painted")) / 1000


class SseFloor:
    """A server-sent event from the bare server to an attribute painted in its own tab of the same browser."""

    def __init__(self, page: Any, bare: BareServer) -> None:
        self.page, self.bare, self.n = page, bare, 0
        bare.files["/sse-floor.html"] = (SSE_FLOOR_PAGE, "text/html")
        bare.files["/sse-floor.js"] = (SSE_FLOOR_JS, "text/javascript")
        page.goto(f"{bare.url}/sse-floor.html")
        page.evaluate(LIVE_WATCH)
        page.wait_for_function("() => window.__open === true", timeout=10_000)

    def sample(self) -> float:
        """ms from the server's write to the frame that paints the change (its tab in front, as the page's is)."""
        self.page.bring_to_front()
        self.n += 1
        code = f"c{self.n}"
        watch_change(self.page, "floor", code, True)
        at = self.bare.push(code)
        return (painted(self.page, "the bare event") - at) * 1000


def clock_offset(page: Any) -> float:
    """The page's wall clock minus this process's, bounded by the round trip (ms)."""
    before = time.time() * 1000
    page_now = float(page.evaluate("() => performance.timeOrigin + performance.now()"))
    after = time.time() * 1000
    return page_now - (before + after) / 2


# Where the time goes: each ``event: kiosk`` the page's own EventSource receives, by kiosk (wall clock).
SSE_ARRIVALS = """(() => {
    const arrivals = window.__sse = {};
    const Original = window.EventSource;
    window.EventSource = class extends Original {
        constructor(...args) {
            super(...args);
            this.addEventListener('kiosk', (event) => {
                try {
                    const kiosk = JSON.parse(event.data).kiosk;
                    (arrivals[kiosk] = arrivals[kiosk] || []).push(performance.timeOrigin + performance.now());
                } catch (e) { /* the bare stream's events are not JSON */ }
            });
        }
    };
})();"""


def last_between(times: list[float], after: float, before: float) -> float | None:
    """The newest of ``times`` in [after, before]: the event that changed the row (an earlier one, for the
    same kiosk, may have carried a state from before the alarm)."""
    inside = [t for t in times if after <= t <= before]
    return max(inside) if inside else None


FLOOR_SAMPLES = 3        # of each floor after every alarm change, interleaved with them


def part_live(stack: Stack, bare: BareServer, alarms: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright
    assert stack.dashboard is not None and stack.broker is not None
    base = stack.dashboard.url
    rng = random.Random(stack.args.seed + 1)
    quiet = [k for k in stack.live if not k.alarms and k.mode == "in_service"]
    chosen = rng.sample(quiet, min(alarms, len(quiet)))
    sim = stack.sims[0]
    raise_ms: list[float] = []
    clear_ms: list[float] = []
    mqtt_ms: list[float] = []
    notify_ms: list[float] = []
    select_ms: list[float] = []
    sse_ms: list[float] = []
    stored_ms: list[float] = []
    to_page_ms: list[float] = []
    to_paint_ms: list[float] = []
    mqtt, notify = MqttFloor(stack.broker.port), NotifyFloor(stack.dsn)
    with sync_playwright() as p, psycopg.connect(stack.dsn, autocommit=True) as conn:
        browser = launch_browser(p)
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        context.add_init_script(SSE_ARRIVALS)
        sse = SseFloor(context.new_page(), bare)     # its own tab, beside the fleet page
        page = context.new_page()
        login(page, base)
        page.goto(f"{base}/")
        page.wait_for_function("(n) => document.querySelectorAll('[data-kiosk]').length >= n",
                               arg=len(stack.kiosks), timeout=60_000)
        page.evaluate(LIVE_WATCH)
        offset = statistics.median(clock_offset(page) for _ in range(5))
        for k in chosen:
            code = rng.choice(("door_open", "paper_out", "printer_offline"))
            for active, into in ((True, raise_ms), (False, clear_ms)):
                page.bring_to_front()     # frames are painted as in the tab a manager looks at
                watch_change(page, k.kiosk, code, active)
                at = sim.alarm(k.kiosk, code, active=active)
                assert at is not None
                done = painted(page, f"{k.kiosk} {code} {'raised' if active else 'cleared'}")
                into.append((done - at) * 1000)
                # The breakdown: the episode's updated_at (the history worker's transaction), the event for
                # the kiosk that changed the row at the page, the paint.
                row = conn.execute("SELECT extract(epoch FROM updated_at) FROM alarm_history WHERE kiosk = %s "
                                   "AND code = %s ORDER BY raised_at DESC LIMIT 1", (k.kiosk, code)).fetchone()
                arrivals, seen = page.evaluate("(k) => [window.__sse[k] || [], window.__live.seen]", k.kiosk)
                event = last_between([t / 1000 for t in arrivals], at, seen / 1000)
                if row is not None and event is not None:
                    stored_ms.append((float(row[0]) - at) * 1000)
                    to_page_ms.append((event - float(row[0])) * 1000)
                    to_paint_ms.append((done - event) * 1000)
                for _ in range(FLOOR_SAMPLES):
                    mqtt_ms.append(mqtt.sample())
                    notified, selected = notify.sample()
                    notify_ms.append(notified)
                    select_ms.append(selected)
                    sse_ms.append(sse.sample())
        browser.close()
    mqtt.close()
    notify.close()
    both = raise_ms + clear_ms
    result = {"live": summary(both), "raise": summary(raise_ms), "clear": summary(clear_ms), "mqtt": summary(mqtt_ms),
              "notify": summary(notify_ms), "select": summary(select_ms), "sse": summary(sse_ms),
              "offset_ms": offset, "batch_ms": stack.history_batch_ms}
    for name, values in (("stored", stored_ms), ("to_page", to_page_ms), ("to_paint", to_paint_ms)):
        result[name] = summary(values) if values else {"p50": float("nan"), "p99": float("nan"), "n": 0}
    floor = sum(result[k]["p99"] for k in ("mqtt", "notify", "select", "sse"))
    result["budget"] = LIVE_ALLOWANCE * floor + stack.history_batch_ms
    result["ok"] = result["live"]["p99"] <= result["budget"]
    say(f"C. live update: an alarm raised or cleared at a kiosk to the frame painting its row changed on the open "
        f"fleet page ({len(chosen)} kiosks, raise and clear each, {FLOOR_SAMPLES} samples of each floor after every "
        f"change; the page's clock is {offset:+.2f} ms off this one):\n"
        f"   alarm -> row painted  p50 {result['live']['p50']:7.1f} ms  p99 {result['live']['p99']:7.1f} ms"
        f"   (raise p50 {result['raise']['p50']:.1f} / p99 {result['raise']['p99']:.1f}, clear p50 "
        f"{result['clear']['p50']:.1f} / p99 {result['clear']['p99']:.1f})\n"
        f"     where: kiosk -> history row updated   p50 {result['stored']['p50']:6.1f} ms  p99 "
        f"{result['stored']['p99']:6.1f} ms (history.batch_ms {stack.history_batch_ms:.0f})\n"
        f"            -> its event at the page       p50 {result['to_page']['p50']:6.1f} ms  p99 "
        f"{result['to_page']['p99']:6.1f} ms\n"
        f"            -> row painted                 p50 {result['to_paint']['p50']:6.1f} ms  p99 "
        f"{result['to_paint']['p99']:6.1f} ms\n"
        f"   (a) raw MQTT QoS 1    p50 {result['mqtt']['p50']:7.2f} ms  p99 {result['mqtt']['p99']:7.2f} ms\n"
        f"   (b) commit+NOTIFY     p50 {result['notify']['p50']:7.2f} ms  p99 {result['notify']['p99']:7.2f} ms\n"
        f"   (c) one-row SELECT    p50 {result['select']['p50']:7.2f} ms  p99 {result['select']['p99']:7.2f} ms\n"
        f"   (d) bare SSE -> paint p50 {result['sse']['p50']:7.2f} ms  p99 {result['sse']['p99']:7.2f} ms\n"
        f"   p99 = {result['live']['p99'] / result['mqtt']['p99']:.0f} x raw MQTT, "
        f"{result['live']['p99'] / floor:.1f} x the hops' floors (a+b+c+d = {floor:.1f} ms); budget "
        f"{LIVE_ALLOWANCE:.0f} x floors + history.batch_ms {stack.history_batch_ms:.0f} = {result['budget']:.1f} ms: "
        f"{'ok' if result['ok'] else 'OVER BUDGET'}")
    return result


# -- the run -------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiosks", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0, help="history backfilled")
    parser.add_argument("--tx-per-kiosk", type=int, default=120, help="transaction records per kiosk in that time")
    parser.add_argument("--health-interval", type=float, default=300.0, help="live health interval (the agent's)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--renders", type=int, default=20, help="page loads of each kind (B)")
    parser.add_argument("--alarms", type=int, default=30, help="kiosks raising and clearing an alarm (C)")
    parser.add_argument("--parts", default="ABC")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--quick", action="store_true", help="a small run (smoke test of the bench itself)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.kiosks, args.tx_per_kiosk, args.hours, args.requests, args.renders, args.alarms = 100, 20, 6, 50, 5, 8
    if not Path(CHROMIUM).exists():
        say(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)")
        return 2
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="bench-dashboard-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"bench/dashboard: {args.kiosks} kiosks, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"work in {workdir}")
    stack = Stack(workdir, args)
    bare = BareServer().start()
    failures = []
    figures: dict[str, Any] = {"kiosks": args.kiosks, "cores": os.cpu_count(), "load_before": os.getloadavg()[0]}
    try:
        stack.up()
        figures["backfilled"], figures["real_path"] = stack.backfilled, stack.real_path
        api = part_server(stack, args.requests) if "A" in args.parts else None
        if api is not None:
            figures["A"] = api
            if not api["ok"]:
                failures.append("A: /api/fleet p99")
            figures["A_series"] = series = part_kiosk_series(stack, api["me"], min(50, len(stack.live)))
            if not series["ok"]:
                failures.append("A: a kiosk's series p99")
        if "B" in args.parts:
            figures["B"] = render = part_render(stack, bare, args.renders, api)
            if not render["ok"]:
                failures.append("B: page render p99")
        if "C" in args.parts:
            figures["C"] = live = part_live(stack, bare, args.alarms)
            if not live["ok"]:
                failures.append("C: live update p99")
    except Exception:
        for name, text in (("ledger", stack.ledger_log()), ("dashboard", stack.dashboard.log if stack.dashboard
                                                              else "")):
            say(f"--- {name} log (tail) ---\n{text[-3000:]}")
        raise
    finally:
        stack.close()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"load after the run {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        figures["load_after"], figures["failures"] = os.getloadavg()[0], failures
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n", encoding="utf-8")
    if failures:
        say("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
