# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger status`` and ``kiosk-ledger export``: what the ledger holds, for people and for systems.

    rows = status_rows(conn, "north")                 # per kiosk: last seq, lag, gaps, quarantine
    print(status_table(rows))
    n = export(conn, "north", since, sys.stdout, fmt="jsonl")

``export`` writes the fleet's transactions committed since a moment, as
JSON Lines or CSV, for the departments' systems. Records carry only masked
forms by contract (agent/wire/schemas/tx.json); the export checks that
again, record by record (:func:`pii_problems`), and withholds any record
that breaks it, naming kiosk, seq and field on stderr: nothing in clear
leaves through it, and nothing is silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["status_rows", "status_table", "export", "pii_problems", "parse_since", "register", "EXIT_WITHHELD",
           "sealed_evidence", "gap_rows"]

EXIT_WITHHELD = 3       # export: some records were withheld (the rest was written)

# 14 or more digits in a row (spaces or dashes between groups allowed), optionally ending in X: a resident
# ID number (15/18), a bank card (16-19) or a payment code (18). As the kiosk's own log masking.
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){13,}[Xx]?(?![0-9])")
_MASKED = re.compile(r"^([0-9A-Za-z]{2}\*+[0-9A-Za-z]{4}|\*+)$")
# Keys that would carry citizen data in clear; a record never has them (tx.json).
_FORBIDDEN_KEYS = frozenset({"name", "address", "id_number", "photo", "photo_wlt", "face", "face_jpeg", "mailing",
                             "birth", "nation", "card"})

# Index-driven per kiosk (PK (kiosk, epoch, seq), the partial indexes of pending and ack-due rows), so a
# status of 54,000 kiosks with a year of records each reads a few pages per kiosk, never its history.
_STATUS_SQL = """
SELECT k.kiosk, k.fleet, e.epoch, h.seq, l.seq,
       (SELECT count(*) FROM tx p WHERE p.kiosk = k.kiosk AND p.linked_at IS NULL),
       (SELECT count(*) FROM tx a WHERE a.fleet = k.fleet AND a.kiosk = k.kiosk AND a.linked_at IS NOT NULL
           AND a.acked_at IS NULL),
       extract(epoch FROM now() - h.received_at)::float8, h.received_at, h.ts_ms,
       coalesce(g.open, 0), coalesce(g.missing, 0),
       (SELECT count(*) FROM quarantine q WHERE q.kiosk = k.kiosk),
       (SELECT count(*) FROM epochs x WHERE x.kiosk = k.kiosk)
FROM kiosks k
LEFT JOIN LATERAL (SELECT epoch FROM epochs WHERE epochs.kiosk = k.kiosk ORDER BY first_seen_at DESC, epoch
                   LIMIT 1) e ON true
LEFT JOIN LATERAL (SELECT seq, received_at, ts_ms FROM tx WHERE tx.kiosk = k.kiosk AND tx.epoch = e.epoch
                   ORDER BY seq DESC LIMIT 1) h ON true
LEFT JOIN LATERAL (SELECT seq FROM tx WHERE tx.kiosk = k.kiosk AND tx.epoch = e.epoch AND linked_at IS NOT NULL
                   ORDER BY seq DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (SELECT count(*) AS open, sum(to_seq - from_seq + 1) AS missing FROM gaps
                   WHERE gaps.kiosk = k.kiosk AND closed_at IS NULL) g ON true
WHERE %(fleet)s::text IS NULL OR k.fleet = %(fleet)s
ORDER BY k.fleet, k.kiosk
"""


def status_rows(conn: Any, fleet: str | None = None) -> list[dict[str, Any]]:
    """One row per registered kiosk (of ``fleet``; None: all); one more for quarantined unregistered senders.

    ``last_seq`` / ``linked_seq``: the highest seq stored / linked in its newest epoch; ``pending`` and
    ``unacked`` count every epoch; ``idle_s``: since that head record arrived, ``delay_s``: how late it came.
    """
    rows = []
    for (kiosk, kfleet, epoch, last_seq, linked_seq, pending, unacked, idle_s, last_at, last_ts_ms, gaps,
         missing, quarantined, epochs) in conn.execute(_STATUS_SQL, {"fleet": fleet}).fetchall():
        delay = None
        if last_at is not None and last_ts_ms is not None:
            delay = round(last_at.timestamp() - last_ts_ms / 1000, 3)
        rows.append({"kiosk": kiosk, "fleet": kfleet, "epoch": epoch, "epochs": int(epochs), "last_seq": last_seq,
                     "linked_seq": linked_seq, "pending": int(pending or 0),
                     "unacked": int(unacked or 0), "idle_s": None if idle_s is None else round(idle_s, 1),
                     "delay_s": delay, "gaps_open": int(gaps), "missing": int(missing),
                     "quarantined": int(quarantined)})
    stray = conn.execute("SELECT count(*) FROM quarantine q WHERE (%(fleet)s::text IS NULL OR q.fleet = %(fleet)s) "
                         "AND NOT EXISTS (SELECT 1 FROM kiosks k WHERE k.kiosk = q.kiosk)",
                         {"fleet": fleet}).fetchone()[0]
    conn.rollback()
    if stray:
        rows.append({"kiosk": None, "fleet": fleet, "epoch": None, "epochs": 0, "last_seq": None,
                     "linked_seq": None, "pending": 0, "unacked": 0, "idle_s": None,
                     "delay_s": None, "gaps_open": 0, "missing": 0, "quarantined": int(stray)})
    return rows


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 172_800:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def status_table(rows: list[dict[str, Any]]) -> str:
    headers = ["KIOSK", "FLEET", "EPOCH", "LAST SEQ", "LINKED", "PENDING", "UNACKED", "LAST RECORD", "DELAY", "GAPS",
               "QUARANTINE"]
    lines = []
    for r in rows:
        epoch = (r["epoch"] or "-")[:8] + ("+" if r["epochs"] > 1 else "")     # +: an earlier epoch too
        lines.append([r["kiosk"] or "(unregistered)", r["fleet"] or "-", epoch,
                      "-" if r["last_seq"] is None else str(r["last_seq"]),
                      "-" if r["linked_seq"] is None else str(r["linked_seq"]), str(r["pending"]), str(r["unacked"]),
                      _ago(r["idle_s"]) + (" ago" if r["idle_s"] is not None else ""),
                      "-" if r["delay_s"] is None else f"{r['delay_s']:.1f}s",
                      f"{r['gaps_open']} ({r['missing']} seq)" if r["gaps_open"] else "0", str(r["quarantined"])])
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line).rstrip() for line in [headers, *lines])


# -- export ------------------------------------------------------------------------------

def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``2026-11-30T00:00:00+08:00``, ``2026-11-30`` (UTC midnight) or relative ``90m``, ``24h``, ``7d``."""
    now = now or dt.datetime.now(dt.UTC)
    match = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - dt.timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: amount})
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected an ISO 8601 time (2026-11-30T08:00:00+08:00), a date, "
                         "or 90m / 24h / 7d") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def pii_problems(value: Any, path: str = "data") -> list[str]:
    """Where ``value`` (a record's data) holds what may be citizen data in clear; empty when clean."""
    problems: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in _FORBIDDEN_KEYS and item not in (None, "", False):
                problems.append(f"{where}: a field that would carry citizen data")
            elif key.endswith("masked") and item is not None and not (isinstance(item, str) and _MASKED.match(item)):
                problems.append(f"{where}: not a masked form")
            else:
                problems.extend(pii_problems(item, where))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems.extend(pii_problems(item, f"{path}[{i}]"))
    elif isinstance(value, str) and _DIGIT_RUN.search(value):
        problems.append(f"{path}: a run of 14 or more digits (an ID, card or payment number?)")
    return problems


CSV_COLUMNS = ["received_at", "fleet", "kiosk", "epoch", "seq", "id", "ts", "type", "service", "outcome", "reason",
               "id_masked", "receipt", "duration_ms", "evidence", "data"]


def _records(conn: Any, fleet: str | None, since: dt.datetime) -> Iterator[tuple[Any, ...]]:
    # A server-side cursor (inside a transaction, as PostgreSQL wants): a year's export does not sit in memory.
    with conn.transaction(), conn.cursor(name="ledger_export") as cur:
        cur.itersize = 2000
        cur.execute("SELECT received_at, fleet, kiosk, epoch, seq, id, ts_ms, payload FROM tx WHERE "
                    "(%(fleet)s::text IS NULL OR fleet = %(fleet)s) AND received_at >= %(since)s "
                    "ORDER BY received_at, kiosk, epoch, seq", {"fleet": fleet, "since": since})
        yield from cur


def export(conn: Any, fleet: str | None, since: dt.datetime, out: IO[str], *, fmt: str = "jsonl",
           errors: IO[str] = sys.stderr) -> tuple[int, int]:
    """Write the records (of ``fleet``; None: all) committed at or after ``since``; returns (written, withheld)."""
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    written = withheld = 0
    for received_at, rfleet, kiosk, epoch, seq, record_id, ts_ms, payload in _records(conn, fleet, since):
        data = json.loads(bytes(payload)).get("data")
        data = data if isinstance(data, dict) else {}
        problems = pii_problems(data)
        if problems:
            withheld += 1
            print(f"kiosk-ledger export: withheld {kiosk} epoch {epoch} seq {seq} (id {record_id}): "
                  f"{'; '.join(problems)[:300]}", file=errors)
            continue
        when = received_at.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        ts = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
        if writer is not None:
            writer.writerow([when, rfleet, kiosk, epoch, seq, record_id, ts, data.get("type"), data.get("service"),
                             data.get("outcome"), data.get("reason"), data.get("id_masked"), data.get("receipt"),
                             data.get("duration_ms"), data.get("evidence"),
                             json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)])
        else:
            out.write(json.dumps({"received_at": when, "fleet": rfleet, "kiosk": kiosk, "epoch": epoch, "seq": seq,
                                  "id": record_id, "ts": ts, "data": data}, ensure_ascii=False,
                                 separators=(",", ":")) + "\n")
        written += 1
    return written, withheld


def sealed_evidence(conn: Any, tx_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The ``evidence`` payloads the ledger stored (sealed, as received) for ``tx_ids``: id -> payload."""
    rows = conn.execute("SELECT tx_id, payload FROM evidence WHERE tx_id = ANY(%s)", (list(tx_ids),)).fetchall()
    conn.rollback()
    out: dict[str, dict[str, Any]] = {}
    for tx_id, payload in rows:
        doc = json.loads(bytes(payload))
        if isinstance(doc, dict):
            out[tx_id] = doc
    return out


# -- the subcommands -------------------------------------------------------------------------

def _connect(args: argparse.Namespace) -> tuple[Any, str | None]:
    """A connection (``--db``, else the configuration's dsn) and the fleet (``--fleet``, else the config's)."""
    from fleet.ledger.config import load_ledger_config
    from fleet.ledger.db import connect
    from fleet.ledger.errors import LedgerConfigError
    fleet, dsn = args.fleet, args.db
    if args.config:
        cfg = load_ledger_config(Path(args.config))
        dsn, fleet = dsn or cfg.database.dsn, fleet or cfg.ledger.fleet
    if not dsn:
        raise LedgerConfigError("give --config LEDGER.toml or --db DSN")
    return connect(dsn), fleet


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0, or 1 when something wants a look: an open gap or a quarantined message."""
    conn, fleet = _connect(args)
    try:
        rows = status_rows(conn, fleet)
    finally:
        conn.close()
    # Pending alone is normal (records reorder between workers); a gap past the window is not.
    attention = any(r["gaps_open"] or r["quarantined"] for r in rows)
    if args.json:
        print(json.dumps(rows))
        return 1 if attention else 0
    print(status_table(rows))
    kiosks = [r for r in rows if r["kiosk"]]
    print(f"\n{len(kiosks)} kiosk(s){' in ' + fleet if fleet else ''}: {sum(r['pending'] for r in kiosks)} "
          f"record(s) pending, {sum(r['unacked'] for r in kiosks)} not yet acknowledged, "
          f"{sum(r['gaps_open'] for r in kiosks)} gap(s) open, {sum(r['quarantined'] for r in rows)} quarantined",
          file=sys.stderr)
    return 1 if attention else 0


def gap_rows(conn: Any, fleet: str | None = None, *, closed: bool = False) -> list[dict[str, Any]]:
    """Open gaps (with ``closed``: every gap), oldest first."""
    rows = conn.execute(
        "SELECT g.kiosk, g.epoch, g.from_seq, g.to_seq, extract(epoch FROM now() - g.seen_at)::float8, g.requests, "
        "g.requested_at, g.closed_at, g.outcome, g.detail, g.kind FROM gaps g JOIN kiosks k USING (kiosk) "
        "WHERE (%(fleet)s::text IS NULL OR k.fleet = %(fleet)s) AND (%(closed)s OR g.closed_at IS NULL) "
        "ORDER BY g.seen_at", {"fleet": fleet, "closed": closed}).fetchall()
    conn.rollback()
    return [{"kiosk": k, "epoch": e, "from_seq": f, "to_seq": t, "age_s": round(age, 1), "requests": n,
             "requested_at": r.isoformat() if r else None, "closed_at": c.isoformat() if c else None,
             "outcome": o, "detail": d, "kind": kind} for k, e, f, t, age, n, r, c, o, d, kind in rows]


def cmd_gaps(args: argparse.Namespace) -> int:
    """Exit 1 when a gap is open (or, with --all, was lost)."""
    conn, fleet = _connect(args)
    try:
        rows = gap_rows(conn, fleet, closed=args.all)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows))
    else:
        lines = [[r["kiosk"], r["epoch"][:8], f"{r['from_seq']}-{r['to_seq']}" + (" bundle" if r["kind"] == "evidence"
                                                                                   else ""),
                  _ago(r["age_s"]), str(r["requests"]),
                  r["outcome"] or "OPEN", (r["detail"] or "")[:60]] for r in rows]
        headers = ["KIOSK", "EPOCH", "SEQS", "AGE", "ASKED", "OUTCOME", "DETAIL"]
        widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        print("\n".join(fmt.format(*line).rstrip() for line in [headers, *lines]))
    return 1 if any(r["outcome"] in (None, "lost") for r in rows) else 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"kiosk-ledger: {exc}", file=sys.stderr)
        return 2
    conn, fleet = _connect(args)
    try:
        if args.out and args.out != "-":
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                written, withheld = export(conn, fleet, since, out, fmt=args.format)
        else:
            written, withheld = export(conn, fleet, since, sys.stdout, fmt=args.format)
    finally:
        conn.close()
    print(f"kiosk-ledger export: {written} record(s){' of ' + fleet if fleet else ''} since {since.isoformat()}"
          + (f"; {withheld} WITHHELD (see above)" if withheld else ""), file=sys.stderr)
    return EXIT_WITHHELD if withheld else 0


def register(sub: Any) -> None:
    """Add ``status``, ``gaps`` and ``export`` to ``kiosk-ledger``'s subparsers."""
    def db_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="the ledger's TOML file (database.dsn, ledger.fleet)")
        p.add_argument("--db", help="PostgreSQL connection string (instead of --config)")
        p.add_argument("--fleet", help="only this fleet (default: the configuration's; with --db only: all)")

    status = sub.add_parser("status", help="per kiosk: last seq, lag, pending, unacknowledged, gaps, quarantine",
                            description="One line per registered kiosk, its newest epoch: the highest seq stored "
                                        "and the highest linked in chain, records pending (predecessor missing) and "
                                        "not yet acknowledged, when its last record came and how late, open gaps "
                                        "(and how many seqs), quarantined messages. Exit 1 when an open gap or a "
                                        "quarantined message wants a look.")
    db_args(status)
    status.add_argument("--json", action="store_true", help="one JSON list of rows")
    status.set_defaults(func=cmd_status)
    gaps = sub.add_parser("gaps", help="open gaps (with --all: filled and lost ones too)",
                          description="Runs of missing seqs: kiosk, epoch, range, age, how often asked for with "
                                      "tx-resend, and how they ended (filled, or lost: the kiosk no longer has "
                                      "them). Exit 1 when one is open or lost.")
    db_args(gaps)
    gaps.add_argument("--all", action="store_true", help="closed gaps too")
    gaps.add_argument("--json", action="store_true", help="one JSON list")
    gaps.set_defaults(func=cmd_gaps)
    exp = sub.add_parser("export", help="transactions since a time, JSON Lines or CSV (masked forms only)",
                         description="Every record committed at or after --since, in commit order. Records carry "
                                     "masked forms only; one that does not (a field that could be citizen data) "
                                     f"is withheld and named on stderr, exit {EXIT_WITHHELD}.")
    db_args(exp)
    exp.add_argument("--since", required=True, help="ISO 8601 time or date, or 90m / 24h / 7d ago")
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="JSON Lines (default) or CSV")
    exp.add_argument("--out", help="file to write (default: standard output)")
    exp.set_defaults(func=cmd_export)
