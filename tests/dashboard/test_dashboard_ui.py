# SPDX-License-Identifier: Apache-2.0
"""The fleet dashboard in a browser, against the whole back office for real.

Debian's chromium (Playwright, executable_path, never a downloaded browser)
drives the pages served by the real ``kiosk-ledger dashboard``, which reads
a private PostgreSQL filled by a real ``kiosk-ledger serve`` (ingest and
history) from a real Mosquitto, fed by real agents on simulated hardware,
one with a trickle of simulated citizens. One stack serves the module.

What a fleet manager sees is asserted: a kiosk killed -9 goes offline on
the open fleet page and comes back, without a reload; a cabinet door
opened at a kiosk appears on the alarms page, is acknowledged with a note
(who and when shown, audited), and disappears when the door closes, its
episode in the kiosk's history with a duration; the kiosk's health plots
have points; the report's CSV downloads; a viewer has no acknowledge button
and the server refuses one anyway; a request without a session or without
the CSRF token is refused; both languages; keyboard use. Every response
body and server-sent event the pages received is searched for the
simulated citizens' ID numbers, names and addresses.

The first tests check the files without a browser: vendored libraries as
recorded, nothing remote, no inline script, every string in both languages.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashui import (
    PASSWORD,
    STRINGS,
    UI,
    WIDE,
    DashboardStack,
    KioskSpec,
    Manager,
    Recorder,
    citizen_secrets,
    launch_browser,
)
from kiosktest import wait_until
from pgcluster import PgCluster
from uikit import find_secrets

STATIC = UI / "static"
VENDOR = STATIC / "vendor"
RECORD = STATIC / "VENDORED.md"
JS = sorted((STATIC / "js").glob("*.js"))
PAGES = sorted((UI / "pages").glob("*.html"))

# -- the files, without a browser -------------------------------------------------------------------


def _table(heading: str) -> list[list[str]]:
    """The rows (header dropped) of the first Markdown table after ``heading`` in VENDORED.md."""
    text = RECORD.read_text(encoding="utf-8")
    rows: list[list[str]] = []
    for line in text[text.index(heading):].splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not set("".join(cells)) <= set("-: "):
            rows.append(cells)
    return rows[1:]


FAMILIES = {key.split(".")[0] for key in STRINGS}
PACKAGES = _table("# Vendored")
FILES = _table("## Files")


def test_vendored_packages_are_as_recorded() -> None:
    assert PACKAGES and FILES
    for name, version, licence, tarball, integrity in PACKAGES:
        folder = VENDOR / f"{name}@{version}"
        meta = json.loads((folder / "package.json").read_text(encoding="utf-8"))
        assert (meta["name"], meta["version"], meta["license"]) == (name, version, licence)
        text = (folder / "LICENSE").read_text(encoding="utf-8")
        assert f"{licence} License" in text and "Permission is hereby granted" in text
        assert tarball == f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", integrity), integrity
    recorded = dict(FILES)
    present = {str(p.relative_to(STATIC)) for p in VENDOR.rglob("*") if p.is_file()}
    assert present == set(recorded), f"unrecorded: {present - set(recorded)}; missing: {set(recorded) - present}"
    for path, digest in recorded.items():
        assert hashlib.sha256((STATIC / path).read_bytes()).hexdigest() == digest, f"{path} changed since vendoring"
    assert {p.name for p in VENDOR.iterdir()} == {f"{n}@{v}" for n, v, *_ in PACKAGES}


_COMMENTS = re.compile(r"/\*.*?\*/|<!--.*?-->|^\s*//[^\n]*", re.S | re.M)
_URL = re.compile(r"\b(?:https?|wss?)://[^\s\"'`)<>]+", re.I)
_NAMESPACE = re.compile(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"')


def test_nothing_is_loaded_from_outside_and_no_script_is_inline() -> None:
    found = {}
    for path in [*UI.rglob("*.html"), *UI.rglob("*.js"), *UI.rglob("*.css"), *UI.rglob("*.svg")]:
        code = _NAMESPACE.sub("", _COMMENTS.sub("", path.read_text(encoding="utf-8")))
        if urls := _URL.findall(code):
            found[str(path.relative_to(UI))] = urls
    assert not found, f"remote URLs: {found}"
    for page in PAGES:
        html = page.read_text(encoding="utf-8")
        # The CSP (script-src 'self', style-src 'self') would block these: none may be needed.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page.name}: inline script"
        assert not re.search(r"\son\w+=|\sstyle=|<style", html), f"{page.name}: inline handler or style"
        for ref in re.findall(r'(?:src|href)="(/static/[^"#?]+)"', html):
            assert (STATIC / ref.removeprefix("/static/")).is_file(), f"{page.name}: {ref} missing"
    for js in JS:
        code = _COMMENTS.sub("", js.read_text(encoding="utf-8"))
        for ref in re.findall(r'^import .*? from "([^"]+)";', code, re.M):
            assert (js.parent / ref).resolve().is_file(), f"{js.name}: {ref} missing"
        # Markup only through DOM calls (text nodes); nothing kept in the browser but the language cookie.
        for word in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "localStorage", "sessionStorage", "indexedDB", "console."):
            assert word not in code, f"{js.name} uses {word}"
        if js.name != "i18n.js":
            assert "document.cookie" not in code, f"{js.name} touches cookies"


def _imports(module: Path, seen: set[str]) -> set[str]:
    """Every module ``module`` imports, transitively, as /static/... paths."""
    for ref in re.findall(r'^import .*? from "([^"]+)";', module.read_text(encoding="utf-8"), re.M):
        target = (module.parent / ref).resolve()
        path = "/static/" + str(target.relative_to(STATIC.resolve()))
        if path not in seen:
            seen.add(path)
            if ref.startswith("./"):
                _imports(target, seen)
    return seen


@pytest.mark.parametrize("page", [p.stem for p in PAGES if p.stem != "403"])
def test_each_page_preloads_exactly_the_modules_it_imports(page: str) -> None:
    # A missing preload brings back the level-by-level waterfall (bench/dashboard.py saw 360 ms of it); an extra
    # one loads a module for nothing.
    html = (UI / "pages" / f"{page}.html").read_text(encoding="utf-8")
    preloaded = set(re.findall(r'<link rel="modulepreload" href="([^"]+)">', html))
    assert f'<script type="module" src="/static/js/{page}.js"></script>' in html
    assert preloaded == _imports(STATIC / "js" / f"{page}.js", set())


def test_every_string_has_chinese_and_english_and_every_key_asked_for_exists() -> None:
    for key, forms in STRINGS.items():
        assert set(forms) == {"zh", "en"} and forms["zh"].strip() and forms["en"].strip(), key
        zh, en = (set(re.findall(r"\{(\w+)\}", forms[lang])) for lang in ("zh", "en"))
        assert zh == en, f"{key}: placeholders differ"
    asked: set[str] = set()
    for js in JS:
        code = js.read_text(encoding="utf-8")
        asked |= set(re.findall(r'\bt\("([\w.]+)"', code))
        asked |= set(re.findall(r'(?:since|sinceText)\([^)]*?"([a-z]+\.[\w.]+)"\)', code))
        asked |= set(re.findall(r'\["(col\.\w+)"', code)) | set(re.findall(r'"(col\.\w+)"', code))
    assert len(asked) > 100, "the t(...) pattern is stale"
    assert not asked - set(STRINGS), f"missing: {sorted(asked - set(STRINGS))}"
    for lang in ("zh", "en"):
        buttons = [STRINGS[k][lang] for k in STRINGS if k.startswith("btn.")]
        assert len(buttons) == len(set(buttons)), f"{lang}: two buttons share a name"


def test_words_exist_for_everything_the_api_may_send() -> None:
    import tomllib

    from agent.runtime.alarms import SEVERITY
    from agent.sessions.catalogue import DEFAULT_CATALOGUE
    from fleet.dashboard.queries import kioskctl_actions

    schemas = Path(__file__).resolve().parents[2] / "agent" / "wire" / "schemas"
    state = json.loads((schemas / "state.json").read_text())
    result = json.loads((schemas / "cmd-result.json").read_text())
    health = (schemas / "health.json").read_text()
    needed = {f"alarmcode.{code}" for code in SEVERITY} | {"alarmcode.tamper"}
    needed |= {f"severity.{s}" for s in ("critical", "warning", "info")}
    needed |= {f"mode.{m}" for m in state["properties"]["mode"]["enum"]}
    needed |= {f"cmd.{s}" for s in result["properties"]["status"]["enum"]}
    needed |= {f"device.{s}" for s in json.loads(re.search(r'"state": (\{"enum": \[[^]]*\]\})', health).group(1))[
        "enum"]}
    needed |= {f"paper.{p}" for p in ("ok", "low", "out", "unknown")}
    needed |= {f"service.{s['id']}" for s in tomllib.loads(DEFAULT_CATALOGUE.read_text())["services"]}
    needed |= {f"action.{a['action']}" for a in kioskctl_actions("f", "k", "b", "key", tamper_latched=True)}
    # Every error code the contract lists has a sentence for a person.
    contract = (Path(__file__).resolve().parents[2] / "docs" / "dashboard-api.md").read_text()
    codes = set(re.findall(r"`((?:auth|request|kiosk|alarm|db)\.[a-z_]+)`", contract))
    assert {"auth.csrf", "db.unavailable"} <= codes
    needed |= {f"error.{c}" for c in codes}
    assert not needed - set(STRINGS), f"missing: {sorted(needed - set(STRINGS))}"


# -- the stack ---------------------------------------------------------------------------------------

WATCHED, BUSY = "k-ui-1", "k-ui-2"     # BUSY has simulated citizens: its session records reach the ledger
NEW = "k-ui-new"                        # registered at commissioning, never switched on


@pytest.fixture(scope="module")
def stack(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardStack]:
    running = DashboardStack(tmp_path_factory.mktemp("dashui"), pg, kiosks=[
        KioskSpec(WATCHED, "beijing-dongcheng-01"),
        KioskSpec(BUSY, "beijing-xicheng-02", sessions_per_minute=30)], never_seen=(NEW,))
    try:
        yield running.start()
    except Exception:
        print(running.logs())
        raise
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = launch_browser(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    """Shared by every manager of the module, for the leak check at the end."""
    return Recorder()


People = Callable[..., Manager]


@pytest.fixture
def people(browser: Any, stack: DashboardStack, recorder: Recorder) -> Iterator[People]:
    """``people("ops-li")``: a logged-in manager (``None``: not logged in); each closed after the test."""
    made: list[Manager] = []

    def make(user: str | None, **kwargs: Any) -> Manager:
        manager = Manager(browser, stack, user, recorder=recorder, **kwargs)
        made.append(manager)
        return manager

    yield make
    errors = [e for m in made for e in m.errors if "Failed to load resource" not in e]
    for manager in made:
        manager.close()
    assert not errors, f"page errors: {errors}"


def expect(locator: Any) -> Any:
    """Playwright's expect, waiting up to 15 s (two cores shared with other suites: 5 s is tight)."""
    from playwright.sync_api import expect as playwright_expect
    playwright_expect.set_options(timeout=15_000)
    return playwright_expect(locator)


def open_alarm(stack: DashboardStack, kiosk: str, code: str = "door_open") -> str:
    """The open episode's raised_at as the API gives it, once the history has it."""
    row = wait_until(lambda: stack.rows("SELECT raised_at FROM alarm_history WHERE kiosk = %s AND code = %s AND "
                                        "cleared_at IS NULL", (kiosk, code)), 30, message=f"{code} open at {kiosk}")
    return str(row[0][0].isoformat())


# -- journeys ----------------------------------------------------------------------------------------

def test_a_kiosk_goes_offline_and_comes_back_on_the_open_fleet_page(stack: DashboardStack, people: People) -> None:
    manager = people("ops-li")
    page, row = manager.page, manager.row(WATCHED)
    expect(row).to_contain_text(manager.pattern("status.onlineFor"))
    expect(row).to_contain_text("beijing-dongcheng-01")
    offline_total = page.locator("[data-total=offline] dd")
    expect(offline_total).to_have_text("0")
    expect(page.locator("#live-status")).to_have_text(manager.text("live.live"))
    page.evaluate("window.__sameDocument = true")       # gone if the page reloads

    stack.kiosk(WATCHED).kill()                           # the broker publishes its Will after the keepalive
    expect(row).to_contain_text(manager.pattern("status.offlineFor"), timeout=30_000)
    expect(offline_total).to_have_text("1")
    expect(page.locator("[data-site='beijing-dongcheng-01']")).to_contain_text(
        manager.text("sites.counts", online=0, offline=1))

    stack.kiosk(WATCHED).start()
    expect(row).to_contain_text(manager.pattern("status.onlineFor"), timeout=40_000)
    expect(offline_total).to_have_text("0")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    # The office screen: nothing wider than the window.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Its page tells how often and how long it was offline, and shades that time on the plots.
    manager.open(f"/kiosks/{WATCHED}", "kiosk")
    once = re.escape(manager.text("plot.offline", n=1, d="@@")).replace("@@", ".+")
    expect(page.locator("#presence")).to_have_text(re.compile(once))


def test_filters_search_and_sorting_by_keyboard(stack: DashboardStack, people: People) -> None:
    manager = people("ops-li")
    page = manager.page
    rows = page.locator("#fleet-rows tr")
    expect(rows).to_have_count(3)
    # The kiosk never heard from says so, in its row, in the totals and in a "no site" card (not pressed).
    expect(manager.row(NEW)).to_contain_text(manager.text("status.never_seen"))
    expect(page.locator("[data-total=never] dd")).to_have_text("1")
    no_site = page.locator(".site-card", has_text=manager.text("sites.none"))
    expect(no_site).to_have_attribute("aria-pressed", "false")
    # A site card filters the table; Enter on it, as a keyboard user does.
    card = page.locator("[data-site='beijing-xicheng-02']")
    card.focus()
    page.keyboard.press("Enter")
    expect(card).to_have_attribute("aria-pressed", "true")
    expect(rows).to_have_count(1)
    expect(manager.row(BUSY)).to_be_visible()
    expect(page.locator("#fleet-count")).to_have_text(manager.text("fleet.shown", shown=1, total=3))
    assert "site=beijing-xicheng-02" in page.url           # a reload or a shared link keeps the filter
    page.keyboard.press("Enter")
    expect(rows).to_have_count(3)
    no_site.click()
    expect(rows).to_have_count(1)
    expect(manager.row(NEW)).to_be_visible()
    no_site.click()
    expect(rows).to_have_count(3)
    # Search by site name.
    page.get_by_label(manager.text("filter.search")).fill("dongcheng")
    expect(rows).to_have_count(1)
    expect(manager.row(WATCHED)).to_be_visible()
    page.get_by_label(manager.text("filter.search")).fill("")
    expect(rows).to_have_count(3)
    # Sort by kiosk, descending, from the keyboard.
    header = page.locator("th[data-column=kiosk]")
    expect(header).to_have_attribute("aria-sort", "ascending")
    header.get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(rows.first).to_have_attribute("data-kiosk", NEW)
    # The status filter: nobody is offline; one kiosk was never seen.
    page.get_by_label(manager.text("filter.status")).select_option("offline")
    expect(page.locator("#fleet-empty")).to_have_text(manager.text("fleet.empty"))
    page.get_by_label(manager.text("filter.status")).select_option("never_seen")
    expect(rows).to_have_count(1)
    expect(manager.row(NEW)).to_be_visible()
    page.get_by_label(manager.text("filter.status")).select_option("")
    # A kiosk nobody knows: said in words, with the way back.
    manager.open("/kiosks/k-nobody", "kiosk")
    expect(page.get_by_role("alert")).to_have_text(manager.text("error.kiosk.unknown"))
    page.get_by_role("link", name=manager.text("nav.backToFleet")).click()
    manager.ready("fleet")
    # A row's link opens the kiosk's page (Enter on the focused link).
    link = manager.row(WATCHED).get_by_role("link", name=WATCHED)
    link.focus()
    page.keyboard.press("Enter")
    manager.ready("kiosk")
    expect(page.get_by_role("heading", level=1)).to_contain_text(manager.text("kiosk.heading", kiosk=WATCHED))


def test_an_alarm_is_seen_live_acknowledged_with_a_note_and_cleared(stack: DashboardStack, people: People) -> None:
    watcher = people("view-wang")                       # the fleet page, watching
    operator = people("ops-li")
    operator.open("/alarms", "alarms")
    watcher_row = watcher.row(BUSY)
    expect(watcher_row).to_contain_text(watcher.text("alarms.none"))

    stack.kiosk(BUSY).sim("door", "open")
    # Both pages change without a reload: the fleet row's badge and the alarms table.
    expect(watcher_row).to_contain_text(watcher.text("alarms.badge", severity=watcher.text("severity.critical"), n=1),
                                        timeout=30_000)
    expect(watcher_row).to_have_attribute("data-alarms", "door_open")
    expect(watcher.page.locator("[data-total=critical] dd")).to_have_text("1")
    alarm = operator.page.locator(f"#alarm-rows tr[data-kiosk='{BUSY}'][data-code='door_open']")
    expect(alarm).to_contain_text(operator.text("alarmcode.door_open"), timeout=30_000)
    expect(alarm).to_contain_text(operator.text("severity.critical"))
    expect(alarm).to_contain_text(operator.text("ack.not"))

    # Acknowledge with a note: who and when are shown, and it is audited.
    note = "已派张师傅到现场 / Zhang is on his way"
    alarm.get_by_role("button", name=operator.text("ack.buttonLabel", kiosk=BUSY,
                                                   alarm=operator.text("alarmcode.door_open"))).click()
    alarm.get_by_label(operator.text("ack.note")).fill(note)
    operator.switch_language()                          # the half-written note survives a language switch
    expect(alarm.get_by_label(operator.text("ack.note"))).to_have_value(note)
    operator.switch_language()
    # ... and another alarm arriving meanwhile: its row is added, the note keeps its text and the focus.
    alarm.get_by_label(operator.text("ack.note")).focus()
    stack.kiosk(WATCHED).sim("door", "open")
    other = operator.page.locator(f"#alarm-rows tr[data-kiosk='{WATCHED}'][data-code='door_open']")
    expect(other).to_be_visible(timeout=30_000)
    expect(alarm.get_by_label(operator.text("ack.note"))).to_be_focused()
    expect(alarm.get_by_label(operator.text("ack.note"))).to_have_value(note)
    stack.kiosk(WATCHED).sim("door", "close")
    alarm.get_by_role("button", name=operator.text("btn.ackSave")).click()
    expect(alarm).to_contain_text(operator.pattern("ack.by"))
    expect(alarm).to_contain_text("ops-li")
    expect(alarm).to_contain_text(note)
    audited = stack.rows("SELECT username, target, detail FROM audit WHERE action = 'alarm_ack'")
    assert [(u, t) for u, t, _d in audited] == [("ops-li", f"{BUSY}/door_open")]
    assert audited[0][2]["note"] == note

    expect(other).to_have_count(0, timeout=30_000)
    # The door closes at the kiosk: the open alarm leaves the list live; the fleet row is clear again.
    stack.kiosk(BUSY).sim("door", "close")
    expect(alarm).to_have_count(0, timeout=30_000)
    expect(operator.page.locator("#alarms-empty")).to_have_text(operator.text("alarms.empty.open"))
    expect(watcher_row).to_contain_text(watcher.text("alarms.none"), timeout=30_000)

    # The kiosk's history: the episode closed, with its duration and who acknowledged it.
    operator.open(f"/kiosks/{BUSY}", "kiosk")
    episode = operator.page.locator("#alarm-history tr[data-code='door_open']")
    expect(episode).to_have_count(1)
    expect(episode).not_to_contain_text(operator.text("alarm.stillOpen"))
    expect(episode).to_contain_text(re.compile(r"\d+ 秒|\d+ 分钟"))
    expect(episode).to_contain_text("ops-li")
    expect(episode).to_contain_text(note)
    expect(operator.page.locator("#active-alarms")).to_have_text(operator.text("kiosk.noActiveAlarms"))

    # An admin reads it in the audit trail.
    admin = people("adm-zhao")
    admin.open("/audit", "audit")
    entry = admin.page.locator("#audit-table tr[data-action=alarm_ack]")
    expect(entry).to_contain_text(admin.text("auditaction.alarm_ack"))
    expect(entry).to_contain_text(f"{BUSY}/door_open")
    expect(entry).to_contain_text(note)


def test_a_viewer_has_no_acknowledge_button_and_the_server_refuses_one(stack: DashboardStack,
                                                                         people: People) -> None:
    viewer = people("view-wang")
    stack.kiosk(WATCHED).sim("door", "open")
    try:
        raised_at = open_alarm(stack, WATCHED)
        viewer.open("/alarms", "alarms")
        alarm = viewer.page.locator(f"#alarm-rows tr[data-kiosk='{WATCHED}'][data-code='door_open']")
        expect(alarm).to_contain_text(viewer.text("ack.not"))
        expect(viewer.page.get_by_role("button", name=re.compile(re.escape(viewer.text("btn.ack"))))).to_have_count(0)
        expect(viewer.page.get_by_role("link", name=viewer.text("nav.audit"))).to_have_count(0)
        # Past the page: the API refuses the viewer even with a valid session and CSRF token.
        answer = viewer.fetch("POST", "/api/alarms/ack", body={"kiosk": WATCHED, "code": "door_open",
                                                               "raised_at": raised_at, "note": "not mine"})
        assert (answer["status"], answer["body"]["error"]["code"]) == (403, "auth.forbidden")
        assert stack.rows("SELECT acked_by FROM alarm_history WHERE kiosk = %s AND cleared_at IS NULL",
                          (WATCHED,)) == [(None,)]
        # The audit trail is an admin's.
        assert viewer.page.goto(f"{stack.url}/audit").status == 403
        expect(viewer.page.get_by_role("heading", name="无权访问")).to_be_visible()    # pages/403.html, both languages
        expect(viewer.page.get_by_role("heading", name="Not allowed")).to_be_visible()
    finally:
        stack.kiosk(WATCHED).sim("door", "close")


def test_requests_without_a_session_or_csrf_token_are_refused(stack: DashboardStack, people: People) -> None:
    operator = people("ops-li")
    stack.kiosk(WATCHED).sim("door", "open")
    try:
        raised_at = open_alarm(stack, WATCHED)
        body = {"kiosk": WATCHED, "code": "door_open", "raised_at": raised_at, "note": "no token"}
        # Logged in, but the POST lacks X-CSRF-Token: refused, nothing recorded.
        answer = operator.fetch("POST", "/api/alarms/ack", body=body, csrf=False)
        assert (answer["status"], answer["body"]["error"]["code"]) == (403, "auth.csrf")
        assert stack.rows("SELECT acked_by FROM alarm_history WHERE kiosk = %s AND cleared_at IS NULL",
                          (WATCHED,)) == [(None,)]
    finally:
        stack.kiosk(WATCHED).sim("door", "close")
    # No session at all: the API says so, and a page sends the visitor to log in, then back.
    stranger = people(None)
    stranger.page.goto(f"{stack.url}/login")
    answer = stranger.fetch("GET", "/api/fleet", csrf=False)
    assert (answer["status"], answer["body"]["error"]["code"]) == (401, "auth.required")
    assert stranger.fetch("POST", "/api/alarms/ack", body=body, csrf=False)["status"] in (401, 403)
    stranger.page.goto(f"{stack.url}/alarms")
    assert stranger.page.url.startswith(f"{stack.url}/login?next=")
    stranger.page.get_by_label(stranger.text("login.username")).fill("ops-li")
    stranger.page.get_by_label(stranger.text("login.password")).fill(PASSWORD)
    stranger.page.get_by_role("button", name=stranger.text("btn.login")).click()
    stranger.ready("alarms")
    assert stranger.page.url == f"{stack.url}/alarms"
    # Logging out ends the session: the API refuses the same browser afterwards.
    stranger.page.get_by_role("button", name=stranger.text("btn.logout")).click()
    stranger.page.wait_for_url(f"{stack.url}/login")
    assert stranger.fetch("GET", "/api/me", csrf=False)["status"] == 401


def test_login_refusals_are_told_in_both_languages_and_the_choice_is_kept(stack: DashboardStack,
                                                                          people: People) -> None:
    visitor = people(None)
    visitor.login("ops-li", "not the password", expect_ok=False)
    alert = visitor.page.get_by_role("alert")
    expect(alert).to_have_text(visitor.text("login.failed"))
    expect(visitor.page.get_by_label(visitor.text("login.password"))).to_have_value("")
    visitor.switch_language()
    expect(alert).to_have_text(visitor.text("login.failed"))           # now in English
    assert visitor.text("login.failed") == "Wrong user name or password."
    cookies = {c["name"]: c["value"] for c in visitor.context.cookies()}
    assert cookies.get("kd_lang") == "en"
    # Logged in (a `next` pointing off-site is not followed), the pages stay in English, reloads too.
    visitor.page.goto(f"{stack.url}/login?next=//example.com/phish")
    visitor.page.get_by_label(visitor.text("login.username")).fill("adm-zhao")
    visitor.page.get_by_label(visitor.text("login.password")).fill(PASSWORD)
    visitor.page.get_by_role("button", name=visitor.text("btn.login")).click()
    visitor.ready("fleet")
    assert visitor.page.url == f"{stack.url}/"
    expect(visitor.page.get_by_role("heading", level=1)).to_have_text("Fleet overview")
    expect(visitor.page.get_by_role("link", name="Audit")).to_be_visible()
    visitor.page.reload()
    visitor.ready("fleet")
    expect(visitor.page.locator("th[data-column=tx_today]")).to_contain_text("Tx today")
    expect(visitor.row(WATCHED)).to_contain_text(visitor.pattern("status.onlineFor"))
    visitor.open("/alarms", "alarms")
    expect(visitor.page.get_by_role("heading", level=1)).to_have_text("Alarms")
    # And back to Chinese with the switch on any page.
    visitor.switch_language()
    expect(visitor.page.get_by_role("heading", level=1)).to_have_text(STRINGS["page.alarms.title"]["zh"])


def test_every_text_is_readable_and_english_pages_have_no_chinese_left(stack: DashboardStack,
                                                                        people: People) -> None:
    manager = people("adm-zhao")
    stack.kiosk(WATCHED).sim("door", "open")            # badges and alarm rows on the pages measured
    try:
        open_alarm(stack, WATCHED)
        problems: list[str] = []
        for path, ready in (("/", "fleet"), (f"/kiosks/{WATCHED}", "kiosk"), ("/alarms", "alarms"),
                            ("/reports", "reports"), ("/audit", "audit")):
            manager.open(path, ready)
            manager.page.wait_for_load_state("networkidle")
            for lang in ("zh", "en"):
                if manager.lang != lang:
                    manager.switch_language()
                texts = manager.measure_text()
                assert len(texts) > 10, f"{path}: nothing measured"
                problems += [f"{path} {lang}: contrast {t['contrast']:.2f} < 4.5: {t['text']!r} ({t['cls']})"
                             for t in texts if t["contrast"] < 4.5]
                if lang == "en":
                    problems += [f"{path} en: Chinese left: {t['text']!r}" for t in texts if t["chinese"]]
                # t() shows a missing key as itself ("alarms.count.open"): none may be on the page.
                problems += [f"{path} {lang}: a missing string shows its key: {t['text']!r}" for t in texts
                             if re.fullmatch(r"[a-z]+(\.[A-Za-z_-]+)+", t["text"]) and t["text"].split(".")[0]
                             in FAMILIES]
            manager.switch_language()
    finally:
        stack.kiosk(WATCHED).sim("door", "close")
    assert not problems, "\n".join(problems)
    # The measure bites: pale text, and Chinese on an English page, planted through the CSSOM.
    manager.switch_language()
    manager.page.evaluate("""() => { const p = document.createElement("p"); p.textContent = "浅灰 pale";
                                     p.style.color = "#bbbbbb"; document.getElementById("main").append(p); }""")
    planted = [t for t in manager.measure_text() if t["text"] == "浅灰 pale"]
    assert planted and planted[0]["contrast"] < 4.5 and planted[0]["chinese"]


def test_a_kiosk_page_plots_its_health_and_shows_the_kioskctl_lines(stack: DashboardStack, people: People) -> None:
    wait_until(lambda: stack.rows("SELECT count(*) FROM health_history WHERE kiosk = %s", (BUSY,))[0][0] >= 3, 40,
               message="three health reports")
    wait_until(lambda: stack.rows("SELECT count(*) FROM tx WHERE kiosk = %s AND kind = 'session'", (BUSY,))[0][0]
               >= 1, 60, message="a citizen's session record in the ledger")
    manager = people("ops-li", viewport=WIDE)
    manager.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    manager.open(f"/kiosks/{BUSY}", "kiosk")
    page = manager.page
    page.wait_for_selector("#plots[data-ready='24h']", state="attached")
    # What the kiosk reported: a container has no CPU thermometer, so temperature may be all empty there.
    reported = dict(zip(("disk_free_mb", "cpu_temp_c", "outbox_backlog", "reconnects"), stack.rows(
        "SELECT count(disk_free_mb), count(cpu_temp_c), count(outbox_backlog), count(connects) FROM health_history "
        "WHERE kiosk = %s", (BUSY,))[0], strict=True))
    assert reported["disk_free_mb"] >= 3 and reported["reconnects"] >= 3
    reported["tx_per_hour"] = 1
    for series, count in reported.items():
        figure = page.locator(f"figure[data-plot={series}]")
        summary = figure.locator(".plot-summary").inner_text()
        if count == 0:
            assert summary == manager.text("plot.empty"), f"{series}: {summary}"
            continue
        expect(figure.locator("canvas").first).to_be_visible()
        points = re.search(manager.pattern("plot.summary").pattern.replace(".*?", "(.*?)", 1), summary)
        assert points and int(points.group(1)) >= 1, f"{series}: {summary}"
        if series not in ("disk_free_mb", "tx_per_hour"):
            continue            # zero-valued bars (no reconnect) rightly draw nothing: the two below always draw
        # Something is drawn: the canvas has coloured pixels besides the white background and grey grid.
        drawn = figure.locator("canvas").first.evaluate("""(c) => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
              if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) { n++; }
            }
            return n; }""")
        assert drawn > 20, f"{series}: no coloured pixel drawn"
    # At least one transaction counted in the hours plotted.
    tx_summary = page.locator("figure[data-plot=tx_per_hour] .plot-summary").inner_text()
    highest = re.findall(r"\d+", tx_summary)[-1]
    assert int(highest) >= 1, tx_summary
    # The range switch.
    page.get_by_role("button", name=manager.text("range.7d")).click()
    page.wait_for_selector("#plots[data-ready='7d']", state="attached")
    expect(page.get_by_role("button", name=manager.text("range.7d"))).to_have_attribute("aria-pressed", "true")
    # Peripherals, ledger status, the kioskctl lines with a copy button.
    expect(page.locator("#peripherals tr[data-device=printer]")).to_contain_text(manager.text("kind.printer"))
    expect(page.locator("#ledger dd").first).to_have_text(re.compile(r"^\d+$"))     # the last seq stored
    line = page.locator("li[data-action=set_mode_maintenance] code")
    expect(line).to_contain_text(f"kioskctl cmd --fleet north --broker {stack.broker.url}")  # type: ignore[union-attr]
    expect(line).to_contain_text(f"{BUSY} set-mode mode=maintenance")
    page.get_by_role("button", name=manager.text("actions.copyLabel",
                                                 what=manager.text("action.set_mode_maintenance"))).click()
    expect(page.locator("#copy-status")).to_have_text(
        manager.text("actions.copied", what="set_mode_maintenance"))
    assert page.evaluate("navigator.clipboard.readText()") == line.inner_text()
    # The next health report redraws the page live: the plots are not rebuilt and the focus stays put.
    page.evaluate("document.querySelector('figure[data-plot=disk_free_mb] canvas').__kept = true")
    copy = page.locator("li[data-action=set_mode_maintenance] button")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    # (Playwright's own wait: a plain sleep would not let its events through.)
    with page.expect_response(lambda r: r.url.endswith(f"/api/kiosks/{BUSY}"), timeout=30_000):
        copy.focus()
    page.wait_for_timeout(300)                          # the redraw after the answer
    expect(page.locator("li[data-action=set_mode_maintenance] button")).to_be_focused()
    # New points are fetched at most every 30 s; only then are the plots drawn again.
    kept = page.evaluate("document.querySelector('figure[data-plot=disk_free_mb] canvas').__kept")
    assert kept is True or any("/series?" in url for url in asked)


def test_the_report_downloads_as_csv(stack: DashboardStack, people: People) -> None:
    wait_until(lambda: stack.rows("SELECT count(*) FROM tx WHERE kind = 'session'")[0][0] >= 1, 60,
               message="a session record in the ledger")
    manager = people("ops-li")
    manager.open("/reports?by=service", "reports")
    table = manager.page.locator("#report-table")
    expect(table).to_be_visible()
    total = table.locator("tfoot td").last.inner_text()
    assert int(total.replace(",", "")) >= 1
    with manager.page.expect_download() as download_info:
        manager.page.get_by_role("link", name=manager.text("btn.csv")).click()
    download = download_info.value
    assert download.suggested_filename.startswith("tx-service-")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows[0] == ["service", "completed", "abandoned", "failed", "total"]
    assert len(rows) >= 2
    for key, completed, abandoned, failed, row_total in rows[1:]:
        assert key and int(completed) + int(abandoned) + int(failed) <= int(row_total)
    # The same counts as the table, or more: a citizen may have been served between the two.
    assert sum(int(r[4]) for r in rows[1:]) >= int(total.replace(",", ""))
    shown = {k.get_attribute("data-key") for k in table.locator("tbody tr").all()}
    assert shown <= {r[0] for r in rows[1:]}
    # A range that ends before it starts is refused in the page, with a reason.
    manager.page.get_by_label(manager.text("reports.from")).fill("2026-12-31")
    manager.page.get_by_label(manager.text("reports.to")).fill("2026-01-01")
    manager.page.get_by_role("button", name=manager.text("btn.showReport")).click()
    expect(manager.page.get_by_role("alert")).to_have_text(manager.text("reports.badRange"))
    manager.open("/reports?by=service", "reports")
    # Per kiosk: the busy kiosk is there, linked to its page.
    manager.page.get_by_label(manager.text("reports.groupBy")).select_option("kiosk")
    manager.page.get_by_role("button", name=manager.text("btn.showReport")).click()
    expect(manager.page.locator("#report-table").get_by_role("link", name=BUSY)).to_be_visible()


def test_a_latched_tamper_is_cleared_by_running_the_kioskctl_line_the_page_shows(stack: DashboardStack,
                                                                                  people: People) -> None:
    operator = people("ops-li")
    kiosk = stack.kiosk(WATCHED)
    kiosk.sim("tamper", "open")
    open_alarm(stack, WATCHED, "tamper")
    kiosk.sim("tamper", "close")                        # the cause is gone; the alarm stays (latching)
    wait_until(lambda: stack.rows("SELECT 1 FROM alarm_history WHERE kiosk = %s AND code = 'tamper' AND latched "
                                  "AND cleared_at IS NULL", (WATCHED,)), 30, message="tamper latched")
    operator.open("/alarms", "alarms")
    alarm = operator.page.locator(f"#alarm-rows tr[data-kiosk='{WATCHED}'][data-code='tamper']")
    expect(alarm).to_contain_text(operator.text("alarm.latched"))
    alarm.get_by_role("button", name=operator.text("ack.buttonLabel", kiosk=WATCHED,
                                                   alarm=operator.text("alarmcode.tamper"))).click()
    alarm.get_by_label(operator.text("ack.note")).fill("cover checked, closed")
    alarm.get_by_role("button", name=operator.text("btn.ackSave")).click()
    # Acknowledged here; the kiosk still holds it, and the row says how to clear it there.
    expect(alarm).to_contain_text(operator.text("ack.clearAtKiosk"))
    expect(alarm.locator("code")).to_contain_text(f"{WATCHED} ack-alarm code=tamper")
    operator.open(f"/kiosks/{WATCHED}", "kiosk")
    line = operator.page.locator("li[data-action=ack_tamper] code").inner_text()
    # The line runs as shown (the dashboard itself sends nothing): kioskctl with the operator's own key.
    argv = shlex.split(line)
    assert argv[0] == "kioskctl"
    done = subprocess.run([str(Path(sys.executable).parent / "kioskctl"), *argv[1:]], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # Cleared at the kiosk: the page follows live, and the action is gone.
    expect(operator.page.locator("#active-alarms")).to_have_text(operator.text("kiosk.noActiveAlarms"),
                                                                 timeout=30_000)
    expect(operator.page.locator("li[data-action=ack_tamper]")).to_have_count(0)
    episode = operator.page.locator("#alarm-history tr[data-code='tamper']")
    expect(episode).to_contain_text("ops-li")
    expect(episode).not_to_contain_text(operator.text("alarm.stillOpen"))


def test_after_the_dashboard_restarts_an_open_page_reloads_what_it_missed(stack: DashboardStack,
                                                                         people: People) -> None:
    manager = people("ops-li")
    page, row, live = manager.page, manager.row(WATCHED), manager.page.locator("#live-status")
    expect(live).to_have_text(manager.text("live.live"))
    expect(row).to_have_attribute("data-alarms", "")
    page.evaluate("window.__sameDocument = true")

    def fleet_loads() -> int:
        return sum(1 for url in list(manager.recorder.finished) if url.endswith("/api/fleet"))
    loads = fleet_loads()
    assert stack.dashboard is not None
    stack.dashboard.kill()                               # kill -9: the page's event stream breaks
    expect(live).to_have_text(manager.text("live.down"), timeout=20_000)
    stack.kiosk(WATCHED).sim("door", "open")             # while nobody can tell the page
    try:
        open_alarm(stack, WATCHED)
        stack.dashboard.start()
        # The stream is back; the page reloaded its data once and shows what happened meanwhile.
        expect(live).to_have_text(manager.text("live.live"), timeout=40_000)
        expect(row).to_have_attribute("data-alarms", "door_open", timeout=20_000)
        expect(row).to_contain_text(manager.text("alarms.badge", severity=manager.text("severity.critical"), n=1))
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        # Not only a later live event (health comes every 5 s): the fleet was asked for again, once.
        manager.wait(lambda: fleet_loads() == loads + 1, 10, message="/api/fleet loaded again after the reconnect")
    finally:
        stack.kiosk(WATCHED).sim("door", "close")
    expect(row).to_have_attribute("data-alarms", "", timeout=30_000)     # and live again afterwards
    assert fleet_loads() == loads + 1


def test_no_page_or_response_carries_a_citizens_id_number_or_name(stack: DashboardStack, people: People,
                                                                   recorder: Recorder) -> None:
    # A real citizen's session went through a real agent into the ledger (masked ID only in the record).
    wait_until(lambda: stack.rows("SELECT count(*) FROM tx WHERE kiosk = %s AND kind = 'session'", (BUSY,))[0][0]
               >= 1, 60, message="a citizen's session record in the ledger")
    admin = people("adm-zhao")
    secrets = citizen_secrets()
    # Live events too: a door opened and closed while the fleet page is open.
    stack.kiosk(WATCHED).sim("door", "open")
    expect(admin.row(WATCHED)).to_have_attribute("data-alarms", "door_open", timeout=30_000)
    stack.kiosk(WATCHED).sim("door", "close")
    expect(admin.row(WATCHED)).to_have_attribute("data-alarms", "", timeout=30_000)
    pages: list[str] = []
    for path, ready in (("/", "fleet"), (f"/kiosks/{BUSY}", "kiosk"), (f"/kiosks/{WATCHED}", "kiosk"),
                        ("/alarms?state=all", "alarms"), ("/reports?by=kiosk", "reports"),
                        ("/reports?by=service", "reports"), ("/reports?by=day", "reports"), ("/audit", "audit")):
        admin.open(path, ready)
        admin.page.wait_for_load_state("networkidle")
        pages.append(admin.page.content() + admin.visible_text())
    admin.collect_events()
    # Every API the pages use was recorded (earlier tests of the module add their journeys).
    seen = " ".join(url for url, _status, _body in recorder.api_bodies())
    for api in ("/api/me", "/api/fleet", f"/api/kiosks/{BUSY}", "/series?hours=", "/api/alarms",
                "/api/reports/tx", "/api/audit"):
        assert api in seen, f"{api} was never recorded"
    kinds = {e.split(" ", 1)[0] for e in recorder.events}
    assert {"kiosk", "alarm"} <= kinds, f"events recorded: {kinds}"
    # What the pages received is what the contract says (fleet/dashboard/schemas/api.json).
    assert not recorder.contract_errors(), recorder.contract_errors()
    leaks = recorder.leaks(secrets) + [hit for text in pages for hit in find_secrets(text, secrets)]
    assert not leaks, leaks
    # The check bites: the same search finds a secret planted in a body.
    planted = f'{{"name": "{secrets[0]}"}}'.encode()
    assert find_secrets(planted, secrets)
