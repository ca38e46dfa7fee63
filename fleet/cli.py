# SPDX-License-Identifier: Apache-2.0
"""``kioskctl``: the fleet manager's tool.

    kioskctl watch --broker mqtt://127.0.0.1:1883 --fleet north
    kioskctl watch --broker mqtts://broker:8883 --fleet north --kiosk k-0001 --json
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from agent import __version__
from agent.wire.contract import parse_topic
from fleet.mqtt import FleetClient, FleetError, LinkEvent

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


_CONTENTS = {"card": "card", "photo_wlt": "ID photo", "face_jpeg": "face photo", "mailing": "address"}


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
    who = f"{_clock(data.get('ts') or data.get('issued_at'))} {fleet}/{kiosk}"
    render = _RENDERERS.get(rest)
    if render is None:
        render = next((r for prefix, r in _PREFIX_RENDERERS if rest.startswith(prefix)), None)
    try:
        body = render(rest, data) if render else ""
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # A payload off the contract must not end the watch: show it is there.
        body = f"{rest} <payload off the contract: {exc.__class__.__name__}: {exc}>"
    return f"{who} {body}" if body else f"{who} {rest}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _state(_rest: str, data: dict[str, Any]) -> str:
    if data.get("online"):
        versions = data.get("versions") or {}
        devices = ",".join(sorted(data.get("peripherals") or {}))
        return (f"ONLINE  bdSeq={data.get('bdSeq')} mode={data.get('mode')} "
                f"agent={versions.get('agent')} fw={versions.get('firmware') or '-'} site={data.get('site')!r} "
                f"peripherals={devices or '-'}")
    return f"OFFLINE bdSeq={data.get('bdSeq')} ({data.get('reason', 'will')})"


def _health(_rest: str, data: dict[str, Any]) -> str:
    system = data.get("system") or {}
    agent = data.get("agent") or {}
    parts = []
    for name, st in sorted((data.get("peripherals") or {}).items()):
        state = st.get("state", "?") if isinstance(st, dict) else "?"
        alarms = st.get("alarms") if isinstance(st, dict) else None
        parts.append(f"{name}={state}" + (f"({','.join(alarms)})" if alarms else ""))
    outbox = data.get("outbox") or {}
    backlog = f" backlog={outbox.get('pending')}" if "pending" in outbox else ""
    tx = _dict(outbox.get("tx"))
    unacked = f" unacked={tx.get('unacked')}" if "unacked" in tx else ""
    return (f"health  mode={data.get('mode')} up={_duration(data.get('uptime_s'))} "
            f"alarms={','.join(data.get('alarms') or []) or '-'} rss={agent.get('rss_mb')}MB "
            f"disk_free={system.get('disk_free_mb')}MB temp={system.get('cpu_temp_c')}{backlog}{unacked} "
            f"| {' '.join(parts)}")


def _alarm(rest: str, data: dict[str, Any]) -> str:
    verb = "RAISED " if data.get("active") else "cleared"
    return f"alarm   {verb} {data.get('code', rest[6:])} [{data.get('severity', '?')}] {data.get('detail', '')}"


def _seq(data: dict[str, Any]) -> str:
    epoch = data.get("epoch")
    return f"seq={data.get('seq', '?')}" + (f" epoch={str(epoch)[:8]}" if epoch else "")


def _tx(_rest: str, data: dict[str, Any]) -> str:
    # Only the masked forms the record carries are shown: the record never
    # holds a clear ID number or payment code, and neither does this line.
    record = _dict(data.get("data"))
    kind = record.get("type", "?")
    head = f"tx      {_seq(data)} id={data.get('id')}"
    if kind == "receipt":
        # The outcome of a session's receipt, journalled after the print.
        status = str(record.get("status", "?"))
        why = " ".join(str(x) for x in (record.get("code"), ",".join(record.get("alarms") or [])) if x)
        label = status if status == "printed" else status.upper() + (f": {why}" if why else "")
        return (f"{head} service={record.get('service', '?')} receipt={record.get('receipt') or '-'}({label}) "
                f"for tx={record.get('tx')}")
    parts = [f"service={record.get('service', '?')}", f"outcome={record.get('outcome', '?')}"]
    if record.get("reason"):
        parts.append(f"reason={record['reason']}")
    parts.append(f"card={record.get('id_masked') or '-'}")
    payment = record.get("payment")
    if isinstance(payment, dict):
        parts.append(f"paid={payment.get('method')}:{payment.get('ref_masked')}")
    parts.append(f"receipt={_receipt(record)}")
    if record.get("waybill"):
        parts.append(f"waybill={record['waybill']}")
    if record.get("evidence"):
        parts.append("evidence=sealed")
    if kind != "session":
        parts.insert(0, f"type={kind}")
    return f"{head} {' '.join(parts)}"


def _receipt(record: dict[str, Any]) -> str:
    """The receipt number and what the record knows of the print."""
    number = record.get("receipt")
    steps = {s.get("kind"): s.get("status") for s in record.get("steps") or [] if isinstance(s, dict)}
    step = steps.get("print_receipt")
    if step is None:
        return str(number) if number else "none"
    # A completed session is committed before the print: its outcome
    # follows in a tx of type "receipt".
    label = {"after_commit": "printing", "done": "printed", "not_reached": "not printed"}.get(step, step)
    return f"{number or '-'}({label})"


def _evidence(_rest: str, data: dict[str, Any]) -> str:
    bundle = _dict(data.get("bundle"))
    try:
        size = len(base64.b64decode(str(bundle.get("ct", "")), validate=True))
    except (binascii.Error, ValueError):
        size = 0
    contents = [_CONTENTS.get(str(c), str(c)) for c in data.get("contents") or []]
    seq = f" seq={data['seq']}" if "seq" in data else ""
    return (f"evidence{seq} tx={data.get('tx')} service={data.get('service')} sealed {_size(size)}: "
            f"{', '.join(contents) or 'nothing listed'}")


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB"


def _cmd(rest: str, data: dict[str, Any]) -> str:
    name = rest[4:]
    if name.endswith("/result"):
        pct = f" {data['progress']}%" if "progress" in data else ""
        extra = " ".join(str(data[k]) for k in ("code", "message") if data.get(k))
        return f"result  {name[:-7]} {data.get('status')}{pct} {extra}".rstrip()
    args = ",".join(sorted(data.get("args") or {}))   # names only: values may be whole files
    return (f"command {name}{f'({args})' if args else ''} signed by {data.get('key_id')} "
            f"until {_clock(data.get('expires_at'))}")


def _config(rest: str, data: dict[str, Any]) -> str:
    if rest == "config/desired":
        return f"config  desired v{data.get('version')} signed by {data.get('key_id')}"
    sha = f" sha256={str(data['sha256'])[:12]}" if data.get("sha256") else ""
    desired = data.get("desired_version")
    extra = " ".join(str(data[k]) for k in ("code", "message") if data.get(k))
    return (f"config  v{data.get('version')} {data.get('status')}{sha}"
            f"{f' (desired v{desired})' if desired not in (None, data.get('version')) else ''} {extra}").rstrip()


def _ack(_rest: str, data: dict[str, Any]) -> str:
    ids = data.get("ids") or []
    return f"tx/ack  {len(ids)} id(s) signed by {data.get('key_id') or 'nobody'}: {' '.join(map(str, ids[:4]))}" + \
        (" ..." if len(ids) > 4 else "")


_RENDERERS: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "state": _state, "health": _health, "tx": _tx, "evidence": _evidence, "tx/ack": _ack,
    "config/reported": _config, "config/desired": _config}
_PREFIX_RENDERERS: list[tuple[str, Callable[[str, dict[str, Any]], str]]] = [("alarm/", _alarm), ("cmd/", _cmd)]


def follow(args: argparse.Namespace, topic: str, *, as_json: Callable[[Any], dict[str, Any]]) -> int:
    """Print every message on ``topic`` until ``--duration``; say when the broker goes and comes back."""
    try:
        with FleetClient(args.broker, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                         keepalive=args.keepalive) as client:
            client.subscribe(topic)
            print(f"watching {topic} on {args.broker} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            for item in client.stream(timeout=args.duration):
                if isinstance(item, LinkEvent):
                    _link(item)
                elif args.json:
                    print(json.dumps(as_json(item), ensure_ascii=False), flush=True)
                else:
                    line = format_message(item.topic, bytes(item.payload))
                    if line:
                        print(line + (" (retained)" if item.retain else ""), flush=True)
    except FleetError as exc:
        print(f"kioskctl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _link(event: LinkEvent) -> None:
    # On stderr, so --json output stays one message per line.
    now = time.strftime("%H:%M:%S")
    if event.kind == "lost":
        print(f"{now} broker lost ({event.detail}); reconnecting", file=sys.stderr, flush=True)
    else:
        print(f"{now} broker back ({event.detail}); subscribed again", file=sys.stderr, flush=True)


def cmd_watch(args: argparse.Namespace) -> int:
    def as_json(msg: Any) -> dict[str, Any]:
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload.decode("utf-8", "replace")
        return {"topic": msg.topic, "retain": bool(msg.retain), "payload": payload}
    return follow(args, f"kiosk/v1/{args.fleet}/{args.kiosk}/#", as_json=as_json)


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--ca-file", help="CA certificate for mqtts://")
    parser.add_argument("--cert-file", help="client certificate for mqtts://")
    parser.add_argument("--key-file", help="client key for mqtts://")


# Modules adding subcommands: each has ``register(subparsers)``.
COMMAND_MODULES: list[str] = ["fleet.commands_cli", "fleet.evidence_cli", "fleet.ca_cli", "fleet.kiosks_cli"]


def add_follow_args(parser: argparse.ArgumentParser, what: str) -> None:
    """The options of a command that follows a stream (``watch``, ``tx tail``)."""
    add_broker_args(parser)
    parser.add_argument("--fleet", required=True, help="fleet id, as in the kiosks' [kiosk] fleet")
    parser.add_argument("--kiosk", default="+", help="one kiosk id (default: every kiosk of the fleet)")
    parser.add_argument("--json", action="store_true",
                        help=f"one JSON object per {what} ({{\"topic\", \"payload\"}}), for scripts and verify")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--keepalive", type=int, default=15,
                        help="seconds between MQTT pings: a silent broker is noticed within about this")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kioskctl", description="Watch and command a fleet of kiosks over MQTT.")
    parser.add_argument("--version", action="version", version=f"kioskctl {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    watch = sub.add_parser("watch", help="one line per message of the fleet: state, health, alarms, tx, evidence, "
                                         "commands, configuration",
                           description="Follow every message of a fleet (or one kiosk) as one readable line. "
                                       "When the broker goes away it says so and reconnects.")
    add_follow_args(watch, "message")
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
