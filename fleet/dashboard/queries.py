# SPDX-License-Identifier: Apache-2.0
"""The dashboard's SQL: the JSON API's answers from the history tables and the ledger's own.

Every function takes an open connection and returns what docs/dashboard-api.md
shows, times already in the dashboard's zone. None of them reads a
transaction payload into Python: PostgreSQL extracts ``data.service`` and
``data.outcome`` and only those (and counts) leave the database, so a
record's masked ID number never reaches a response.

Transactions "today" and in reports are bounded on ``tx.received_at``, the
column with the BRIN index (a record is received after it was made, give or
take a day of kiosk clock skew), then filtered on the kiosk's ``ts_ms``: the
scan reads the recent end of ``tx``, never all of it. No index is added to
``tx`` for the dashboard (the ingest path pays for every one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.rows import dict_row

from fleet.dashboard.db import Conn

__all__ = ["Clock", "TxToday", "fleet_rows", "fleet_summary", "kiosk_detail", "kiosk_series", "alarms",
           "alarm_episode", "changed_alarms", "ack_alarm", "tx_report", "audit_entries", "kioskctl_actions",
           "iso", "OUTCOMES", "STATUSES"]

OUTCOMES = ("completed", "abandoned", "failed")
STATUSES = ("online", "offline", "alarm", "paper", "maintenance", "never_seen")
SEVERITIES = ("critical", "warning", "info")
DAY = dt.timedelta(days=1)


class Clock:
    """The dashboard's zone and its days ("today", report days)."""

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)
        self.name = zone

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.zone)

    def today(self) -> dt.date:
        return self.now().date()

    def day_start(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), tzinfo=self.zone)


def iso(value: dt.datetime | None, zone: ZoneInfo) -> str | None:
    """ISO 8601 with offset in ``zone`` (microseconds kept: an alarm's key round-trips exactly)."""
    return None if value is None else value.astimezone(zone).isoformat()


def _ms_iso(value: Any, zone: ZoneInfo) -> str | None:
    """An alarm's ``since`` as kiosk_status keeps it (epoch ms, or an ISO string) in ``zone``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return iso(dt.datetime.fromtimestamp(value / 1000, dt.UTC), zone)
    if isinstance(value, str):
        try:
            return iso(dt.datetime.fromisoformat(value), zone)
        except ValueError:
            return None
    return None


def _obj(value: Any) -> dict[str, Any]:
    """``value`` if a JSON object, else an empty one (history columns are what kiosks sent)."""
    return value if isinstance(value, dict) else {}


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


# -- transactions today -----------------------------------------------------------------------------------

_TX_PER_KIOSK = """
SELECT kiosk, count(*) FROM tx
WHERE received_at >= %(lower)s AND received_at < %(upper)s AND ts_ms >= %(start)s AND ts_ms < %(end)s
  AND kind = 'session' AND fleet = %(fleet)s
GROUP BY kiosk
"""
# A row's received_at is its inserting transaction's start; ingest commits within milliseconds, so rows
# received more than this long ago are all visible and are counted once, then kept.
SETTLE = dt.timedelta(minutes=5)
FOREVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


class TxToday:
    """Session records per kiosk with a kiosk time in today (the dashboard's zone).

    Counted incrementally: rows received before a settled cutoff are counted once and kept; each refresh
    (at most every ``refresh_s``) adds what settled since and recounts only the last few minutes. So the
    fleet page and every live row read the same counts, and a refresh costs minutes of rows, not the day's.
    """

    def __init__(self, fleet: str, clock: Clock, *, refresh_s: float) -> None:
        self.fleet, self.clock, self.refresh_s = fleet, clock, refresh_s
        self._day: dt.date | None = None
        self._at = 0.0
        self._settled: dict[str, int] = {}
        self._cutoff = FOREVER
        self._counts: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def _count(self, conn: Conn, lower: dt.datetime, upper: dt.datetime, day: dt.date) -> dict[str, int]:
        start, end = self.clock.day_start(day), self.clock.day_start(day + DAY)
        cur = await conn.execute(_TX_PER_KIOSK, {"lower": lower, "upper": upper, "start": _ms(start), "end": _ms(end),
                                                 "fleet": self.fleet})
        return {kiosk: int(n) for kiosk, n in await cur.fetchall()}

    async def counts(self, conn: Conn) -> dict[str, int]:
        async with self._lock:
            day = self.clock.today()
            if day == self._day and time.monotonic() - self._at < self.refresh_s:
                return self._counts
            if day != self._day:
                # A record is received after it was made, give or take a day of kiosk clock skew: the BRIN
                # index on received_at bounds the first scan of a day to its last two days of rows.
                self._day, self._settled, self._cutoff = day, {}, self.clock.day_start(day) - DAY
            cur = await conn.execute("SELECT now() - %s", (SETTLE,))
            row = await cur.fetchone()
            assert row is not None
            settled_until: dt.datetime = max(row[0], self._cutoff)
            if settled_until > self._cutoff:
                for kiosk, n in (await self._count(conn, self._cutoff, settled_until, day)).items():
                    self._settled[kiosk] = self._settled.get(kiosk, 0) + n
                self._cutoff = settled_until
            counts = dict(self._settled)
            for kiosk, n in (await self._count(conn, self._cutoff, FOREVER, day)).items():
                counts[kiosk] = counts.get(kiosk, 0) + n
            self._counts, self._at = counts, time.monotonic()
            return counts


# -- the fleet --------------------------------------------------------------------------------------------

# Only what a row shows leaves PostgreSQL: the printer's state rather than the whole health document (1,000
# kiosks' health parsed into Python would be most of the fleet page's time).
_FLEET_SQL = """
SELECT coalesce(s.kiosk, k.kiosk) AS kiosk, s.site, s.online, s.online_since, s.last_seen, s.mode,
       s.active_alarms::text AS active_alarms,
       s.versions ->> 'agent' AS agent, s.versions ->> 'firmware' AS firmware,
       (SELECT bool_or(p.value ->> 'state' IN ('ok', 'degraded'))
        FROM jsonb_each(CASE WHEN jsonb_typeof(s.health -> 'peripherals') = 'object' THEN s.health -> 'peripherals'
                             ELSE '{}' END) p
        WHERE p.key = 'printer' OR s.peripherals -> p.key ->> 'kind' = 'printer') AS printer_answers
FROM (SELECT * FROM kiosk_status WHERE fleet = %(fleet)s) s
FULL OUTER JOIN (SELECT kiosk FROM kiosks WHERE fleet = %(fleet)s) k ON k.kiosk = s.kiosk
WHERE %(only)s::text[] IS NULL OR coalesce(s.kiosk, k.kiosk) = ANY(%(only)s::text[])
ORDER BY 1
"""


def _paper(codes: set[str], printer_answers: bool | None) -> str:
    """ok | low | out | unknown: the paper alarms, else whether the kiosk's printer answers at all.

    ``printer_answers``: its last health state is ok or degraded (the printer: the peripheral named
    ``printer`` or of kind ``printer`` in the birth's inventory).
    """
    if "paper_out" in codes:
        return "out"
    if "paper_low" in codes:
        return "low"
    return "ok" if printer_answers else "unknown"


def _fleet_row(r: dict[str, Any], tx_today: dict[str, int], zone: ZoneInfo) -> dict[str, Any]:
    # As text, parsed only when not empty: most kiosks have no alarm, and decoding 1,000 jsonb values was a
    # third of the fleet page's time.
    raw = r["active_alarms"]
    alarms = json.loads(raw) if raw and raw != "[]" else []
    active = [a for a in alarms if isinstance(a, dict) and isinstance(a.get("code"), str)] if isinstance(
        alarms, list) else []
    counts = dict.fromkeys(SEVERITIES, 0)
    for alarm in active:
        if alarm.get("severity") in counts:
            counts[alarm["severity"]] += 1
    return {"kiosk": r["kiosk"], "site": r["site"], "online": r["online"], "online_since": iso(r["online_since"], zone),
            "last_seen": iso(r["last_seen"], zone), "mode": r["mode"], "alarms": counts,
            "active_alarms": [{"code": a["code"], "severity": a.get("severity"), "since": _ms_iso(a.get("since"), zone)}
                              for a in active],
            "paper": _paper({a["code"] for a in active}, r["printer_answers"]),
            "tx_today": tx_today.get(r["kiosk"], 0),
            "versions": {"agent": r["agent"], "firmware": r["firmware"]}}


async def fleet_rows(conn: Conn, fleet: str, tx_today: dict[str, int], zone: ZoneInfo,
                     only: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One ``/api/fleet`` row per kiosk of ``fleet`` (or of those in ``only``), by kiosk id."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FLEET_SQL, {"fleet": fleet, "only": list(only) if only is not None else None})
        return [_fleet_row(r, tx_today, zone) for r in await cur.fetchall()]


def row_status(row: dict[str, Any]) -> set[str]:
    """The ``status`` filter values a fleet row matches."""
    found = set()
    if row["online"] is None:
        found.add("never_seen")
    else:
        found.add("online" if row["online"] else "offline")
    if any(row["alarms"].values()):
        found.add("alarm")
    if row["paper"] in ("low", "out"):
        found.add("paper")
    if row["mode"] == "maintenance":
        found.add("maintenance")
    return found


def fleet_summary(rows: list[dict[str, Any]], *, site: str | None = None, q: str | None = None,
                  status: str | None = None) -> dict[str, Any]:
    """The filtered rows, the per-site overview and the totals (of the filtered rows)."""
    needle = (q or "").strip().lower()
    kept = [r for r in rows
            if (site is None or r["site"] == site)
            and (not needle or needle in r["kiosk"].lower() or needle in (r["site"] or "").lower())
            and (status is None or status in row_status(r))]
    sites: dict[str, dict[str, Any]] = {}
    totals: dict[str, Any] = {"kiosks": 0, "online": 0, "offline": 0, "never_seen": 0,
                              "alarms": dict.fromkeys(SEVERITIES, 0), "tx_today": 0}
    for r in kept:
        name = r["site"] or ""
        entry = sites.setdefault(name, {"site": r["site"], "kiosks": 0, "online": 0, "offline": 0,
                                        "alarms": dict.fromkeys(SEVERITIES, 0), "tx_today": 0})
        for bucket in (entry, totals):
            bucket["kiosks"] += 1
            if r["online"] is True:
                bucket["online"] += 1
            elif r["online"] is False:
                bucket["offline"] += 1
            elif "never_seen" in bucket:
                bucket["never_seen"] += 1
            for severity, n in r["alarms"].items():
                bucket["alarms"][severity] += n
            bucket["tx_today"] += r["tx_today"]
    return {"kiosks": kept, "sites": [sites[k] for k in sorted(sites)], "totals": totals}


# -- one kiosk --------------------------------------------------------------------------------------------

_ALARM_COLUMNS = ("a.kiosk, s.site, a.code, a.severity, a.raised_at, a.cleared_at, a.detail, a.latched, a.device, "
                  "a.acked_by, a.acked_at, a.ack_note")

_LEDGER_SQL = """
SELECT e.epoch, h.seq AS last_seq, h.received_at AS last_tx_at, h.ts_ms,
       (SELECT count(*) FROM gaps g WHERE g.kiosk = %(kiosk)s AND g.closed_at IS NULL) AS gaps_open,
       (SELECT count(*) FROM quarantine q WHERE q.kiosk = %(kiosk)s) AS quarantined,
       (SELECT count(*) FROM tx a WHERE a.fleet = %(fleet)s AND a.kiosk = %(kiosk)s AND a.linked_at IS NOT NULL
           AND a.acked_at IS NULL) AS unacked
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT epoch FROM epochs WHERE epochs.kiosk = %(kiosk)s ORDER BY first_seen_at DESC, epoch
                   LIMIT 1) e ON true
LEFT JOIN LATERAL (SELECT seq, received_at, ts_ms FROM tx WHERE tx.kiosk = %(kiosk)s AND tx.epoch = e.epoch
                   ORDER BY seq DESC LIMIT 1) h ON true
"""


def alarm_json(r: dict[str, Any], zone: ZoneInfo, now: dt.datetime) -> dict[str, Any]:
    """An alarm episode as ``/api/alarms`` shows it."""
    raised, cleared = r["raised_at"], r["cleared_at"]
    return {"kiosk": r["kiosk"], "site": r.get("site"), "code": r["code"], "severity": r["severity"],
            "raised_at": iso(raised, zone), "cleared_at": iso(cleared, zone),
            "age_s": round((now - raised).total_seconds(), 1),
            "duration_s": None if cleared is None else round((cleared - raised).total_seconds(), 1),
            "detail": r["detail"], "latched": r["latched"], "device": r.get("device"),
            "acked_by": r["acked_by"], "acked_at": iso(r["acked_at"], zone), "ack_note": r["ack_note"]}


def kioskctl_actions(fleet: str, kiosk: str, broker: str, key: str, *, tamper_latched: bool) -> list[dict[str, str]]:
    """The exact ``kioskctl`` lines for the kiosk page (the dashboard holds no key that could send them)."""
    base = f"kioskctl cmd --fleet {fleet} --broker {broker} --key {key} {kiosk}"
    actions = [("set_mode_maintenance", "set-mode mode=maintenance"),
               ("set_mode_in_service", "set-mode mode=in_service"),
               ("print_test_page", "print-test-page"), ("selftest", "selftest")]
    if tamper_latched:
        actions.append(("ack_tamper", "ack-alarm code=tamper"))
    return [{"action": name, "command": f"{base} {words}"} for name, words in actions]


async def kiosk_detail(conn: Conn, fleet: str, kiosk: str, tx_today: dict[str, int], zone: ZoneInfo, *,
                       broker: str, key: str) -> dict[str, Any] | None:
    """``/api/kiosks/{kiosk}``; None when the kiosk is neither registered nor ever heard from."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT kiosk_status.*, now() AS now FROM kiosk_status WHERE kiosk = %s AND fleet = %s",
                          (kiosk, fleet))
        status = await cur.fetchone()
        await cur.execute("SELECT kiosk, now() AS now FROM kiosks WHERE kiosk = %s AND fleet = %s", (kiosk, fleet))
        registered = await cur.fetchone()
        if status is None and registered is None:
            return None
        now = (status or registered or {})["now"]
        await cur.execute(f"SELECT {_ALARM_COLUMNS} FROM alarm_history a LEFT JOIN kiosk_status s ON s.kiosk = a.kiosk "
                          "WHERE a.kiosk = %s AND a.fleet = %s ORDER BY a.raised_at DESC LIMIT 200", (kiosk, fleet))
        episodes = await cur.fetchall()
        await cur.execute(_LEDGER_SQL, {"kiosk": kiosk, "fleet": fleet})
        ledger: dict[str, Any] = await cur.fetchone() or {}
        # The newest status of each command (correlation + name); results without a correlation stand alone.
        await cur.execute("""
            SELECT name, status, code, message, ts FROM (
                SELECT DISTINCT ON (correlation, name) name, status, code, message, ts FROM cmd_results
                WHERE kiosk = %(kiosk)s AND fleet = %(fleet)s AND correlation <> ''
                ORDER BY correlation, name, ts DESC, received_at DESC) latest
            UNION ALL
            SELECT name, status, code, message, ts FROM cmd_results
            WHERE kiosk = %(kiosk)s AND fleet = %(fleet)s AND correlation = ''
            ORDER BY ts DESC LIMIT 50""", {"kiosk": kiosk, "fleet": fleet})
        commands = await cur.fetchall()
    s: dict[str, Any] = status or {}
    health = _obj(s.get("health"))
    system = _obj(health.get("system"))
    inventory = _obj(s.get("peripherals"))
    states = _obj(health.get("peripherals"))
    peripherals = []
    for name in sorted(set(inventory) | set(states)):
        item, state = _obj(inventory.get(name)), _obj(states.get(name))
        peripherals.append({"name": name, "kind": item.get("kind"), "state": state.get("state", "unknown"),
                            "detail": state.get("detail") or state.get("code") or "",
                            "simulated": bool(item.get("simulated", False))})
    versions = _obj(s.get("versions"))
    open_episodes = [e for e in episodes if e["cleared_at"] is None]
    active = [{k: v for k, v in alarm_json(e, zone, now).items()
               if k in ("code", "severity", "detail", "latched", "acked_by", "acked_at", "ack_note")}
              | {"since": iso(e["raised_at"], zone)} for e in sorted(open_episodes, key=lambda e: e["raised_at"])]
    history = [{k: v for k, v in alarm_json(e, zone, now).items()
                if k in ("code", "severity", "raised_at", "cleared_at", "duration_s", "detail", "acked_by", "acked_at",
                         "ack_note")} for e in episodes]
    lag = None
    if ledger.get("last_tx_at") is not None and ledger.get("ts_ms") is not None:
        lag = round(ledger["last_tx_at"].timestamp() - ledger["ts_ms"] / 1000, 3)
    tamper_latched = any(e["code"] == "tamper" for e in open_episodes)
    return {
        "kiosk": kiosk, "fleet": fleet, "site": s.get("site"), "online": s.get("online"),
        "online_since": iso(s.get("online_since"), zone), "last_seen": iso(s.get("last_seen"), zone),
        "mode": s.get("mode"), "versions": {"agent": versions.get("agent"), "firmware": versions.get("firmware")},
        "health_at": iso(s.get("health_at"), zone), "peripherals": peripherals,
        "system": {"disk_free_mb": system.get("disk_free_mb"), "disk_total_mb": system.get("disk_total_mb"),
                   "cpu_temp_c": system.get("cpu_temp_c"), "uptime_s": system.get("uptime_s")},
        "active_alarms": active, "alarm_history": history,
        "commands": [{"name": c["name"], "status": c["status"], "code": c["code"], "message": c["message"],
                      "ts": iso(c["ts"], zone)} for c in commands],
        "ledger": {"epoch": ledger.get("epoch"), "last_seq": ledger.get("last_seq"),
                   "last_tx_at": iso(ledger.get("last_tx_at"), zone), "lag_s": lag,
                   "gaps_open": int(ledger.get("gaps_open") or 0), "quarantined": int(ledger.get("quarantined") or 0),
                   "unacked": int(ledger.get("unacked") or 0)},
        "tx_today": tx_today.get(kiosk, 0),
        "actions": kioskctl_actions(fleet, kiosk, broker, key, tamper_latched=tamper_latched),
    }


async def kiosk_exists(conn: Conn, fleet: str, kiosk: str) -> bool:
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM kiosk_status WHERE kiosk = %(k)s AND fleet = %(f)s) OR "
                             "EXISTS (SELECT 1 FROM kiosks WHERE kiosk = %(k)s AND fleet = %(f)s)",
                             {"k": kiosk, "f": fleet})
    row = await cur.fetchone()
    return bool(row and row[0])


async def kiosk_series(conn: Conn, fleet: str, kiosk: str, hours: int, zone: ZoneInfo) -> dict[str, Any]:
    """``/api/kiosks/{kiosk}/series``: health columns, session records per hour, online periods."""
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    now: dt.datetime = row[0]
    start = now - dt.timedelta(hours=hours)
    cur = await conn.execute(
        "SELECT floor(extract(epoch FROM ts))::bigint, disk_free_mb, cpu_temp_c, outbox_backlog, connects "
        "FROM health_history WHERE kiosk = %s AND fleet = %s AND ts >= %s ORDER BY ts", (kiosk, fleet, start))
    health = await cur.fetchall()
    reconnects: list[int | None] = []
    previous = None
    for *_rest, connects in health:
        if connects is None:
            reconnects.append(None)
            continue
        # agent.connects counts since the agent started: a drop means a restart, not negative reconnects.
        reconnects.append(0 if previous is None or connects < previous else int(connects - previous))
        previous = connects
    first_hour = int(start.timestamp()) // 3600
    last_hour = int(now.timestamp()) // 3600
    cur = await conn.execute(
        "SELECT ts_ms / 3600000 AS hour, count(*) FROM tx WHERE kiosk = %s AND fleet = %s AND received_at >= %s "
        "AND ts_ms >= %s AND kind = 'session' GROUP BY 1", (kiosk, fleet, start - DAY, first_hour * 3_600_000))
    per_hour = {int(h): int(n) for h, n in await cur.fetchall()}
    hours_axis = list(range(first_hour, last_hour + 1))
    cur = await conn.execute(
        "(SELECT ts, online FROM state_history WHERE kiosk = %(k)s AND fleet = %(f)s AND ts < %(s)s "
        " ORDER BY ts DESC, bd_seq DESC LIMIT 1) "
        "UNION ALL (SELECT ts, online FROM state_history WHERE kiosk = %(k)s AND fleet = %(f)s AND ts >= %(s)s) "
        "ORDER BY ts", {"k": kiosk, "f": fleet, "s": start})
    periods: list[dict[str, Any]] = []
    for ts, online in await cur.fetchall():
        if periods and periods[-1]["online"] == online:
            continue
        begin = max(ts, start)
        if periods:
            periods[-1]["to"] = iso(begin, zone)
        periods.append({"from": iso(begin, zone), "to": None, "online": online})
    return {"from": iso(start, zone), "to": iso(now, zone),
            "health": {"t": [int(h[0]) for h in health], "disk_free_mb": [h[1] for h in health],
                       "cpu_temp_c": [h[2] for h in health], "outbox_backlog": [h[3] for h in health],
                       "reconnects": reconnects},
            "tx_per_hour": {"t": [h * 3600 for h in hours_axis], "count": [per_hour.get(h, 0) for h in hours_axis]},
            "online": periods}


# -- alarms -----------------------------------------------------------------------------------------------

async def alarms(conn: Conn, fleet: str, zone: ZoneInfo, *, open_only: bool, since: dt.datetime | None
                 ) -> list[dict[str, Any]]:
    """Open episodes oldest first, or every episode raised since ``since`` newest first (at most 2,000)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        if open_only:
            await cur.execute(f"SELECT {_ALARM_COLUMNS}, now() AS now FROM alarm_history a "
                              "LEFT JOIN kiosk_status s ON s.kiosk = a.kiosk "
                              "WHERE a.fleet = %s AND a.cleared_at IS NULL ORDER BY a.raised_at, a.kiosk, a.code",
                              (fleet,))
        else:
            await cur.execute(f"SELECT {_ALARM_COLUMNS}, now() AS now FROM alarm_history a "
                              "LEFT JOIN kiosk_status s ON s.kiosk = a.kiosk "
                              "WHERE a.fleet = %s AND a.raised_at >= %s ORDER BY a.raised_at DESC, a.kiosk, a.code "
                              "LIMIT 2000", (fleet, since))
        rows = await cur.fetchall()
    return [alarm_json(r, zone, r["now"]) for r in rows]


async def alarm_episode(conn: Conn, fleet: str, kiosk: str, code: str, raised_at: dt.datetime
                        ) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_ALARM_COLUMNS}, now() AS now FROM alarm_history a "
                          "LEFT JOIN kiosk_status s ON s.kiosk = a.kiosk "
                          "WHERE a.fleet = %s AND a.kiosk = %s AND a.code = %s AND a.raised_at = %s",
                          (fleet, kiosk, code, raised_at))
        return await cur.fetchone()


async def changed_alarms(conn: Conn, fleet: str, kiosks: Iterable[str]) -> list[dict[str, Any]]:
    """The episodes of ``kiosks`` open or touched in the last hour (live.py sends the ones that changed)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_ALARM_COLUMNS}, a.updated_at, now() AS now FROM alarm_history a "
                          "LEFT JOIN kiosk_status s ON s.kiosk = a.kiosk "
                          "WHERE a.fleet = %s AND a.kiosk = ANY(%s) AND (a.cleared_at IS NULL "
                          "OR a.cleared_at > now() - interval '1 hour' OR a.updated_at > now() - interval '1 hour' "
                          "OR a.acked_at > now() - interval '1 hour') ORDER BY a.raised_at", (fleet, list(kiosks)))
        return await cur.fetchall()


async def ack_alarm(conn: Conn, fleet: str, kiosk: str, code: str, raised_at: dt.datetime, *, username: str,
                    note: str, remote: str) -> str:
    """Record the acknowledgement, its audit row and the live notification in one transaction.

    Returns ``"acked"``, ``"already"`` (someone was first) or ``"unknown"``.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE alarm_history SET acked_by = %s, acked_at = now(), ack_note = %s, updated_at = now() "
            "WHERE fleet = %s AND kiosk = %s AND code = %s AND raised_at = %s AND acked_by IS NULL RETURNING 1",
            (username, note, fleet, kiosk, code, raised_at))
        if await cur.fetchone() is None:
            cur = await conn.execute("SELECT 1 FROM alarm_history WHERE fleet = %s AND kiosk = %s AND code = %s "
                                     "AND raised_at = %s", (fleet, kiosk, code, raised_at))
            return "already" if await cur.fetchone() else "unknown"
        await audit(conn, username, "alarm_ack", f"{kiosk}/{code}",
                    {"raised_at": raised_at.isoformat(), "note": note}, remote)
        await conn.execute("SELECT pg_notify('kiosk_history', %s)", (json.dumps({"kiosk": kiosk, "what": "alarm"}),))
    return "acked"


# -- reports and audit ------------------------------------------------------------------------------------

_REPORT_KEYS = {
    "kiosk": "kiosk",
    "service": "coalesce(d ->> 'service', '')",
    "day": "to_char(to_timestamp(ts_ms / 1000.0) AT TIME ZONE %(zone)s, 'YYYY-MM-DD')",
}


async def tx_report(conn: Conn, fleet: str, clock: Clock, first: dt.date, last: dt.date, by: str
                    ) -> dict[str, Any]:
    """Session records per ``by`` key and outcome, kiosk time in [first, last] (the dashboard's days)."""
    start, end = clock.day_start(first), clock.day_start(last + DAY)
    # Each record's JSON is parsed once, as json (text, cheaper than jsonb for two fields), inside PostgreSQL.
    sql = f"""
        SELECT {_REPORT_KEYS[by]} AS key, d ->> 'outcome' AS outcome, count(*) AS n
        FROM (SELECT kiosk, ts_ms, convert_from(payload, 'UTF8')::json -> 'data' AS d FROM tx
              WHERE fleet = %(fleet)s AND received_at >= %(lower)s AND ts_ms >= %(start)s AND ts_ms < %(end)s
                AND kind = 'session') records
        GROUP BY 1, 2"""
    cur = await conn.execute(sql, {"fleet": fleet, "lower": start - DAY, "start": _ms(start), "end": _ms(end),
                                   "zone": clock.name})
    rows: dict[str, dict[str, Any]] = {}
    total: dict[str, Any] = {"key": "total", **dict.fromkeys(OUTCOMES, 0), "total": 0}
    for key, outcome, n in await cur.fetchall():
        entry = rows.setdefault(key, {"key": key, **dict.fromkeys(OUTCOMES, 0), "total": 0})
        for bucket in (entry, total):
            if outcome in OUTCOMES:
                bucket[outcome] += int(n)
            bucket["total"] += int(n)
    return {"from": first.isoformat(), "to": last.isoformat(), "by": by, "rows": [rows[k] for k in sorted(rows)],
            "total": total}


async def audit(conn: Conn, username: str, action: str, target: str = "", detail: dict[str, Any] | None = None,
                remote: str = "") -> None:
    """One audit row (login, login_failed, logout, alarm_ack, user_add, ...)."""
    await conn.execute("INSERT INTO audit (username, action, target, detail, remote) VALUES (%s, %s, %s, %s, %s)",
                       (username[:128], action, target[:256], json.dumps(detail or {}), remote[:128]))


async def audit_entries(conn: Conn, zone: ZoneInfo, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute("SELECT at, username, action, target, detail, remote FROM audit ORDER BY id DESC LIMIT %s",
                             (limit,))
    return [{"at": iso(at, zone), "username": username, "action": action, "target": target, "detail": detail,
             "remote": remote} for at, username, action, target, detail, remote in await cur.fetchall()]
