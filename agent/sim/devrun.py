# SPDX-License-Identifier: Apache-2.0
"""``make run``: a private broker, the agent on simulated hardware, until Ctrl-C.

Everything lives under ``.run/`` in the working directory: the broker's
config and log, its port (``broker-port``), the agent's config (a copy of the
shipped simulation config pointed at the private broker), its state, and the
development keys in ``keys/`` that the config trusts: an operator key for
``kioskctl cmd``, a back-office key for ``kioskctl tx ack`` and an evidence
key for ``kioskctl unseal``. Keys, port and config are made on first use and
kept across runs. Ctrl-C (or SIGTERM) stops the agent (SIGTERM: it publishes
its offline state) and then the broker.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from agent.config import DEFAULT_SIM_CONFIG, load_config
from agent.control.commands import EX_TEMPFAIL
from agent.errors import AgentError
from agent.localapi.component import token_path
from agent.runtime.keys import load_private
from agent.sim.devbroker import DevBroker
from agent.wire.sealing import load_private_key, public_key_b64
from agent.wire.signing import public_b64

__all__ = ["DevKeys", "choose_port", "ensure_dev_keys", "kept_port", "main", "port_free", "prepare_config",
           "write_sim_config"]

DEV_OPERATOR = "dev-admin"
DEV_BACKOFFICE = "dev-backoffice"
DEV_EVIDENCE = "dev-evidence.pem"
PORT_FILE = "broker-port"
_BROKER_URL = re.compile(r'(?m)^url = "mqtt://[^"]*"')


def write_sim_config(target: Path, broker_url: str, state_dir: Path, template: Path = DEFAULT_SIM_CONFIG,
                     overrides: dict[str, str] | None = None, extra: str = "") -> Path:
    """Copy the simulation config to ``target`` with the broker and state dir set, ``extra`` appended."""
    text = template.read_text(encoding="utf-8")
    text = _BROKER_URL.sub(f'url = "{broker_url}"', text)
    text = re.sub(r'(?m)^dir = "[^"]*"', f'dir = "{state_dir}"', text)
    for key, value in (overrides or {}).items():
        text = re.sub(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text)
    if extra:
        text += "\n" + extra
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    load_config(target)   # fail here, not in the child, if the template broke
    return target


@dataclasses.dataclass(frozen=True)
class DevKeys:
    """The development keys under ``.run/keys`` and the agent.toml tables that trust them."""

    operator: Path        # signs kioskctl cmd / config push (role admin)
    backoffice: Path      # signs kioskctl tx ack
    evidence: Path        # opens sealed evidence: kioskctl unseal
    trust: str
    operator_line: str    # the trust's public_key line: its presence in agent.toml means "trusted"
    created: bool


class DevKeyError(AgentError):
    """kioskctl could not make a development key; the message has its output."""

    code = "devrun.keys"


def _kioskctl(*args: str) -> None:
    # make run plays the fleet office, so it runs the fleet office's own tool
    # (as a program: the agent package imports nothing of fleet).
    done = subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise DevKeyError(f"kioskctl {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")


def ensure_dev_keys(keys_dir: Path) -> DevKeys:
    """The development keys in ``keys_dir``, made with ``kioskctl`` on first use."""
    created = False
    public: dict[str, str] = {}
    for key_id in (DEV_OPERATOR, DEV_BACKOFFICE):
        path = keys_dir / f"{key_id}.key"
        if not path.exists():
            _kioskctl("keys", "init", "--dir", str(keys_dir), "--id", key_id, "--json")
            created = True
        public[key_id] = public_b64(load_private(path))
    evidence = keys_dir / DEV_EVIDENCE
    if not evidence.exists():
        _kioskctl("evidence-keygen", "--out", str(evidence))
        created = True
    operator_line = f'public_key = "{public[DEV_OPERATOR]}"'
    trust = (f"# Trusted by make run: the development keys in {keys_dir} (kept across runs).\n"
             f'[[commands.operators]]\nid = "{DEV_OPERATOR}"\n{operator_line}\nrole = "admin"\n\n'
             f'[evidence]\nrecipient_public_key = "{public_key_b64(load_private_key(evidence))}"\n'
             f'ack_public_keys = ["{public[DEV_BACKOFFICE]}"]\n')
    return DevKeys(keys_dir / f"{DEV_OPERATOR}.key", keys_dir / f"{DEV_BACKOFFICE}.key", evidence, trust,
                   operator_line, created)


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port`` (connections in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        # SO_REUSEADDR: the last run's connections in TIME_WAIT do not make the port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _below_ephemeral() -> range:
    """Ports no outgoing connection takes as its local port: below the kernel's ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10_000, max(low, 10_001))


def kept_port(path: Path, *, in_use_by: str) -> tuple[int, str | None]:
    """The port kept in ``path`` if it is free, else a new one (kept from now on) and a note saying so.

    Not one the kernel hands out (``bind(0)``): a kept port from the ephemeral range is, sooner or later, the
    local port of some outgoing connection on this machine at the moment the server wants to listen on it.
    """
    try:
        kept: int | None = int(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        kept = None
    if kept is not None and port_free(kept):
        return kept, None
    candidates = _below_ephemeral()
    port = next(p for p in iter(lambda: secrets.choice(candidates), None) if port_free(p))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{port}\n", encoding="ascii")
    return port, None if kept is None else f"port {kept} is in use ({in_use_by}); using {port} from now on"


def choose_port(run_dir: Path) -> tuple[int, str | None]:
    """The broker port kept in ``run_dir/broker-port`` if free, else a new one (kept from now on) and why."""
    return kept_port(run_dir / PORT_FILE, in_use_by="another make run?")


def prepare_config(run_dir: Path, broker_url: str, keys: DevKeys) -> tuple[Path, str]:
    """``run_dir/agent.toml``: kept (broker URL brought up to date) when it trusts ``keys``, else fresh."""
    target = run_dir / "agent.toml"
    if target.exists():
        text = target.read_text(encoding="utf-8")
        if keys.operator_line in text:
            updated = _BROKER_URL.sub(f'url = "{broker_url}"', text, count=1)
            if updated != text:
                target.write_text(updated, encoding="utf-8")
            load_config(target)
            return target, "kept from the last run; delete it for a fresh copy"
        note = "rewritten: it did not trust the keys in .run/keys"
    else:
        note = "new copy of agent/data/sim.toml"
    # No simulated citizens: the kiosk screen (its URL is printed) is where a newcomer walks a session,
    # and a trickle would take the card reader and the session from under them. sim.sessions_per_minute
    # in the copy turns it back on.
    write_sim_config(target, broker_url, run_dir / "state", overrides={"sessions_per_minute": "0"},
                     extra=keys.trust)
    return target, note


def _print_screen_url(port: int, token_file: Path) -> bool:
    """Print the kiosk screen's address with the token the agent just wrote; False while it is not there yet."""
    try:
        token = token_file.read_text(encoding="ascii").strip()
    except OSError:
        return False
    if not token:
        return False
    print(f"""
  kiosk screen:    http://127.0.0.1:{port}/?token={token}
                   (open it in a browser on this machine; the token changes at every agent start)
""", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.sim.devrun", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".run"))
    args = parser.parse_args(argv)
    run_dir = args.dir.resolve()
    port, port_note = choose_port(run_dir)
    url = f"mqtt://127.0.0.1:{port}"
    try:
        keys = ensure_dev_keys(run_dir / "keys")
        config, config_note = prepare_config(run_dir, url, keys)
        cfg = load_config(config)
    except AgentError as exc:
        print(f"make run: {exc} [{exc.code}]\n  fix it, or delete {run_dir / 'agent.toml'} (or {run_dir}) "
              "for a fresh start", file=sys.stderr)
        return 78 if exc.code.startswith("agent.config") else 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # A flag, not KeyboardInterrupt: a stop at any moment, even mid-start,
        # still reaches the clean-up below (agent first, then the broker).
        signal.signal(signum, lambda _signum, _frame: stop.set())
    broker = DevBroker(run_dir / "broker", port=port)
    agent: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        bindir = Path(sys.executable).parent
        kioskctl, q = shlex.quote(str(bindir / "kioskctl")), shlex.quote
        to = f"--broker {url} --fleet {cfg.kiosk.fleet}"
        kiosk = cfg.kiosk.id
        print(f"""
  kiosk-agent on simulated hardware, broker {url} (log: {broker.log_path}){f'''
  {port_note}''' if port_note else ''}

  watch it:        {kioskctl} watch {to}
  raw messages:    mosquitto_sub -p {port} -v -t 'kiosk/#'
  open the door:   {q(str(bindir / 'kiosk-agent'))} sim --config {q(str(config))} door open
  send a command:  {kioskctl} cmd {to} --key {q(str(keys.operator))} {kiosk} ping
  acknowledge tx:  {kioskctl} tx ack {to} --key {q(str(keys.backoffice))} {kiosk} TX_ID
  open evidence:   {kioskctl} watch {to} --json --duration 60 | {kioskctl} unseal --key {q(str(keys.evidence))} -
  agent config:    {config} ({config_note})
  keys:            {keys.operator.parent} ({'created now' if keys.created else 'kept'}; the config trusts them)

  Ctrl-C stops the agent and the broker.
""", flush=True)
        command = [sys.executable, "-m", "agent", "run", "--config", str(config)]
        token_file = token_path(cfg)
        while not stop.is_set():
            # A token left by a killed agent is stale: the new one is written when the screen's API listens.
            token_file.unlink(missing_ok=True)
            shown = not cfg.local_api.enabled
            if not shown and not port_free(cfg.local_api.port):
                print(f"\n  kiosk screen:    port {cfg.local_api.port} is in use (another make run?); the agent "
                      f"retries it every 10 s,\n                   or set [local_api] port in {config}\n", flush=True)
            agent = subprocess.Popen(command)
            while agent.poll() is None and not stop.wait(0.2):
                if not shown and token_file.exists():
                    shown = _print_screen_url(cfg.local_api.port, token_file)
            if stop.is_set() or agent.returncode != EX_TEMPFAIL:
                break
            # restart-agent exits 75 for systemd to start it again; here we are systemd.
            print("\n  agent exited 75 (restart-agent): starting it again\n", flush=True)
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        broker.stop()
    code = agent.returncode if agent is not None else 0
    print(f"\nstopped (agent exit {code})", flush=True)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
