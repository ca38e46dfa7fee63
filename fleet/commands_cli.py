# SPDX-License-Identifier: Apache-2.0
"""kioskctl subcommands for fleet managers: keys, fleet, cmd, config push, tx tail.

    kioskctl keys init --dir ~/.kioskctl --id ops-anna --role admin
    kioskctl fleet --broker mqtt://b:1883 --fleet north
    kioskctl cmd k-0001 set-mode mode=maintenance --broker ... --fleet north --key ~/.kioskctl/ops-anna.key
    kioskctl cmd --all selftest --broker ... --fleet north --key ...
    kioskctl config push k-0001 agent.toml --version 7 --broker ... --fleet north --key ...
    kioskctl tx tail --broker ... --fleet north
    kioskctl tx resend k-0001 --epoch 9f2c... --from 41 --to 57 --broker ... --fleet north --key ledger.key

``cmd`` exit status: 0 succeeded, 1 failed, 2 usage or broker error (or a
kiosk never seen), 3 refused by the kiosk, 4 no result in time; ``tx ack``
the same from what the kiosk's next health report says. Every subcommand
takes ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import parse_config
from agent.errors import ConfigError
from agent.wire.contract import ROOT, Topics, parse_topic
from agent.wire.signing import (
    KIND_ACK,
    KIND_CMD,
    KIND_CONFIG,
    SPECS,
    command_envelope,
    config_envelope,
    expected,
    sign,
)
from agent.wire.txformat import ack_document
from fleet.cli import add_broker_args, add_follow_args, follow
from fleet.keys import KeyError_, config_snippet, init_key, load_key
from fleet.mqtt import FleetClient, FleetError

__all__ = ["register", "parse_arg", "fleet_table", "send_commands"]

EXIT = {"succeeded": 0, "failed": 1, "refused": 3, None: 4}
TERMINAL = ("succeeded", "failed", "refused")


def _client(args: argparse.Namespace) -> FleetClient:
    return FleetClient(args.broker, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)


def _err(message: str) -> int:
    print(f"kioskctl: {message}", file=sys.stderr)
    return 2


def _decode(payload: bytes | bytearray) -> Any:
    try:
        return json.loads(bytes(payload).decode("utf-8")) if payload else None
    except (UnicodeDecodeError, ValueError):
        return None


# -- keys ----------------------------------------------------------------------------

def cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        paths, key = init_key(Path(args.dir).expanduser(), args.id)
    except KeyError_ as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps({"private": str(paths.private), "public": str(paths.public), "id": args.id,
                          "role": args.role, "public_key": paths.public.read_text().strip()}))
        return 0
    print(f"private key: {paths.private} (0600: keep it secret)\npublic key:  {paths.public}\n", file=sys.stderr)
    print("add to each kiosk's agent.toml:\n", file=sys.stderr)
    print(config_snippet(args.id, key, args.role))
    return 0


# -- fleet ---------------------------------------------------------------------------

def collect_fleet(client: FleetClient, fleet: str, wait: float, idle: float = 0.5) -> dict[str, dict[str, Any]]:
    """Kiosk id → what its retained messages say."""
    for suffix in ("state", "health", "alarm/+", "config/reported"):
        client.subscribe(f"{ROOT}/{fleet}/+/{suffix}")
    kiosks: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait
    # Retained messages come in one burst after the SUBACKs: wait up to
    # ``wait`` for it to start, then stop once it has been quiet for ``idle``.
    quiet: float | None = None
    while (left := deadline - time.monotonic()) > 0:
        got = False
        for msg in client.messages(timeout=left, idle=quiet):
            got = True
            _absorb(kiosks, msg)
            break
        if not got:
            break
        quiet = idle
    return kiosks


def _absorb(kiosks: dict[str, dict[str, Any]], msg: Any) -> None:
    parsed = parse_topic(msg.topic)
    data = _decode(msg.payload)
    if parsed is None or not isinstance(data, dict):
        return
    _fleet, kiosk, rest = parsed
    entry = kiosks.setdefault(kiosk, {"kiosk": kiosk, "alarms": set(), "last_seen": 0})
    ts = data.get("ts") if isinstance(data.get("ts"), int) else 0
    entry["last_seen"] = max(entry["last_seen"], ts)
    if rest == "state":
        entry["state"] = data
    elif rest == "health":
        entry["health"] = data
    elif rest.startswith("alarm/"):
        (entry["alarms"].add if data.get("active") else entry["alarms"].discard)(data.get("code", rest[6:]))
    elif rest == "config/reported":
        entry["config"] = data


def fleet_rows(kiosks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    now = time.time() * 1000
    for kiosk in sorted(kiosks):
        e = kiosks[kiosk]
        state, health = e.get("state") or {}, e.get("health") or {}
        online = bool(state.get("online")) if state else None
        # Health is newer than the birth when the mode changed since connecting.
        mode = health.get("mode") if health.get("ts", 0) >= state.get("ts", 0) else state.get("mode")
        mode = mode or state.get("mode") or health.get("mode")
        versions = state.get("versions") or {}
        alarms = sorted(e["alarms"] | set(health.get("alarms") or []))
        outbox = health.get("outbox") or {}
        config = e.get("config") or {}
        rows.append({"kiosk": kiosk, "online": online, "mode": mode, "alarms": alarms,
                     "last_seen_s": round((now - e["last_seen"]) / 1000, 1) if e["last_seen"] else None,
                     "agent": versions.get("agent"), "firmware": versions.get("firmware"),
                     "backlog": _backlog(outbox), "refused_cmds": (health.get("commands") or {}).get("refused"),
                     "config_version": config.get("version"),
                     "config_status": config.get("status"), "site": state.get("site")})
    return rows


def _backlog(outbox: dict[str, Any]) -> int | None:
    """Messages waiting in the kiosk's outbox (health ``outbox.depth`` per class, or ``pending``)."""
    depth = outbox.get("depth")
    if isinstance(depth, dict):
        return sum(v for v in depth.values() if isinstance(v, int))
    pending = outbox.get("pending")
    return pending if isinstance(pending, int) else None


def fleet_table(rows: list[dict[str, Any]]) -> str:
    headers = ["KIOSK", "ONLINE", "MODE", "ALARMS", "LAST SEEN", "AGENT", "FW", "BACKLOG", "REFUSED", "CONFIG"]
    lines = [[r["kiosk"], {True: "yes", False: "NO", None: "?"}[r["online"]], r["mode"] or "?",
              ",".join(r["alarms"]) or "-", _ago(r["last_seen_s"]), r["agent"] or "-", r["firmware"] or "-",
              "-" if r["backlog"] is None else str(r["backlog"]),
              "-" if r["refused_cmds"] is None else str(r["refused_cmds"]),
              "-" if r["config_version"] is None else f"v{r['config_version']} {r['config_status'] or ''}".strip()]
             for r in rows]
    return _table(headers, lines)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{max(0, int(seconds))}s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)}m ago"
    return f"{int(seconds // 3600)}h ago"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [headers, *rows])


def cmd_fleet(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            rows = fleet_rows(collect_fleet(client, args.fleet, args.wait))
    except FleetError as exc:
        return _err(str(exc))
    if not rows:
        # A typo in --fleet looks like an empty fleet; neither is a success.
        if args.json:
            print("[]")
        return _err(f"no kiosk seen in fleet {args.fleet!r} on {args.broker} (no retained state, health or "
                    "alarm): check the fleet id")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(fleet_table(rows))
    online = sum(1 for r in rows if r["online"])
    alarmed = sum(1 for r in rows if r["alarms"])
    print(f"\n{_count(len(rows), 'kiosk')}, {online} online, {alarmed} with alarms", file=sys.stderr)
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- cmd -----------------------------------------------------------------------------

def parse_arg(text: str) -> tuple[str, Any]:
    """``mode=maintenance``, ``force=true``, ``lines=50``, ``config=@file``, ``x:=<json>``."""
    if ":=" in text:
        key, _, raw = text.partition(":=")
        return key, json.loads(raw)
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"argument {text!r}: expected key=value")
    if value.startswith("@"):
        return key, Path(value[1:]).read_text(encoding="utf-8")
    if value in ("true", "false"):
        return key, value == "true"
    try:
        return key, int(value)
    except ValueError:
        return key, value


def check_args(name: str, cmd_args: dict[str, Any]) -> str | None:
    """What the kiosk would refuse as cmd.unknown_command / cmd.bad_arguments, caught before sending."""
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown command {name!r}; known: {', '.join(sorted(SPECS))}"
    for arg, value in cmd_args.items():
        if arg not in spec.args:
            return f"{name}: unknown argument {arg!r}; takes: {', '.join(sorted(spec.args)) or 'none'}"
        if not spec.args[arg][0](value):
            what = expected(spec.args[arg][0])
            return f"{name}: argument {arg}={value!r} is invalid" + (f"; expected {what}" if what else "")
    missing = [arg for arg, (_check, required) in spec.args.items() if required and arg not in cmd_args]
    return f"{name}: missing argument {missing[0]}" if missing else None


def send_commands(client: FleetClient, fleet: str, kiosks: list[str], name: str, cmd_args: dict[str, Any],
                  key_id: str, key: Any, *, ttl: float, timeout: float,
                  on_update: Callable[[str, dict[str, Any]], None] = lambda _k, _d: None) -> dict[str, Any]:
    """Sign and send ``name`` to each kiosk; return kiosk → terminal result (None if none came)."""
    corr: dict[str, str] = {}
    for kiosk in kiosks:
        client.subscribe(Topics(fleet, kiosk).cmd_result(name))
    if len(kiosks) > 1:
        client.subscribe(f"{ROOT}/{fleet}/+/cmd/{name}/result")
    for kiosk in kiosks:
        topics = Topics(fleet, kiosk)
        doc = sign(command_envelope(name, cmd_args, fleet=fleet, kiosk=kiosk, ttl_s=ttl), key_id, key, KIND_CMD)
        cid = os.urandom(16)
        corr[cid.hex()] = kiosk
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.cmd_result(name)
        props.CorrelationData = cid
        client.publish(topics.cmd(name), json.dumps(doc, separators=(",", ":")).encode("utf-8"), qos=1,
                       properties=props)
    results: dict[str, Any] = dict.fromkeys(kiosks)
    accepted: set[str] = set()
    deadline = time.monotonic() + timeout
    while any(r is None for r in results.values()) and time.monotonic() < deadline:
        for msg in client.messages(timeout=min(0.5, max(0.01, deadline - time.monotonic()))):
            data = _decode(msg.payload)
            if not isinstance(data, dict):
                continue
            got_props = getattr(msg, "properties", None)
            got = getattr(got_props, "CorrelationData", None) if got_props else None
            key_hex = got.hex() if isinstance(got, bytes) else str(data.get("correlation"))
            target = corr.get(key_hex)
            if target is None or results[target] is not None:
                continue
            status = data.get("status")
            if status == "accepted":
                accepted.add(target)
            if status == "refused" and data.get("code") == "cmd.replayed" and target in accepted:
                continue    # a QoS 1 duplicate of our own command, already running
            on_update(target, data)
            if status in TERMINAL:
                results[target] = data
            break
    return results


def _signing_key(args: argparse.Namespace) -> tuple[str, Any]:
    return load_key(Path(args.key).expanduser(), args.key_id)


def _discover(client: FleetClient, fleet: str, wait: float) -> list[str]:
    rows = fleet_rows(collect_fleet(client, fleet, wait))
    return [r["kiosk"] for r in rows if r["online"]]


def last_state(client: FleetClient, fleet: str, kiosk: str, wait: float) -> dict[str, Any] | None:
    """The kiosk's retained birth or will, or None if the broker holds none (never seen)."""
    topic = Topics(fleet, kiosk).state
    client.subscribe(topic)
    for msg in client.messages(timeout=wait):
        data = _decode(msg.payload)
        if msg.topic == topic and isinstance(data, dict):
            return data
    return None


def _check_target(client: FleetClient, args: argparse.Namespace, kiosk: str) -> str | None:
    """Why sending to ``kiosk`` is pointless, or None; warns when it is offline."""
    state = last_state(client, args.fleet, kiosk, args.discover)
    if state is None:
        # A kiosk that never connected has no session at the broker: the
        # command would be dropped and we would wait for the whole timeout.
        return (f"kiosk {kiosk!r} was never seen in fleet {args.fleet!r} (the broker holds no state for it): "
                "check the id with kioskctl fleet (--no-check sends anyway)")
    if not state.get("online") and not args.json:
        print(f"{kiosk} is offline since {time.strftime('%H:%M:%S', time.localtime(state.get('ts', 0) / 1000))} "
              f"({state.get('reason', 'will')}); the broker keeps the command until it is back or --ttl passes",
              file=sys.stderr, flush=True)
    return None


def cmd_cmd(args: argparse.Namespace) -> int:
    words: list[str] = list(args.words)
    kiosk: str = ""
    try:
        if args.all:
            name, rest = words[0], words[1:]
        else:
            kiosk, name, rest = words[0], words[1], words[2:]
        cmd_args = dict(parse_arg(w) for w in rest)
    except IndexError:
        return _err("usage: kioskctl cmd KIOSK NAME [key=value ...]  or  kioskctl cmd --all NAME [key=value ...]")
    except (ValueError, OSError) as exc:
        return _err(str(exc))
    problem = None if args.no_check else check_args(name, cmd_args)
    if problem:
        return _err(f"{problem} (use --no-check to send it anyway)")
    try:
        key_id, key = _signing_key(args)
        with _client(args) as client:
            kiosks = _discover(client, args.fleet, args.discover) if args.all else [kiosk]
            if not kiosks:
                return _err(f"no online kiosk in fleet {args.fleet!r}")
            problem = None if args.all or args.no_check else _check_target(client, args, kiosk)
            if problem:
                return _err(problem)
            if args.all and not args.json:
                print(f"sending {name} to {_count(len(kiosks), 'kiosk')} of {args.fleet}", file=sys.stderr)
            results = send_commands(client, args.fleet, kiosks, name, cmd_args, key_id, key, ttl=args.ttl,
                                    timeout=args.timeout, on_update=_progress(args, len(kiosks) > 1))
    except (FleetError, KeyError_) as exc:
        return _err(str(exc))
    codes = [EXIT.get(r.get("status") if r else None, 1) for r in results.values()]
    devices = selftest_rows(results[kiosks[0]]) if name == "selftest" and not args.all else None
    if devices is not None:
        print(selftest_output(devices, as_json=args.json))
    elif args.json:
        print(json.dumps(results if args.all else results[kiosks[0]], ensure_ascii=False))
    elif args.all:
        print(_table(["KIOSK", "STATUS", "CODE", "MESSAGE"],
                     [[k, (r or {}).get("status", "NO RESULT"), (r or {}).get("code", "-"),
                       str((r or {}).get("message", ""))[:60]] for k, r in sorted(results.items())]))
        counts: dict[str, int] = {}
        for r in results.values():
            counts[(r or {}).get("status", "no result")] = counts.get((r or {}).get("status", "no result"), 0) + 1
        print("\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=sys.stderr)
    else:
        r = results[kiosks[0]]
        if r is None:
            print(f"{kiosks[0]}: no result within {args.timeout:g}s", file=sys.stderr)
        elif r.get("result") is not None:
            print(json.dumps(r["result"], indent=2, ensure_ascii=False))
    return max(codes) if args.all else codes[0]


def selftest_rows(result: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The device rows of a selftest result (passed or failed), or None if it carries none."""
    rows = ((result or {}).get("result") or {}).get("devices")
    return rows if isinstance(rows, list) else None


def selftest_output(rows: list[dict[str, Any]], *, as_json: bool) -> str:
    """What ``kiosk-agent selftest`` prints on the kiosk, from the kiosk's answer."""
    if as_json:
        return json.dumps(rows, ensure_ascii=False)
    from agent.wire.selftest import format_table  # the one definition of the table
    from hal.device import SelftestResult
    table = format_table([SelftestResult(str(r.get("device")), bool(r.get("passed")), str(r.get("reason") or ""))
                          for r in rows])
    failed = [str(r.get("device")) for r in rows if not r.get("passed")]
    return f"{table}\n\nself-test {'FAILED: ' + ', '.join(failed) if failed else 'passed'}"


def _progress(args: argparse.Namespace, many: bool) -> Callable[[str, dict[str, Any]], None]:
    def show(kiosk: str, data: dict[str, Any]) -> None:
        if args.json or (many and data.get("status") not in TERMINAL):
            return
        pct = f" {data['progress']:>3}%" if "progress" in data else ""
        extra = " ".join(str(data[k]) for k in ("code", "message") if data.get(k))
        print(f"{time.strftime('%H:%M:%S')} {kiosk} {data.get('name')} {data.get('status')}{pct} {extra}".rstrip(),
              file=sys.stderr, flush=True)
    return show


# -- config push ---------------------------------------------------------------------

def cmd_config_push(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        return _err(f"cannot read {args.file}: {exc}")
    if not args.no_check:
        try:
            parse_config(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ConfigError) as exc:
            return _err(f"{args.file}: {exc} (use --no-check to send it anyway)")
    version = args.version if args.version is not None else int(time.time())
    try:
        key_id, key = _signing_key(args)
        doc = sign(config_envelope(text, version, fleet=args.fleet, kiosk=args.kiosk,
                                   confirm_within_s=args.confirm_within), key_id, key, KIND_CONFIG)
        topics = Topics(args.fleet, args.kiosk)
        with _client(args) as client:
            client.subscribe(topics.config_reported)
            client.publish(topics.config_desired, json.dumps(doc).encode("utf-8"), qos=1, retain=True)
            final = None
            for msg in client.messages(timeout=args.timeout):
                data = _decode(msg.payload)
                if not isinstance(data, dict):
                    continue
                mine = data.get("desired_version") == version or (data.get("version") == version
                                                                   and data.get("status") != "pending")
                if not mine:
                    continue
                if not args.json:
                    print(f"{time.strftime('%H:%M:%S')} {args.kiosk} config v{version} {data.get('status')} "
                          f"{data.get('code', '')} {data.get('message', '')}".rstrip(), file=sys.stderr, flush=True)
                if data.get("status") != "pending":
                    final = data
                    break
    except (FleetError, KeyError_) as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps(final))
    if final is None:
        return 4
    return 0 if final.get("status") in ("applied", "in_force") else (3 if final.get("status") == "refused" else 1)


# -- tx tail -------------------------------------------------------------------------

def cmd_tx_tail(args: argparse.Namespace) -> int:
    return follow(args, f"{ROOT}/{args.fleet}/{args.kiosk}/tx",
                  as_json=lambda msg: {"topic": msg.topic, "payload": _decode(msg.payload)})


def cmd_tx_ack(args: argparse.Namespace) -> int:
    """Sign and publish a back-office acknowledgement, then report what the kiosk made of it.

    The kiosk answers a tx/ack in its next health report: ``outbox.tx``
    ``unacked`` falls by the ids it marked, ``acks_refused`` rises if it
    refused the acknowledgement (unknown key, bad signature).
    """
    n = len(args.ids)
    try:
        key_id, key = _signing_key(args)
        doc = sign(ack_document(args.kiosk, list(args.ids)), key_id, key, KIND_ACK)
        topics = Topics(args.fleet, args.kiosk)
        with _client(args) as client:
            client.subscribe(topics.health)
            before = _ack_counters(next(iter(client.messages(timeout=args.discover)), None))
            rc = client.publish(topics.tx_ack, json.dumps(doc).encode("utf-8"), qos=1)
            if rc != 0:
                return _err(f"publish failed (rc {rc})")
            print(f"sent tx/ack for {n} transaction(s) of {args.kiosk}"
                  + (f"; waiting up to {args.wait:g}s for its next health report" if args.wait > 0 else ""),
                  file=sys.stderr, flush=True)
            after = None
            for msg in client.messages(timeout=args.wait):
                counters = _ack_counters(msg)
                if counters is not None and (before is None or counters["ts"] > before["ts"]):
                    after = counters
                    break
    except (FleetError, KeyError_) as exc:
        return _err(str(exc))
    if args.wait <= 0:
        status = "sent"
    elif after is None:
        status = "unconfirmed"
    elif before is not None and after["refused"] > before["refused"]:
        status = "refused"
    else:
        status = "confirmed"
    if args.json:
        print(json.dumps({"kiosk": args.kiosk, "ids": list(args.ids), "status": status,
                          "unacked_before": before and before["unacked"], "unacked_after": after and after["unacked"]}))
    elif status == "unconfirmed":
        print(f"{args.kiosk}: nothing confirmed: no health report within {args.wait:g}s (it reports every "
              "health.interval_s; raise --wait)", file=sys.stderr)
    elif status == "refused" and before is not None and after is not None:
        print(f"{args.kiosk} REFUSED the acknowledgement (refused acks {before['refused']} -> {after['refused']}): "
              f"is key {key_id!r} in its evidence.ack_public_keys?", file=sys.stderr)
    elif status == "confirmed" and after is not None:
        was = f" (was {before['unacked']})" if before is not None else ""
        print(f"{args.kiosk} confirmed: {after['unacked']} transaction(s) still unacknowledged{was}", file=sys.stderr)
    return {"sent": 0, "confirmed": 0, "refused": 3, "unconfirmed": 4}[status]


def cmd_tx_resend(args: argparse.Namespace) -> int:
    """Ask a kiosk to publish a range of its journal again (signed ``tx-resend``); exit status as ``cmd``."""
    cmd_args = {"epoch": args.epoch, "from_seq": args.from_seq, "to_seq": args.to_seq}
    problem = check_args("tx-resend", cmd_args)
    if problem:
        return _err(problem)
    if args.to_seq < args.from_seq:
        return _err(f"--to {args.to_seq} is before --from {args.from_seq}")
    try:
        key_id, key = _signing_key(args)
        with _client(args) as client:
            results = send_commands(client, args.fleet, [args.kiosk], "tx-resend", cmd_args, key_id, key,
                                    ttl=args.ttl, timeout=args.timeout, on_update=_progress(args, False))
    except (FleetError, KeyError_) as exc:
        return _err(str(exc))
    r = results[args.kiosk]
    if args.json:
        print(json.dumps(r, ensure_ascii=False))
    elif r is None:
        print(f"{args.kiosk}: no result within {args.timeout:g}s", file=sys.stderr)
    elif r.get("status") == "succeeded":
        out = r.get("result") or {}
        missing = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in out.get("missing") or [])
        print(f"{args.kiosk}: {out.get('queued')} record(s) queued again, {out.get('already_queued')} already "
              f"queued" + (f"; no longer held: {missing}" if missing else ""))
    return EXIT.get(r.get("status") if r else None, 1)


def _ack_counters(msg: Any) -> dict[str, int] | None:
    """``ts``, ``unacked`` and ``refused`` from a health message's ``outbox.tx``."""
    data = _decode(msg.payload) if msg is not None else None
    if not isinstance(data, dict):
        return None
    tx = (data.get("outbox") or {}).get("tx")
    if not isinstance(tx, dict):
        return None
    return {"ts": int(data.get("ts") or 0), "unacked": int(tx.get("unacked") or 0),
            "refused": int(tx.get("acks_refused") or 0)}


# -- registration --------------------------------------------------------------------

def _signing_args(p: argparse.ArgumentParser, key_help: str = "operator private key (kioskctl keys init)") -> None:
    add_broker_args(p)
    p.add_argument("--fleet", required=True, help="fleet id, as in the kiosks' [kiosk] fleet")
    p.add_argument("--key", required=True, help=key_help)
    p.add_argument("--key-id", help="key id (default: the key file name without .key)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="operator signing keys").add_subparsers(dest="keys_command", required=True)
    init = keys.add_parser("init", help="create an Ed25519 key pair; print the kiosk config lines")
    init.add_argument("--dir", default="~/.kioskctl", help="where to write ID.key (0600) and ID.pub")
    init.add_argument("--id", required=True, help="key id, as kiosks will know it")
    init.add_argument("--role", choices=("operator", "admin", "backoffice"), default="operator",
                      help="backoffice: a key that signs tx/ack (evidence.ack_public_keys)")
    init.add_argument("--json", action="store_true", help="the paths and public key as JSON, for scripts")
    init.set_defaults(func=cmd_keys_init)

    fleet = sub.add_parser("fleet", help="table of the fleet's kiosks from their retained messages")
    add_broker_args(fleet)
    fleet.add_argument("--fleet", required=True, help="fleet id, as in the kiosks' [kiosk] fleet")
    fleet.add_argument("--wait", type=float, default=1.5, help="seconds to collect retained messages (max)")
    fleet.add_argument("--json", action="store_true", help="one JSON list of rows, for scripts")
    fleet.set_defaults(func=cmd_fleet)

    cmd = sub.add_parser("cmd", help="sign and send a command; follow it; exit status from the result",
                         usage="kioskctl cmd [options] {KIOSK | --all} NAME [KEY=VALUE ...]",
                         description="Sign NAME with --key, send it to KIOSK (or every online kiosk of the "
                                     "fleet with --all), show its progress and exit with its outcome: 0 "
                                     "succeeded, 1 failed, 2 usage or broker error, 3 refused, 4 no result. "
                                     "Values: true/false, integers, @FILE for a file's text, KEY:=JSON.")
    _signing_args(cmd)
    cmd.add_argument("--all", action="store_true", help="every online kiosk of the fleet, with a summary")
    cmd.add_argument("--ttl", type=float, default=300, help="seconds the command stays valid")
    cmd.add_argument("--timeout", type=float, default=120, help="seconds to wait for the result")
    cmd.add_argument("--discover", type=float, default=1.5,
                     help="seconds to read the fleet's (with --all) or the kiosk's retained state")
    cmd.add_argument("--no-check", action="store_true",
                     help="do not check the name, the arguments or that the kiosk was ever seen")
    cmd.add_argument("words", nargs="+", metavar="WORD", help="KIOSK NAME [KEY=VALUE ...], or NAME [...] with --all")
    cmd.set_defaults(func=cmd_cmd)

    config = sub.add_parser("config", help="desired configuration").add_subparsers(dest="config_command",
                                                                                  required=True)
    push = config.add_parser("push", help="sign and publish a desired configuration (retained)")
    _signing_args(push)
    push.add_argument("kiosk", help="the kiosk id")
    push.add_argument("file", help="the whole agent.toml the kiosk is to run")
    push.add_argument("--version", type=int, help="must increase (default: now, in epoch seconds)")
    push.add_argument("--confirm-within", type=int, default=60,
                      help="roll back unless the broker is reached within this many seconds")
    push.add_argument("--no-check", action="store_true", help="do not validate the file locally first")
    push.add_argument("--timeout", type=float, default=120, help="seconds to wait for the kiosk's report")
    push.set_defaults(func=cmd_config_push)

    tx = sub.add_parser("tx", help="citizen transactions").add_subparsers(dest="tx_command", required=True)
    tail = tx.add_parser("tail", help="follow transaction records",
                         description="One line per transaction record: seq, service, outcome, the masked ID "
                                     "number and payment reference, the receipt and whether evidence follows.")
    add_follow_args(tail, "record")
    tail.set_defaults(func=cmd_tx_tail)
    ack = tx.add_parser("ack", help="sign and publish tx/ack for committed transaction ids (back office)")
    _signing_args(ack, "back-office private key (kioskctl keys init --role backoffice)")
    ack.add_argument("kiosk", help="the kiosk id")
    ack.add_argument("ids", nargs="+", metavar="ID", help="transaction (record) ids the back office committed")
    ack.add_argument("--wait", type=float, default=30,
                     help="seconds to wait for the kiosk's next health report saying what it marked (0: do not)")
    ack.add_argument("--discover", type=float, default=1.5, help="seconds to read the kiosk's retained health")
    ack.set_defaults(func=cmd_tx_ack)
    resend = tx.add_parser("resend", help="ask a kiosk to publish a range of its journal again (signed tx-resend)",
                           description="Sign tx-resend with --key (a back-office key, role backoffice, or an "
                                       "operator's) and send it to KIOSK: the records FROM..TO of EPOCH are "
                                       "queued again, the same bytes. Exit status: 0 succeeded, 1 failed "
                                       "(tx.epoch_gone, tx.range_gone, ...), 2 usage or broker error, 3 "
                                       "refused, 4 no result.")
    _signing_args(resend, "back-office private key (kioskctl keys init --role backoffice) or an operator's")
    resend.add_argument("kiosk", help="the kiosk id")
    resend.add_argument("--epoch", required=True, help="the journal epoch of the records (32 hex digits)")
    resend.add_argument("--from", dest="from_seq", type=int, required=True, help="first seq to send again")
    resend.add_argument("--to", dest="to_seq", type=int, required=True,
                        help="last seq to send again (at most 10,000 records a request)")
    resend.add_argument("--ttl", type=float, default=300, help="seconds the request stays valid")
    resend.add_argument("--timeout", type=float, default=60, help="seconds to wait for the result")
    resend.set_defaults(func=cmd_tx_resend)
