# SPDX-License-Identifier: Apache-2.0
"""``kiosk-agent``: run the daemon, check a configuration, drive simulators.

    kiosk-agent run --config /etc/kiosk-agent/agent.toml
    kiosk-agent check-config agent.toml          # exit 78 and one line on error
    kiosk-agent sim --config .run/agent.toml door open
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.config import DEFAULT_SIM_CONFIG, Config, load_config
from agent.errors import ConfigError
from hal.exc import BackendUnavailable

__all__ = ["main", "EX_CONFIG"]

EX_CONFIG = 78   # sysexits.h; systemd's RestartPreventExitStatus=78 stops a restart loop

log = logging.getLogger("kiosk-agent")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc}" if not str(exc).startswith(str(path)) else str(exc), file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(cfg.logging.level)
    from agent.daemon import run_agent
    try:
        return run_agent(cfg)
    except BackendUnavailable as exc:
        print(f"{args.config}: hal.backend: {exc}", file=sys.stderr)
        return EX_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    print(f"{args.file}: OK (kiosk {cfg.kiosk.id}, fleet {cfg.kiosk.fleet}, backend {cfg.hal.backend})")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging("WARNING")
    from agent.selftest import run_selftest
    try:
        return run_selftest(cfg, as_json=args.json)
    except BackendUnavailable as exc:
        print(f"{args.config}: hal.backend: {exc}", file=sys.stderr)
        return EX_CONFIG


def cmd_simulate(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging("WARNING" if cfg.logging.level in ("DEBUG", "INFO") else cfg.logging.level)
    from agent.simulate import run_simulation
    try:
        return run_simulation(cfg, args.sessions, args.service, cancel_rate=args.cancel_rate)
    except BackendUnavailable as exc:
        print(f"{args.config}: hal.backend: {exc}", file=sys.stderr)
        return EX_CONFIG


def cmd_sim(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    from agent.simcontrol import send_sim_command, socket_path
    path = socket_path(cfg.storage.dir)
    try:
        reply = send_sim_command(path, args.device, args.action, args.args)
    except OSError as exc:
        print(f"cannot reach the agent's simulators at {path}: {exc} (is `kiosk-agent run` running "
              "with hal.backend = \"sim\"?)", file=sys.stderr)
        return 1
    print(json.dumps(reply, ensure_ascii=False))
    return 0 if reply.get("ok") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kiosk-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent (the systemd service runs this)")
    run.add_argument("--config", type=Path, default=Path("/etc/kiosk-agent/agent.toml"))
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file without starting")
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_SIM_CONFIG)
    check.set_defaults(func=cmd_check_config)

    selftest = sub.add_parser("selftest", help="exercise every configured peripheral; non-zero exit on failure")
    selftest.add_argument("--config", type=Path, default=Path("/etc/kiosk-agent/agent.toml"))
    selftest.add_argument("--json", action="store_true", help="results as JSON on stdout")
    selftest.set_defaults(func=cmd_selftest)

    sim = sub.add_parser("sim", help="drive a running agent's simulators (sim backend only)")
    sim.add_argument("--config", type=Path, required=True)
    sim.add_argument("device", help="door, tamper, presence, printer, idcard, scanner, ...")
    sim.add_argument("action", help="open, close, paper_out, place, scan, unplug, ...")
    sim.add_argument("args", nargs="*")
    sim.set_defaults(func=cmd_sim)
    simulate = sub.add_parser("simulate", help="run the agent in-process and drive N simulated citizens")
    simulate.add_argument("--config", type=Path, default=DEFAULT_SIM_CONFIG)
    simulate.add_argument("--sessions", type=int, default=20)
    simulate.add_argument("--service", help="one service id (default: every service in turn)")
    simulate.add_argument("--cancel-rate", type=float, default=0.0, help="share of citizens who press cancel")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
