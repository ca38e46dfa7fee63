# SPDX-License-Identifier: Apache-2.0
"""The dashboard's JSON API and live stream against the real process and a real PostgreSQL.

History rows are written as fleet/ledger/history.py writes them (dashkit.put_*), ledger rows as the ingest
stores them; every answer is validated against fleet/dashboard/schemas/api.json. Also: the kiosk page's
kioskctl lines parse with kioskctl's own parser, no answer carries a citizen's ID number or name, the live
stream delivers after a NOTIFY, and a database outage is a 503 the process survives.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shlex
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from dashkit import EventStream, Http, login, put_alarm, put_health, put_status, put_tx, validate

from fleet import cli as kioskctl
from fleet.commands_cli import check_args, cmd_cmd, parse_arg
from fleet.dashboard import queries

PASSWORD = "correct horse battery"
ZONE = ZoneInfo("Asia/Shanghai")
HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def shanghai_day_start(days_ago: int = 0) -> int:
    today = dt.datetime.now(ZONE).date() - dt.timedelta(days=days_ago)
    return int(dt.datetime.combine(today, dt.time(), tzinfo=ZONE).timestamp() * 1000)


def session(service: str, outcome: str, **extra: Any) -> dict[str, Any]:
    return {"type": "session", "service": service, "outcome": outcome, "id_masked": "11**************34", **extra}


@pytest.fixture
def db(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def viewer(dashboard: Any, make_user: Any) -> Http:
    make_user("vera", "viewer", PASSWORD)
    return login(dashboard.url, "vera", PASSWORD)


def test_fleet_rows_filters_totals_and_tx_today(db: Any, viewer: Http) -> None:
    now = now_ms()
    put_status(db, "k1", site="site-a", active_alarms=[{"code": "paper_low", "severity": "warning", "since": now}],
               health={"peripherals": {"printer": {"state": "ok"}}})
    put_status(db, "k2", site="site-a", online=False, mode="maintenance",
               active_alarms=[{"code": "door_open", "severity": "critical", "since": now - 5000}])
    put_status(db, "k3", site="Site-B", peripherals={}, health={"peripherals": {}})
    put_status(db, "s1", fleet="south", site="site-a")          # another fleet's kiosk: never shown
    db.execute("INSERT INTO kiosks (kiosk, fleet) VALUES ('k4', 'north'), ('k3', 'north'), ('s2', 'south')")
    start = shanghai_day_start()
    seq = iter(range(1, 100))
    for outcome in ("completed", "abandoned", "failed"):
        put_tx(db, "k1", next(seq), session("pension", outcome), ts_ms=start + HOUR_MS)
    put_tx(db, "k1", next(seq), {"type": "synthetic", "service": "bill-water", "outcome": "completed"},
           ts_ms=start + HOUR_MS)
    put_tx(db, "k1", next(seq), session("pension", "completed"), ts_ms=start - 60_000)   # yesterday, Shanghai time
    # 00:01 in Shanghai is still the day before in UTC: counted only because days are the dashboard's zone's.
    put_tx(db, "k1", next(seq), session("pension", "completed"), ts_ms=start + 60_000)
    put_tx(db, "k2", 1, session("water", "completed"), ts_ms=now)
    put_tx(db, "s1", 1, session("water", "completed"), ts_ms=now, fleet="south")
    db.execute("UPDATE tx SET received_at = now() - interval '1 hour' WHERE kiosk = 'k1'")
    fleet = viewer.get_json("/api/fleet")
    validate(fleet, "fleet")
    assert fleet["fleet"] == "north" and fleet["today"] == dt.datetime.now(ZONE).date().isoformat()
    rows = {r["kiosk"]: r for r in fleet["kiosks"]}
    assert list(rows) == ["k1", "k2", "k3", "k4"]
    assert (rows["k1"]["online"], rows["k1"]["paper"], rows["k1"]["alarms"], rows["k1"]["tx_today"]) == (
        True, "low", {"critical": 0, "warning": 1, "info": 0}, 4)
    assert rows["k1"]["active_alarms"][0]["code"] == "paper_low"
    assert dt.datetime.fromisoformat(rows["k1"]["active_alarms"][0]["since"]).timestamp() == pytest.approx(now / 1000)
    assert rows["k1"]["last_seen"].endswith("+08:00") and rows["k1"]["versions"] == {"agent": "0.9.0",
                                                                                     "firmware": "1.2.0"}
    assert (rows["k2"]["online"], rows["k2"]["mode"], rows["k2"]["alarms"]["critical"], rows["k2"]["tx_today"],
            rows["k2"]["paper"]) == (False, "maintenance", 1, 1, "unknown")
    assert rows["k3"]["paper"] == "unknown" and rows["k3"]["tx_today"] == 0
    assert rows["k4"]["online"] is None and rows["k4"]["last_seen"] is None and rows["k4"]["site"] is None
    assert fleet["totals"] == {"kiosks": 4, "online": 2, "offline": 1, "never_seen": 1,
                               "alarms": {"critical": 1, "warning": 1, "info": 0}, "tx_today": 5}
    sites = {s["site"]: s for s in fleet["sites"]}
    assert (sites["site-a"]["kiosks"], sites["site-a"]["online"], sites["site-a"]["offline"],
            sites["site-a"]["tx_today"]) == (2, 1, 1, 5)

    def kiosks(query: str) -> list[str]:
        answer = viewer.get_json(f"/api/fleet?{query}")
        validate(answer, "fleet")
        return [r["kiosk"] for r in answer["kiosks"]]
    assert kiosks("status=alarm") == ["k1", "k2"]
    assert kiosks("status=paper") == ["k1"]
    assert kiosks("status=maintenance") == ["k2"]
    assert kiosks("status=offline") == ["k2"]
    assert kiosks("status=online") == ["k1", "k3"]
    assert kiosks("status=never_seen") == ["k4"]
    assert kiosks("site=Site-B") == ["k3"]
    assert kiosks("q=site-b") == ["k3"]
    assert kiosks("q=K2") == ["k2"]
    # Counted incrementally (k1's rows arrived an hour ago, k2's now): what settled is counted once and kept,
    # new rows are added, none twice.
    put_tx(db, "k3", 1, session("water", "completed"), ts_ms=now)
    for _ in range(2):
        assert [r["tx_today"] for r in viewer.get_json("/api/fleet")["kiosks"]] == [4, 1, 1, 0]
    bad = viewer.get("/api/fleet?status=burning")
    assert bad.status == 400 and bad.code == "request.invalid"
    # Without [dashboard] kioskctl_broker / kioskctl_key, the kiosk page's lines name the ledger's broker.
    for action in viewer.get_json("/api/kiosks/k1")["actions"]:
        args, *_rest = parse_kioskctl(action["command"])
        assert args.broker == "mqtt://127.0.0.1:1883" and args.key == "~/.kioskctl/operator.key"


def test_tx_today_scan_is_bounded_by_the_brin_index(db: Any) -> None:
    """The per-kiosk count can use tx_received_brin (no index of its own on tx: ingest pays for each one)."""
    db.execute("SET enable_seqscan = off")
    params = {"lower": dt.datetime.now(dt.UTC), "upper": queries.FOREVER, "start": 0, "end": 1, "fleet": "north"}
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + queries._TX_PER_KIOSK, params).fetchall())
    assert "tx_received_brin" in plan, plan


def parse_kioskctl(command: str) -> tuple[Any, str, str, dict[str, Any]]:
    """The shown line through kioskctl's own parser and argument checks (never run)."""
    argv = shlex.split(command)
    assert argv[0] == "kioskctl"
    args = kioskctl.build_parser().parse_args(argv[1:])
    assert args.func is cmd_cmd and not args.all
    kiosk, name, *rest = args.words
    cmd_args = dict(parse_arg(w) for w in rest)
    assert check_args(name, cmd_args) is None, command
    return args, kiosk, name, cmd_args


def test_kiosk_detail_actions_and_unknown(dsn: str, db: Any, start_dashboard: Any, make_user: Any) -> None:
    dash = start_dashboard(dashboard_extra='kioskctl_broker = "mqtts://broker.example:8883"\n'
                                           'kioskctl_key = "~/.kioskctl/ops-li.key"')
    make_user("vera", "viewer", PASSWORD)
    web = login(dash.url, "vera", PASSWORD)
    now = now_ms()
    health = {"system": {"uptime_s": 3600, "disk_free_mb": 1234, "disk_total_mb": 4000, "cpu_temp_c": 51.2},
              "peripherals": {"printer": {"state": "degraded", "detail": "paper low"}, "idcard": {"state": "ok"},
                              "scanner": {"state": "offline", "code": "scanner_offline"}}}
    put_status(db, "k1", health=health, active_alarms=[{"code": "tamper", "severity": "critical", "since": now}])
    put_alarm(db, "k1", "tamper", raised_ms=now - 60_000, severity="critical", latched=True, detail="enclosure")
    put_alarm(db, "k1", "door_open", raised_ms=now - 600_000, cleared_ms=now - 558_000, severity="critical")
    db.execute("UPDATE alarm_history SET acked_by = 'otto', acked_at = now(), ack_note = 'checked' "
               "WHERE code = 'door_open'")
    for corr, status, ts in (("ab", "accepted", now - 3000), ("ab", "succeeded", now - 2000),
                             ("cd", "failed", now - 1000)):
        db.execute("INSERT INTO cmd_results (kiosk, fleet, name, correlation, status, code, message, result, ts) "
                   "VALUES ('k1', 'north', %s, %s, %s, %s, %s, '{\"lines\": [\"secret-ish\"]}', %s)",
                   ("ping" if corr == "ab" else "selftest", corr, status,
                    "cmd.selftest_failed" if status == "failed" else None, "printer" if status == "failed" else None,
                    dt.datetime.fromtimestamp(ts / 1000, dt.UTC)))
    epoch = uuid.uuid4().hex
    db.execute("INSERT INTO epochs (kiosk, epoch) VALUES ('k1', %s)", (epoch,))
    for seq in (1, 2, 3):
        put_tx(db, "k1", seq, session("pension", "completed"), ts_ms=now - 1000, epoch=epoch)
    db.execute("UPDATE tx SET acked_at = now() WHERE seq = 1")
    db.execute("INSERT INTO gaps (kiosk, epoch, to_seq, from_seq, seen_at) VALUES ('k1', %s, 9, 5, now())", (epoch,))
    db.execute("INSERT INTO quarantine (topic, fleet, kiosk, kind, reason, detail, sha256, payload) VALUES "
               "('t', 'north', 'k1', 'tx', 'bad_signature', '', 'x', '\\x00')")
    detail = web.get_json("/api/kiosks/k1")
    validate(detail, "kiosk")
    assert [(p["name"], p["kind"], p["state"], p["detail"]) for p in detail["peripherals"]] == [
        ("idcard", "idcard", "ok", ""), ("printer", "printer", "degraded", "paper low"),
        ("scanner", None, "offline", "scanner_offline")]
    assert detail["system"] == {"disk_free_mb": 1234, "disk_total_mb": 4000, "cpu_temp_c": 51.2, "uptime_s": 3600}
    assert [(a["code"], a["latched"], a["detail"]) for a in detail["active_alarms"]] == [("tamper", True, "enclosure")]
    assert [(a["code"], a["duration_s"], a["acked_by"], a["ack_note"]) for a in detail["alarm_history"]] == [
        ("tamper", None, None, None), ("door_open", 42.0, "otto", "checked")]
    assert [(c["name"], c["status"], c["code"]) for c in detail["commands"]] == [
        ("selftest", "failed", "cmd.selftest_failed"), ("ping", "succeeded", None)]
    assert (detail["ledger"]["epoch"], detail["ledger"]["last_seq"], detail["ledger"]["gaps_open"],
            detail["ledger"]["quarantined"], detail["ledger"]["unacked"]) == (epoch, 3, 1, 1, 2)
    assert detail["tx_today"] == 3
    actions = {a["action"]: a["command"] for a in detail["actions"]}
    assert list(actions) == ["set_mode_maintenance", "set_mode_in_service", "print_test_page", "selftest",
                             "ack_tamper"]
    expected = {"set_mode_maintenance": ("set-mode", {"mode": "maintenance"}),
                "set_mode_in_service": ("set-mode", {"mode": "in_service"}), "print_test_page": ("print-test-page", {}),
                "selftest": ("selftest", {}), "ack_tamper": ("ack-alarm", {"code": "tamper"})}
    for action, command in actions.items():
        args, kiosk, name, cmd_args = parse_kioskctl(command)
        assert (args.fleet, args.broker, args.key, kiosk) == ("north", "mqtts://broker.example:8883",
                                                              "~/.kioskctl/ops-li.key", "k1")
        assert (name, cmd_args) == expected[action]
    # Cleared tamper: no ack line. A kiosk only registered: shown, empty. Unknown or another fleet's: 404.
    db.execute("UPDATE alarm_history SET cleared_at = now() WHERE code = 'tamper'")
    assert "ack_tamper" not in {a["action"] for a in web.get_json("/api/kiosks/k1")["actions"]}
    db.execute("INSERT INTO kiosks (kiosk, fleet) VALUES ('k4', 'north'), ('s1', 'south')")
    only_registered = web.get_json("/api/kiosks/k4")
    validate(only_registered, "kiosk")
    assert only_registered["online"] is None and only_registered["peripherals"] == []
    for path in ("/api/kiosks/nope", "/api/kiosks/s1", "/api/kiosks/nope/series", "/api/kiosks/" + "x" * 80):
        r = web.get(path)
        assert r.status == 404 and r.code == "kiosk.unknown", (path, r)


def test_series_health_reconnects_tx_and_online(db: Any, viewer: Http) -> None:
    now = now_ms()
    put_status(db, "k1")
    for hours_ago, connects in ((3, 5), (2, 7), (1.5, 2), (1, 4)):
        put_health(db, "k1", now - int(hours_ago * HOUR_MS), connects=connects, outbox_backlog=int(hours_ago * 2),
                   disk_free_mb=1000 - hours_ago)
    for seq in (1, 2):
        put_tx(db, "k1", seq, session("pension", "completed"), ts_ms=now - 2 * HOUR_MS)
    put_tx(db, "k1", 3, session("pension", "completed"), ts_ms=now - 30 * HOUR_MS)       # before the window
    for hours_ago, online, bd_seq in ((30, True, 1), (5, False, 1), (4, True, 2)):
        db.execute("INSERT INTO state_history (kiosk, fleet, ts, online, bd_seq) VALUES ('k1', 'north', %s, %s, %s)",
                   (dt.datetime.fromtimestamp((now - hours_ago * HOUR_MS) / 1000, dt.UTC), online, bd_seq))
    series = viewer.get_json("/api/kiosks/k1/series?hours=24")
    validate(series, "series")
    assert series["health"]["reconnects"] == [0, 2, 0, 2]     # the drop from 7 to 2 is an agent restart
    assert series["health"]["outbox_backlog"] == [6, 4, 3, 2]
    assert series["health"]["t"] == [int((now - h * HOUR_MS) / 1000) for h in (3, 2, 1.5, 1)]
    counts = dict(zip(series["tx_per_hour"]["t"], series["tx_per_hour"]["count"], strict=True))
    assert len(counts) in (24, 25) and sum(counts.values()) == 2
    assert counts[(now - 2 * HOUR_MS) // HOUR_MS * 3600] == 2
    periods = [(p["online"], p["to"] is None) for p in series["online"]]
    assert periods == [(True, False), (False, False), (True, True)]
    assert series["online"][0]["from"] == series["from"]
    assert len(viewer.get_json("/api/kiosks/k1/series?hours=1")["health"]["t"]) == 0
    for hours in ("0", "721", "abc"):
        r = viewer.get(f"/api/kiosks/k1/series?hours={hours}")
        assert r.status == 400 and r.code == "request.invalid", hours


def test_alarms_open_oldest_first_and_all(db: Any, viewer: Http) -> None:
    now = now_ms()
    put_status(db, "k1", site="site-a")
    put_status(db, "k2", site="site-b")
    put_alarm(db, "k1", "paper_low", raised_ms=now - 50_000)
    put_alarm(db, "k2", "door_open", raised_ms=now - 90_000, severity="critical")
    put_alarm(db, "k2", "temp_high", raised_ms=now - 9 * 86_400_000, severity="info")       # open 9 days
    put_alarm(db, "k1", "door_open", raised_ms=now - 3600_000, cleared_ms=now - 3590_000, severity="critical")
    put_alarm(db, "s1", "door_open", raised_ms=now - 1000, fleet="south")
    open_ = viewer.get_json("/api/alarms")
    validate(open_, "alarms")
    assert [(a["kiosk"], a["code"]) for a in open_["alarms"]] == [("k2", "temp_high"), ("k2", "door_open"),
                                                                    ("k1", "paper_low")]
    assert open_["alarms"][1]["site"] == "site-b" and open_["alarms"][1]["age_s"] >= 90
    every = viewer.get_json("/api/alarms?state=all")
    validate(every, "alarms")
    assert [(a["kiosk"], a["code"]) for a in every["alarms"]] == [("k1", "paper_low"), ("k2", "door_open"),
                                                                  ("k1", "door_open")]
    assert every["alarms"][2]["duration_s"] == 10.0
    since = dt.datetime.fromtimestamp((now - 10 * 86_400_000) / 1000, ZONE).isoformat()
    assert len(viewer.get_json(f"/api/alarms?state=all&since={since.replace('+', '%2B')}")["alarms"]) == 4
    for query in ("state=closed", "state=all&since=yesterday", "state=all&since=2026-01-01T00:00:00"):
        r = viewer.get(f"/api/alarms?{query}")
        assert r.status == 400 and r.code == "request.invalid", query


def test_reports_by_kiosk_service_day_and_csv(db: Any, viewer: Http) -> None:
    today, yesterday = shanghai_day_start(), shanghai_day_start(1)
    rows = [("k1", "pension", "completed", today + 60_000), ("k1", "pension", "abandoned", today + 120_000),
            ("k2", "=HYPERLINK(\"x\")", "completed", today + 180_000), ("k2", "water", "failed", yesterday + 1000),
            ("k2", "water", "completed", yesterday - 1000)]        # the day before yesterday: outside a 2-day range
    for seq, (kiosk, service, outcome, ts) in enumerate(rows, 1):
        put_tx(db, kiosk, seq, session(service, outcome), ts_ms=ts)
    put_tx(db, "k1", 99, {"type": "synthetic", "service": "pension", "outcome": "completed"}, ts_ms=today + 1)
    first = dt.datetime.fromtimestamp(yesterday / 1000, ZONE).date().isoformat()
    last = dt.datetime.fromtimestamp(today / 1000, ZONE).date().isoformat()
    by_service = viewer.get_json(f"/api/reports/tx?from={first}&to={last}&by=service")
    validate(by_service, "report")
    assert [(r["key"], r["completed"], r["abandoned"], r["failed"], r["total"]) for r in by_service["rows"]] == [
        ("=HYPERLINK(\"x\")", 1, 0, 0, 1), ("pension", 1, 1, 0, 2), ("water", 0, 0, 1, 1)]
    assert by_service["total"]["total"] == 4
    by_kiosk = viewer.get_json(f"/api/reports/tx?from={first}&to={last}&by=kiosk")
    assert [(r["key"], r["total"]) for r in by_kiosk["rows"]] == [("k1", 2), ("k2", 2)]
    by_day = viewer.get_json(f"/api/reports/tx?from={first}&to={last}&by=day")
    assert [(r["key"], r["total"]) for r in by_day["rows"]] == [(first, 1), (last, 3)]
    csv = viewer.get(f"/api/reports/tx?from={first}&to={last}&by=service&format=csv")
    assert csv.status == 200 and csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert csv.headers["Content-Disposition"] == f'attachment; filename="tx-service-{first}-{last}.csv"'
    assert csv.text.splitlines() == ["service,completed,abandoned,failed,total",
                                     "\"'=HYPERLINK(\"\"x\"\")\",1,0,0,1",     # never a live formula in a spreadsheet
                                     "pension,1,1,0,2", "water,0,0,1,1"]
    for query in (f"from={last}&to={first}", "from=2025-01-01&to=2026-01-02", "by=site", "from=30/11/2026",
                  "format=xlsx"):
        r = viewer.get(f"/api/reports/tx?{query}")
        assert r.status == 400 and r.code == "request.invalid", query


def test_no_response_carries_a_citizens_id_number_or_name(db: Any, dashboard: Any, make_user: Any) -> None:
    """Records that (wrongly) carry a full ID number, a name and an address: none of it leaves in any answer."""
    make_user("ada", "admin", PASSWORD)
    web = login(dashboard.url, "ada", PASSWORD)
    secrets_ = ("110101199003071234", "张三丰", "北京市东城区景山前街4号", "Zhang Sanfeng")
    now = now_ms()
    put_status(db, "k1", active_alarms=[{"code": "door_open", "severity": "critical", "since": now}])
    put_alarm(db, "k1", "door_open", raised_ms=now - 1000, severity="critical")
    for seq, service in enumerate(("pension", "water"), 1):
        put_tx(db, "k1", seq, session(service, "completed", id_number=secrets_[0], name=secrets_[1],
                                      address=secrets_[2], name_en=secrets_[3],
                                      id_masked=secrets_[0][:2] + "*" * 12 + secrets_[0][-4:]), ts_ms=now)
    stream = EventStream(web)
    try:
        day = dt.datetime.now(ZONE).date().isoformat()
        paths = ["/api/me", "/api/fleet", "/api/kiosks/k1", "/api/kiosks/k1/series?hours=720", "/api/alarms",
                 "/api/alarms?state=all", "/api/audit"]
        paths += [f"/api/reports/tx?from={day}&to={day}&by={by}{fmt}" for by in ("kiosk", "service", "day")
                  for fmt in ("", "&format=csv")]
        for path in paths:
            assert web.get(path).status == 200, path
        db.execute("SELECT pg_notify('kiosk_history', %s)", (json.dumps({"kiosk": "k1", "what": "alarm"}),))
        seen = [json.dumps(stream.next("kiosk"), ensure_ascii=False).encode(),
                json.dumps(stream.next("alarm"), ensure_ascii=False).encode()]
    finally:
        stream.close()
    bodies = web.seen + seen
    assert len(bodies) >= len(paths) + 2
    for body in bodies:
        for secret in secrets_:
            assert secret.encode() not in body, (secret, body[:300])
        assert b"id_masked" not in body and b"*" * 12 not in body       # not even the masked form


def test_live_stream_after_notify_and_ack(db: Any, dashboard: Any, make_user: Any) -> None:
    make_user("vera", "viewer", PASSWORD)
    make_user("otto", "operator", PASSWORD)
    viewer, operator = login(dashboard.url, "vera", PASSWORD), login(dashboard.url, "otto", PASSWORD)
    put_status(db, "k1")
    stream = EventStream(viewer)
    try:
        assert stream.response.status == 200
        assert stream.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert stream.response.headers["Cache-Control"] == "no-store"
        # The history worker changes a row and NOTIFYs in the same transaction.
        with db.transaction():
            db.execute("UPDATE kiosk_status SET online = false WHERE kiosk = 'k1'")
            db.execute("SELECT pg_notify('kiosk_history', %s)", (json.dumps({"kiosk": "k1", "what": "state"}),))
        row = stream.next("kiosk")
        validate(row, "fleet_row")
        assert row["kiosk"] == "k1" and row["online"] is False
        raised = now_ms() - 5000
        with db.transaction():
            put_alarm(db, "k1", "door_open", raised_ms=raised, severity="critical")
            db.execute("UPDATE kiosk_status SET active_alarms = %s WHERE kiosk = 'k1'",
                       (json.dumps([{"code": "door_open", "severity": "critical", "since": raised}]),))
            db.execute("SELECT pg_notify('kiosk_history', %s)", (json.dumps({"kiosk": "k1", "what": "alarm"}),))
        row = stream.next("kiosk", lambda r: r["alarms"]["critical"] == 1)
        alarm = stream.next("alarm")
        validate(alarm, "alarm")
        assert (alarm["kiosk"], alarm["code"], alarm["acked_by"]) == ("k1", "door_open", None)
        # An acknowledgement on the dashboard reaches every open page too.
        r = operator.post_json("/api/alarms/ack", {"kiosk": "k1", "code": "door_open",
                                                   "raised_at": alarm["raised_at"], "note": "on my way"})
        assert r.status == 200, r
        acked = stream.next("alarm", lambda a: a["acked_by"] is not None)
        assert (acked["acked_by"], acked["ack_note"]) == ("otto", "on my way")
        # Nonsense on the channel is ignored; the stream goes on.
        db.execute("SELECT pg_notify('kiosk_history', 'not json')")
        db.execute("SELECT pg_notify('kiosk_history', %s)", (json.dumps({"kiosk": "k1", "what": "health"}),))
        assert stream.next("kiosk")["kiosk"] == "k1"
        # SIGTERM with a stream open: the stream is ended and the process exits 0 at once.
        assert dashboard.terminate(timeout=10) == 0
        assert stream.wait_end(timeout=5)
    finally:
        stream.close()


def test_stream_keepalive_and_its_end_with_the_session(start_dashboard: Any, make_user: Any) -> None:
    dash = start_dashboard(dashboard_extra="sse_keepalive_s = 0.2")
    make_user("vera", "viewer", PASSWORD)
    web = login(dash.url, "vera", PASSWORD)
    stream = EventStream(web)
    try:
        comments = [data for event, data in itertools.islice(stream.events(timeout=10), 4) if event == "comment"]
        assert comments == ["connected", "keepalive", "keepalive", "keepalive"], comments
        head = web.request("HEAD", "/api/events")          # would hold a stream open for nothing
        assert head.status == 405, head
        assert web.post_json("/logout", {}).status == 200
        assert stream.wait_end(timeout=10), "the stream outlived its session"
    finally:
        stream.close()


def test_database_outage_is_503_and_the_dashboard_recovers(pg: Any, dsn: str, db: Any, dashboard: Any,
                                                            make_user: Any) -> None:
    make_user("vera", "viewer", PASSWORD)
    web = login(dashboard.url, "vera", PASSWORD)
    put_status(db, "k1")
    db.close()
    stream = EventStream(web)
    pg.halt()
    try:
        for path in ("/api/fleet", "/api/me", "/api/alarms"):
            r = web.get(path)
            assert r.status == 503 and r.code == "db.unavailable", (path, r)
            validate(r.json(), "error")
        r = Http(dashboard.url).post_form("/login", {"username": "vera", "password": PASSWORD})
        assert r.status == 503 and r.code == "db.unavailable"
        assert dashboard.alive()
    finally:
        pg.resume()
    deadline = time.monotonic() + 30
    while (r := web.get("/api/fleet")).status != 200:
        assert r.code == "db.unavailable" and time.monotonic() < deadline, r
        time.sleep(0.2)
    assert [k["kiosk"] for k in r.json()["kiosks"]] == ["k1"]
    # The live feed listens again and ends the old stream, so the page reloads what it missed.
    assert stream.wait_end(timeout=30), dashboard.log[-3000:]
    stream.close()
    fresh = EventStream(web)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('kiosk_history', %s)", (json.dumps({"kiosk": "k1", "what": "state"}),))
        assert fresh.next("kiosk")["kiosk"] == "k1"
    finally:
        fresh.close()
    log = dashboard.log
    assert log.count("lost the LISTEN connection") == 1 and "listening again" in log


def test_a_database_down_at_start_is_no_reason_to_stop(tmp_path: Any) -> None:
    """Started while PostgreSQL is unreachable: it serves, answers 503 db.unavailable, and says so once."""
    from dashkit import DashboardProcess, free_port, write_dashboard_config
    config = write_dashboard_config(tmp_path / "down.toml", dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    dash = DashboardProcess(tmp_path, config).start()
    try:
        web = Http(dash.url)
        r = web.post_form("/login", {"username": "vera", "password": PASSWORD})
        assert r.status == 503 and r.code == "db.unavailable", r
        web.cookies["kd_session"] = "x" * 43
        assert web.get("/api/fleet").code == "db.unavailable"
        assert dash.alive() and "serving anyway" in dash.log
        assert dash.terminate() == 0
    finally:
        dash.kill()


def test_a_large_fleet_answer_is_compressed_when_the_client_accepts_it(db: Any, viewer: Http) -> None:
    import gzip
    for i in range(120):
        put_status(db, f"k{i:03d}", site=f"site-{i // 4}")
    plain = viewer.get("/api/fleet")
    assert plain.status == 200 and "Content-Encoding" not in plain.headers and len(plain.body) > 32 * 1024
    packed = viewer.get("/api/fleet", headers={"Accept-Encoding": "gzip, deflate, br;q=0.9"})
    assert packed.status == 200 and packed.headers["Content-Encoding"] == "gzip"
    assert len(packed.body) < len(plain.body) / 4
    doc = json.loads(gzip.decompress(packed.body))
    validate(doc, "fleet")
    assert len(doc["kiosks"]) == 120 and doc["kiosks"] == plain.json()["kiosks"]
    refused = viewer.get("/api/fleet", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused.headers and refused.json()["kiosks"] == plain.json()["kiosks"]
    small = viewer.get("/api/me", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers          # not worth it under 32 KB


def test_the_brin_indexes_summarise_new_ranges_at_once(db: Any) -> None:
    """Schema step 5: an unsummarised BRIN range matches every query, and insert-only tx is rarely vacuumed."""
    options = dict(db.execute("SELECT c.relname, array_to_string(c.reloptions, ',') FROM pg_class c "
                              "WHERE c.relname IN ('tx_received_brin', 'health_history_brin')").fetchall())
    assert options == {"tx_received_brin": "autosummarize=on", "health_history_brin": "autosummarize=on"}
