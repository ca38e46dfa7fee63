# SPDX-License-Identifier: Apache-2.0
"""``kiosk-agent``: run the daemon, check a configuration, drive simulators.

    kiosk-agent run --config /etc/kiosk-agent/agent.toml
    kiosk-agent check-config --config agent.toml # exit 78 and one line on error
    kiosk-agent keys show                        # the device public key, to register it
    kiosk-agent sim --config .run/agent.toml door open
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.config import DEFAULT_CONFIG, DEFAULT_SIM_CONFIG, Config, deployment_warnings, load_config, tls_context
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
    from agent.runtime.daemon import run_agent
    from agent.sim.simulate import start_trickle
    try:
        return run_agent(cfg, companions=(start_trickle,))
    except BackendUnavailable as exc:
        print(f"{args.config}: hal.backend: {exc}", file=sys.stderr)
        return EX_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    """Everything ``run`` would refuse, plus the TLS files the uplink will load; warnings do not fail."""
    if args.file is not None and args.config is not None and args.file != args.config:
        print("check-config: give the file once, as --config FILE or as FILE", file=sys.stderr)
        return 2
    path = args.file or args.config or DEFAULT_CONFIG
    cfg = _load(path)
    if cfg.mqtt.tls_enabled:
        try:
            tls_context(cfg.mqtt)
        except ConfigError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return EX_CONFIG
    for warning in deployment_warnings(cfg):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    print(f"{path}: OK (kiosk {cfg.kiosk.id}, fleet {cfg.kiosk.fleet}, backend {cfg.hal.backend})")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    """The device's public signing key, PEM, for the back office to register (never the private key)."""
    cfg = _load(args.config)
    from agent.runtime.keys import KeyError_, device_key_path, key_id, load_private, public_pem
    path = device_key_path(cfg.keys.signing_key, cfg.storage.dir)
    if not path.exists():
        print(f"{path}: no device key yet; provisioning or the agent's first start makes it", file=sys.stderr)
        return 1
    try:
        public = load_private(path).public_key()
    except KeyError_ as exc:
        print(exc, file=sys.stderr)
        return 1
    pem = public_pem(public).decode("ascii")
    if args.json:
        print(json.dumps({"kiosk": cfg.kiosk.id, "fleet": cfg.kiosk.fleet, "key_id": key_id(public),
                          "path": str(path), "public_key_pem": pem}))
    else:
        # A comment line before the PEM: PEM readers skip it, so the output is a usable .pub file.
        print(f"# kiosk {cfg.kiosk.id} (fleet {cfg.kiosk.fleet}), device key id {key_id(public)}, {path}")
        print(pem, end="")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging("WARNING")
    from agent.runtime.selftest import run_selftest
    try:
        return run_selftest(cfg, as_json=args.json)
    except BackendUnavailable as exc:
        print(f"{args.config}: hal.backend: {exc}", file=sys.stderr)
        return EX_CONFIG


def cmd_simulate(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging("WARNING" if cfg.logging.level in ("DEBUG", "INFO") else cfg.logging.level)
    from agent.sim.simulate import run_simulation
    try:
        return run_simulation(cfg, args.sessions, args.service, cancel_rate=args.cancel_rate)
    except BackendUnavailable as exc:
        print(f"{args.config}: hal.backend: {exc}", file=sys.stderr)
        return EX_CONFIG


def cmd_sim(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    from agent.sim.simcontrol import send_sim_command, socket_path
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
    parser = argparse.ArgumentParser(
        prog="kiosk-agent", description="The kiosk's edge agent: run the daemon, check a configuration, "
        "show the device key, drive simulators.")
    parser.add_argument("--version", action="version", version=f"kiosk-agent {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = f"the agent's configuration file (default {DEFAULT_CONFIG})"

    run = sub.add_parser("run", help="run the agent (the systemd service runs this)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration and its TLS files without starting",
                           description="Exit 78 with one line naming the key on an error; warnings (a production "
                           "kiosk without TLS or without a client certificate) go to stderr and exit 0.")
    check.add_argument("--config", type=Path, help=config_help)
    check.add_argument("file", type=Path, nargs="?", help="the same as --config (older form)")
    check.set_defaults(func=cmd_check_config)

    selftest = sub.add_parser("selftest", help="exercise every configured peripheral; non-zero exit on failure")
    selftest.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    selftest.add_argument("--json", action="store_true", help="results as JSON on stdout")
    selftest.set_defaults(func=cmd_selftest)

    keys = sub.add_parser("keys", help="the device's signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    show = keys_sub.add_parser("show", help="print the device public key (PEM) to register it with the back office")
    show.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    show.add_argument("--json", action="store_true", help="kiosk, key id, path and PEM as one JSON object")
    show.set_defaults(func=cmd_keys_show)

    sim = sub.add_parser("sim", help="drive a running agent's simulators (sim backend only)")
    sim.add_argument("--config", type=Path, required=True, help="the running agent's configuration file")
    sim.add_argument("device", help="door, tamper, presence, printer, idcard, scanner, ...")
    sim.add_argument("action", help="open, close, paper_out, place, scan, unplug, ...")
    # A default keeps argparse from listing an optional '*' positional as required.
    sim.add_argument("args", nargs="*", default=[], help="arguments of the action, if it takes any")
    sim.set_defaults(func=cmd_sim)
    simulate = sub.add_parser("simulate", help="run the agent in-process and drive N simulated citizens")
    simulate.add_argument("--config", type=Path, default=DEFAULT_SIM_CONFIG,
                          help=f"configuration file (default the bundled simulation, {DEFAULT_SIM_CONFIG.name})")
    simulate.add_argument("--sessions", type=int, default=20, help="how many citizens (default 20)")
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
