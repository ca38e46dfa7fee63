# SPDX-License-Identifier: Apache-2.0
"""``make run-backoffice``: the back office on this machine, with three simulated kiosks, until Ctrl-C.

What a developer or a fleet manager trying the dashboard needs, each part
the real program: a private PostgreSQL cluster, a Mosquitto, ``kiosk-ledger
migrate``, ``kiosk-ledger serve`` (ingest, acknowledgements, history),
``kiosk-ledger dashboard`` with an ``admin`` user, and three ``kiosk-agent
run`` on simulated hardware (two sites, simulated citizens so transactions
flow), each registered with the ledger from its commissioning line as a
real kiosk is. Every step is one of the CLIs a fleet office runs, run here
as a subprocess; this script only sequences them and stops them in order.

Everything lives under ``.run/backoffice/`` and is kept across runs: the
cluster (``pg/``; as root it runs as the ``postgres`` user), the ports
(``*-port``), the keys (``keys/``), the ledger's configuration
(``ledger.toml``), the admin's password (``admin-password``, 0600, made on
the first run), and each kiosk's configuration, key and state
(``kiosks/<id>/``). Ctrl-C (or SIGTERM) stops the kiosks (they publish
that they go offline), the dashboard and the ledger, then the broker and
PostgreSQL.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import http.client
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from agent.config import load_config
from agent.control.commands import EX_TEMPFAIL
from agent.sim.devbroker import DevBroker, find_mosquitto
from agent.sim.devrun import kept_port, write_sim_config
from agent.wire.sealing import load_private_key, public_key_b64
from devtools.pgcluster import PgCluster, PgClusterError, find_pg_bin

__all__ = ["KIOSKS", "FLEET", "ADMIN", "main"]

FLEET = "demo"
ADMIN = "admin"
DATABASE = "ledger"
OPERATOR_KEY = "dev-admin"          # kioskctl cmd: trusted by the kiosks with role admin
LEDGER_KEY = "ledger-1"             # the ledger's tx/ack and tx-resend (role backoffice)
EVIDENCE_KEY = "dev-evidence.pem"   # kioskctl unseal
STOP_WAIT_S = 15.0                  # each process's clean stop, before it is killed


@dataclasses.dataclass(frozen=True)
class KioskSpec:
    id: str
    site: str


KIOSKS = (KioskSpec("dongcheng-1", "Dongcheng post office"), KioskSpec("dongcheng-2", "Dongcheng post office"),
          KioskSpec("xicheng-1", "Xicheng post office"))


class SetupError(Exception):
    """A step of the set-up failed; the message says which and shows its output."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived during the set-up."""


# -- child processes ------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _stop_with_parent() -> None:
    # Runs in the child before exec: if this script dies without stopping it (kill -9), the kernel sends it
    # SIGTERM, so a killed run leaves no agent, ledger or dashboard behind.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One long-running program in its own session (Ctrl-C is for this script), its output in ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                         preexec_fn=_stop_with_parent)
        return self

    def new_output(self) -> str:
        """What it logged since this start."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_WAIT_S) -> int | None:
        """Its exit status once stopped; killed (its whole process group) if SIGTERM was not enough."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} did not stop within {timeout:g} s of SIGTERM: killed (log: {self.log})", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


# -- set-up steps ---------------------------------------------------------------------------------------

def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_cli(*argv: str, timeout: float = 120.0) -> str:
    """Run one of the fleet office's commands to the end; its stdout, or SetupError with its output."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{shlex.join(argv)}: no answer within {timeout:g} s") from None
    if done.returncode != 0:
        raise SetupError(f"{shlex.join(argv)}: exit {done.returncode}\n{(done.stdout + done.stderr).strip()}")
    return done.stdout


@dataclasses.dataclass(frozen=True)
class Keys:
    operator: Path          # kioskctl cmd (the kiosks trust it as admin)
    ledger: Path            # kiosk-ledger serve's acks.key_file (the kiosks trust it as backoffice)
    evidence: Path          # kioskctl unseal
    trust: str              # the agent.toml lines that trust them
    created: bool


def ensure_keys(keys_dir: Path) -> Keys:
    """The development keys, made with kioskctl on the first run (in parallel: each is a Python start-up)."""
    wanted = {
        keys_dir / f"{OPERATOR_KEY}.key": [_bin("kioskctl"), "keys", "init", "--dir", str(keys_dir), "--id",
                                           OPERATOR_KEY, "--role", "admin", "--json"],
        keys_dir / f"{LEDGER_KEY}.key": [_bin("kioskctl"), "keys", "init", "--dir", str(keys_dir), "--id", LEDGER_KEY,
                                         "--role", "backoffice", "--json"],
        keys_dir / EVIDENCE_KEY: [_bin("kioskctl"), "evidence-keygen", "--out", str(keys_dir / EVIDENCE_KEY)],
    }
    missing = [argv for path, argv in wanted.items() if not path.exists()]
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _run_all(missing)
    operator_b64 = (keys_dir / f"{OPERATOR_KEY}.pub").read_text(encoding="ascii").strip()
    ledger_b64 = (keys_dir / f"{LEDGER_KEY}.pub").read_text(encoding="ascii").strip()
    evidence_b64 = public_key_b64(load_private_key(keys_dir / EVIDENCE_KEY))
    trust = (f"# make run-backoffice: the development keys in {keys_dir}\n"
             f'[[commands.operators]]\nid = "{OPERATOR_KEY}"\npublic_key = "{operator_b64}"\nrole = "admin"\n\n'
             f'[[commands.operators]]\nid = "{LEDGER_KEY}"\npublic_key = "{ledger_b64}"\nrole = "backoffice"\n\n'
             f'[evidence]\nrecipient_public_key = "{evidence_b64}"\nack_public_keys = ["{ledger_b64}"]\n')
    return Keys(keys_dir / f"{OPERATOR_KEY}.key", keys_dir / f"{LEDGER_KEY}.key", keys_dir / EVIDENCE_KEY, trust,
                bool(missing))


def _run_all(commands: list[list[str]]) -> None:
    if not commands:
        return
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        for future in [pool.submit(run_cli, *argv) for argv in commands]:
            future.result()


def ensure_password(path: Path) -> tuple[str, bool]:
    """The admin's password from ``path`` (0600), a random one written there on the first run; and whether new."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0]:
            return lines[0], False
        path.unlink()
    password = secrets.token_urlsafe(15)        # 20 characters; the dashboard asks for at least 12
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return password, True


_SHELL_SAFE = re.compile(r"^[^\s'\"$`\\;&|<>]+$")


def write_ledger_config(path: Path, *, dsn: str, broker_url: str, dashboard_port: int, keys: Keys) -> str:
    """``ledger.toml`` for ``serve`` and ``dashboard``: kept with its ports brought up to date, else new."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        updated = re.sub(r'(?m)^dsn = "[^"]*"', f'dsn = "{dsn}"', text, count=1)
        updated = re.sub(r'(?m)^url = "mqtt://[^"]*"', f'url = "{broker_url}"', updated, count=1)
        updated = re.sub(r'(?m)^listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{dashboard_port}"', updated,
                         count=1)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
        return "kept from the last run; delete it for a fresh copy"
    # The dashboard's kiosk page shows kioskctl lines with this key: pasted, they work here as they are.
    key_line = f'kioskctl_key = "{keys.operator}"\n' if _SHELL_SAFE.match(str(keys.operator)) else ""
    path.write_text(f'''# make run-backoffice (devtools/run_backoffice.py): the ledger and the dashboard here.
# Kept across runs; the ports are brought up to date at each start. docs/backoffice.md says what each key does.

[database]
dsn = "{dsn}"

[mqtt]
url = "{broker_url}"
client_id = "ledger-dev-1"
keepalive = 10

[ledger]
fleet = "{FLEET}"

[acks]
key_file = "keys/{LEDGER_KEY}.key"

[gaps]
reorder_window_s = 30

[history]
snapshot_quiet_ms = 500

[dashboard]
listen = "127.0.0.1:{dashboard_port}"
# plain HTTP on this machine's loopback only; behind TLS in production
secure_cookies = false
tx_today_refresh_s = 5
{key_line}''', encoding="utf-8")
    return "new"


def prepare_kiosk(kiosk_dir: Path, spec: KioskSpec, broker_url: str, keys: Keys, sessions_per_minute: float) -> Path:
    """``kiosks/<id>/agent.toml``: kept (broker URL brought up to date) while it trusts ``keys``, else new."""
    config = kiosk_dir / "agent.toml"
    trusted = keys.trust.split("\n", 1)[1]     # the tables without the comment that names their folder
    if config.exists() and trusted in config.read_text(encoding="utf-8"):
        text = config.read_text(encoding="utf-8")
        updated = re.sub(r'(?m)^url = "mqtt://[^"]*"', f'url = "{broker_url}"', text, count=1)
        if updated != text:
            config.write_text(updated, encoding="utf-8")
        load_config(config)
        return config
    # keepalive 10: a kiosk that dies shows offline within 15 s; health every 10 s feeds the plots. No kiosk
    # screen (three agents would want one port); simulated citizens instead, so transactions reach the ledger.
    write_sim_config(config, broker_url, kiosk_dir / "state", overrides={
        "id": json.dumps(spec.id), "fleet": json.dumps(FLEET), "site": json.dumps(spec.site),
        "keepalive": "10", "interval_s": "10", "sessions_per_minute": f"{sessions_per_minute:g}"},
        extra=f'{keys.trust}\n[keys]\nsigning_key = "{kiosk_dir / "device.key"}"\n\n[local_api]\nenabled = false\n')
    return config


def ensure_device_keys(kiosks_dir: Path) -> None:
    """Each kiosk's device key, as provisioning makes it (``device.key``, its public half ``device.pub``)."""
    _run_all([[_bin("kioskctl"), "keys", "init", "--dir", str(kiosks_dir / spec.id), "--id", "device", "--json"]
              for spec in KIOSKS if not (kiosks_dir / spec.id / "device.key").exists()])


def write_commissioning(path: Path) -> Path:
    """The kiosks' commissioning QR lines (provisioning prints one on each kiosk's slip), one per line."""
    lines = [json.dumps({"v": 1, "kiosk": spec.id, "fleet": FLEET,
                         "sig": (path.parent / spec.id / "device.pub").read_text(encoding="ascii").strip()})
             for spec in KIOSKS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ensure_admin(config: Path, password_file: Path, password_new: bool) -> str:
    """The dashboard's ``admin`` user with the kept password; what was done."""
    users = json.loads(run_cli(_bin("kiosk-ledger"), "users", "list", "--json", "--config", str(config)))
    if not any(user["username"] == ADMIN for user in users):
        run_cli(_bin("kiosk-ledger"), "users", "add", ADMIN, "--role", "admin", "--password-file", str(password_file),
                "--config", str(config))
        return "created now"
    if password_new:
        # The user is in the database but its password file was deleted: the new password replaces the old one.
        run_cli(_bin("kiosk-ledger"), "users", "passwd", ADMIN, "--password-file", str(password_file), "--config",
                str(config))
        return "password set now"
    return "kept"


def stop_leftover_broker(workdir: Path) -> str | None:
    """Stop the Mosquitto a killed run left on ``workdir``'s config (found by that exact path); a note if one was."""
    conf = str(workdir / "mosquitto.conf")
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[-2:] == ["-c", conf]:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
                proc.wait(10)
            return f"stopped the broker a killed run left (pid {proc.pid})"
    return None


def stop_leftover_cluster(workdir: Path) -> str | None:
    """Stop (fast, data kept) the PostgreSQL server a killed run left on ``workdir``; a note if there was one."""
    try:
        cluster = PgCluster(workdir, keep=True)
        if not cluster.running():
            return None
        cluster.halt()
    except PgClusterError as exc:
        raise SetupError(f"the PostgreSQL server a killed run left in {workdir} does not stop: {exc}") from None
    return "stopped the PostgreSQL server a killed run left (its data is kept)"


def _wait(predicate: Callable[[], bool], timeout: float, what: str, stop: threading.Event,
          children: list[Child]) -> None:
    """Until ``predicate``; SetupError naming ``what`` (and the log of a child that exited) otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for child in children:
            if child.exited() is not None:
                raise SetupError(f"{child.name} exited {child.exited()} while waiting for {what}:\n"
                                 f"{child.new_output()[-3000:]}")
        if stop.wait(0.1):
            raise Stopped
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {c.name} ({c.log})\n{c.new_output()[-1500:]}" for c in children)
            raise SetupError(f"no {what} within {timeout:g} s\n{tails}")


def _answers_http(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/login")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


# -- the run ---------------------------------------------------------------------------------------------

class BackOffice:
    """Everything ``make run-backoffice`` starts, stopped in the reverse order by ``stop``."""

    def __init__(self, run_dir: Path, stop: threading.Event, *, sessions_per_minute: float) -> None:
        self.dir = run_dir / "backoffice"
        self.stop_requested = stop
        self.sessions_per_minute = sessions_per_minute
        self.pg: PgCluster | None = None
        self.broker: DevBroker | None = None
        self.ledger: Child | None = None
        self.dashboard: Child | None = None
        self.agents: dict[str, Child] = {}
        self.notes: list[str] = []

    def _step(self) -> None:
        if self.stop_requested.is_set():
            raise Stopped

    def start(self) -> str:
        """Set up and start everything; the banner to print."""
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        if find_pg_bin() is None:
            raise SetupError("PostgreSQL is not installed: `make system-deps` installs it (apt-get install postgresql)")
        if find_mosquitto() is None:
            raise SetupError("mosquitto is not installed: `make system-deps` installs it (apt-get install mosquitto)")
        # What a killed run left (this script's children stop with it; these two run detached) frees its ports.
        leftovers = [stop_leftover_broker(d / "broker"), stop_leftover_cluster(d / "pg")]
        pg_port, pg_note = kept_port(d / "pg-port", in_use_by="pg-port")
        broker_port, broker_note = kept_port(d / "broker-port", in_use_by="broker-port")
        dashboard_port, dashboard_note = kept_port(d / "dashboard-port", in_use_by="dashboard-port")
        self.notes += [n for n in (*leftovers, pg_note, broker_note, dashboard_note) if n]
        keys = ensure_keys(d / "keys")
        password, password_new = ensure_password(d / "admin-password")
        self._step()

        self.pg = PgCluster(d / "pg", port=pg_port, keep=True)
        try:
            self.pg.start()
            dsn = self.pg.ensure_database(DATABASE)
        except PgClusterError as exc:
            raise SetupError(str(exc)) from None
        self._step()
        self.broker = DevBroker(d / "broker", port=broker_port)     # kept first: a stop mid-start still stops it
        try:
            self.broker.start()
        except RuntimeError as exc:
            raise SetupError(f"the broker did not start: {exc}") from None
        config = d / "ledger.toml"
        config_note = write_ledger_config(config, dsn=dsn, broker_url=self.broker.url, dashboard_port=dashboard_port,
                                          keys=keys)
        migrated = run_cli(_bin("kiosk-ledger"), "migrate", "--config", str(config)).strip()
        admin_note = ensure_admin(config, d / "admin-password", password_new)
        self._step()

        kiosks_dir = d / "kiosks"
        ensure_device_keys(kiosks_dir)
        configs = {spec.id: prepare_kiosk(kiosks_dir / spec.id, spec, self.broker.url, keys, self.sessions_per_minute)
                   for spec in KIOSKS}
        registered = run_cli(_bin("kioskctl"), "kiosks", "import", "--db", dsn,
                             str(write_commissioning(kiosks_dir / "commissioning.jsonl")))
        self._step()

        self.ledger = Child("kiosk-ledger serve", [_bin("kiosk-ledger"), "serve", "--config", str(config)],
                            d / "ledger.log").start()
        self.dashboard = Child("kiosk-ledger dashboard", [_bin("kiosk-ledger"), "dashboard", "--config", str(config)],
                               d / "dashboard.log").start()
        ledger = self.ledger
        # Kiosks start once the ledger's subscriptions exist: what they publish from then on reaches it.
        _wait(lambda: "subscribed to the fleet's tx" in ledger.new_output() and "history: subscribed" in
              ledger.new_output(), 60, "subscriptions of kiosk-ledger serve", self.stop_requested, [ledger])
        for spec in KIOSKS:
            self.agents[spec.id] = self._agent(spec.id, configs[spec.id]).start()
        _wait(lambda: _answers_http(dashboard_port), 60, "answer from kiosk-ledger dashboard", self.stop_requested,
              [self.dashboard])
        return self._banner(config=config, config_note=config_note, dsn=dsn, password=password,
                            password_file=d / "admin-password", admin_note=admin_note, keys=keys, configs=configs,
                            dashboard_port=dashboard_port, migrated=migrated, registered=registered)

    def _agent(self, kiosk: str, config: Path) -> Child:
        return Child(f"kiosk {kiosk}", [_bin("kiosk-agent"), "run", "--config", str(config)],
                     config.parent / "agent.log")

    def _banner(self, *, config: Path, config_note: str, dsn: str, password: str, password_file: Path,
                admin_note: str, keys: Keys, configs: dict[str, Path], dashboard_port: int, migrated: str,
                registered: str) -> str:
        assert self.broker is not None and self.pg is not None
        q = shlex.quote
        kioskctl, ledger_cli, agent_cli = q(_bin("kioskctl")), q(_bin("kiosk-ledger")), q(_bin("kiosk-agent"))
        first, second, third = (spec.id for spec in KIOSKS)
        sites: dict[str, list[str]] = {}
        for spec in KIOSKS:
            sites.setdefault(spec.site, []).append(spec.id)
        fleet = "; ".join(f"{site}: {', '.join(ids)}" for site, ids in sites.items())
        proc = self.agents[second].proc
        victim = f"kill -9 {proc.pid if proc is not None else 'PID'}"
        to = f"--broker {self.broker.url} --fleet {FLEET}"
        notes = "".join(f"\n  note:            {note}" for note in self.notes)
        indent = "\n" + " " * 19
        cfg = q(str(config))
        return f"""
  the back office on this machine: PostgreSQL, Mosquitto, kiosk-ledger serve and dashboard,
  and {len(KIOSKS)} simulated kiosks of fleet {FLEET!r} ({fleet}){notes}

  dashboard:       http://127.0.0.1:{dashboard_port}/
  login:           {ADMIN} / {password}
                   ({password_file}, {admin_note})
  another user:    {ledger_cli} users add NAME --role operator --config {cfg}

  open a door:     {agent_cli} sim --config {q(str(configs[first]))} door open
  close it:        {agent_cli} sim --config {q(str(configs[first]))} door close
  paper out:       {agent_cli} sim --config {q(str(configs[third]))} printer paper_out
  refill it:       {agent_cli} sim --config {q(str(configs[third]))} printer refill
  send a command:  {kioskctl} cmd {to} --key {q(str(keys.operator))} {second} ping
  kill a kiosk:    {victim}   ({second}: offline on the dashboard within 15 s, back at the next run)
  ledger status:   {ledger_cli} status --config {cfg}
  export:          {ledger_cli} export --config {cfg} --since 1h --format csv
  the database:    psql {q(dsn)}
  open evidence:   {kioskctl} unseal --key {q(str(keys.evidence))} --ledger {q(dsn)} --tx TX_ID

  ledger config:   {config} ({config_note}); {migrated}
  keys:            {keys.operator.parent} ({'created now' if keys.created else 'kept'}; the kiosks trust them)
  kiosks:          {registered.strip().replace(chr(10), indent)}
  logs:            {self.dir}/ledger.log, dashboard.log, kiosks/<id>/agent.log
  PostgreSQL:      {self.pg.workdir} ({'created now' if self.pg.created else 'kept'}), 127.0.0.1:{self.pg.port}
  broker:          {self.broker.url} (log: {self.broker.log_path})

  Ctrl-C stops the kiosks, the dashboard, the ledger, the broker and PostgreSQL (its data is kept).
"""

    def supervise(self) -> int:
        """Until Ctrl-C/SIGTERM: restart a kiosk that asks for it (exit 75), report anything else that ends."""
        reported: set[str] = set()
        while not self.stop_requested.wait(0.5):
            for kiosk, agent in list(self.agents.items()):
                code = agent.exited()
                if code == EX_TEMPFAIL:
                    # restart-agent exits 75 for systemd to start it again; here we are systemd.
                    print(f"\n  kiosk {kiosk} exited 75 (restart-agent): starting it again\n", flush=True)
                    self.agents[kiosk] = self._agent(kiosk, Path(agent.argv[-1])).start()
                elif code is not None and kiosk not in reported:
                    reported.add(kiosk)
                    last = agent.new_output().strip().splitlines()[-1:] or [""]
                    print(f"\n  kiosk {kiosk} exited {code}; the dashboard shows it offline. Its log ({agent.log}) "
                          f"ends:\n  {last[0]}\n", flush=True)
            for child in (self.ledger, self.dashboard):
                if child is not None and child.exited() is not None:
                    print(f"\n  {child.name} exited {child.exited()}: stopping everything. Its log ({child.log}):\n"
                          f"{child.new_output()[-3000:]}", file=sys.stderr, flush=True)
                    return 1
            if self.broker is not None and self.broker.proc is not None and self.broker.proc.poll() is not None:
                print(f"\n  the broker exited {self.broker.proc.returncode}: stopping everything (log: "
                      f"{self.broker.log_path})", file=sys.stderr, flush=True)
                return 1
        return 0

    def stop(self) -> None:
        """Kiosks first (SIGTERM: each publishes that it goes offline), then dashboard and ledger, broker, cluster."""
        for group in (list(self.agents.values()), [c for c in (self.dashboard, self.ledger) if c is not None]):
            for child in group:
                child.terminate()
            for child in group:
                child.wait_stopped()
        if self.broker is not None:
            self.broker.stop()
        if self.pg is not None:
            self.pg.stop()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()
    # A flag, not KeyboardInterrupt: a stop at any moment, even mid-set-up, reaches the clean-up in order.
    previous = {signum: signal.signal(signum, lambda _signum, _frame: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.run_backoffice", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".run"), help="the run directory (default .run); "
                        "everything goes in its backoffice/ folder")
    parser.add_argument("--sessions-per-minute", type=float, default=2.0,
                        help="simulated citizens per kiosk and minute (default 2; 0: none)")
    args = parser.parse_args(argv)
    with _stop_on_signals() as stop:
        office = BackOffice(args.dir.resolve(), stop, sessions_per_minute=args.sessions_per_minute)
        code = 0
        try:
            print(office.start(), flush=True)
            code = office.supervise()
        except Stopped:
            pass
        except SetupError as exc:
            print(f"make run-backoffice: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            office.stop()
    print("\nstopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
