# SPDX-License-Identifier: Apache-2.0
"""``kioskctl``: the fleet manager's tool.

    kioskctl watch --broker mqtt://127.0.0.1:1883 --fleet north
    kioskctl watch --broker mqtts://broker:8883 --fleet north --kiosk k-0001 --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

from agent.contract import Topics, parse_topic
from fleet.mqtt import FleetClient, FleetError

__all__ = ["main", "format_message"]


def _clock(ts_ms: Any) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(int(ts_ms) / 1000))
    except (TypeError, ValueError, OverflowError):
        return "--:--:--"


def _duration(seconds: Any) -> str:
    try:
        s = int(seconds)
    except (TypeError, ValueError):
        return "?"
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_message(topic: str, payload: bytes) -> str | None:
    """One readable line for a message under ``kiosk/v1/``; None for others."""
    parsed = parse_topic(topic)
    if parsed is None:
        return None
    fleet, kiosk, rest = parsed
    try:
        data = json.loads(payload.decode("utf-8")) if payload else {}
    except (UnicodeDecodeError, ValueError):
        return f"--:--:-- {fleet}/{kiosk} {rest} <not JSON, {len(payload)} bytes>"
    if not isinstance(data, dict):
        return f"--:--:-- {fleet}/{kiosk} {rest} <unexpected payload>"
    who = f"{_clock(data.get('ts'))} {fleet}/{kiosk}"
    if rest == "state":
        if data.get("online"):
            versions = data.get("versions") or {}
            devices = ",".join(sorted(data.get("peripherals") or {}))
            return (f"{who} ONLINE  bdSeq={data.get('bdSeq')} mode={data.get('mode')} "
                    f"agent={versions.get('agent')} fw={versions.get('firmware') or '-'} site={data.get('site')!r} "
                    f"peripherals={devices or '-'}")
        return f"{who} OFFLINE bdSeq={data.get('bdSeq')} ({data.get('reason', 'will')})"
    if rest == "health":
        system = data.get("system") or {}
        agent = data.get("agent") or {}
        parts = []
        for name, st in sorted((data.get("peripherals") or {}).items()):
            state = st.get("state", "?") if isinstance(st, dict) else "?"
            alarms = st.get("alarms") if isinstance(st, dict) else None
            parts.append(f"{name}={state}" + (f"({','.join(alarms)})" if alarms else ""))
        outbox = data.get("outbox") or {}
        backlog = f" backlog={outbox.get('pending')}" if "pending" in outbox else ""
        return (f"{who} health  mode={data.get('mode')} up={_duration(data.get('uptime_s'))} "
                f"alarms={','.join(data.get('alarms') or []) or '-'} rss={agent.get('rss_mb')}MB "
                f"disk_free={system.get('disk_free_mb')}MB temp={system.get('cpu_temp_c')}{backlog} "
                f"| {' '.join(parts)}")
    if rest.startswith("alarm/"):
        verb = "RAISED " if data.get("active") else "cleared"
        return (f"{who} alarm   {verb} {data.get('code', rest[6:])} [{data.get('severity', '?')}] "
                f"{data.get('detail', '')}")
    if rest == "tx":
        return (f"{who} tx      seq={data.get('seq')} id={data.get('id')} service={data.get('service')} "
                f"outcome={data.get('outcome')}")
    if rest.startswith("cmd/") and rest.endswith("/result"):
        return f"{who} result  {rest[4:-7]} {data.get('status')} {data.get('code', '')} {data.get('message', '')}"
    return f"{who} {rest}"


def cmd_watch(args: argparse.Namespace) -> int:
    topic = f"kiosk/v1/{args.fleet}/{args.kiosk}/#"
    try:
        with FleetClient(args.broker, ca_file=args.ca_file, cert_file=args.cert_file,
                         key_file=args.key_file) as client:
            client.subscribe(topic)
            print(f"watching {topic} on {args.broker} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            for msg in client.messages(timeout=args.duration):
                if args.json:
                    try:
                        payload: Any = json.loads(msg.payload)
                    except ValueError:
                        payload = msg.payload.decode("utf-8", "replace")
                    print(json.dumps({"topic": msg.topic, "retain": bool(msg.retain), "payload": payload},
                                     ensure_ascii=False), flush=True)
                    continue
                line = format_message(msg.topic, msg.payload)
                if line:
                    print(line + (" (retained)" if msg.retain else ""), flush=True)
    except FleetError as exc:
        print(f"kioskctl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--ca-file", help="CA certificate for mqtts://")
    parser.add_argument("--cert-file", help="client certificate for mqtts://")
    parser.add_argument("--key-file", help="client key for mqtts://")


# Modules adding subcommands: each has ``register(subparsers)``.
COMMAND_MODULES: list[str] = ["fleet.commands_cli", "fleet.evidence_cli", "fleet.ca_cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kioskctl", description="Watch and command a fleet of kiosks over MQTT.")
    sub = parser.add_subparsers(dest="command", required=True)

    watch = sub.add_parser("watch", help="print one line per state, health and alarm message")
    add_broker_args(watch)
    watch.add_argument("--fleet", required=True)
    watch.add_argument("--kiosk", default="+", help="one kiosk id (default: all of the fleet)")
    watch.add_argument("--json", action="store_true", help="one JSON object per message, for scripts")
    watch.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    watch.set_defaults(func=cmd_watch)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
