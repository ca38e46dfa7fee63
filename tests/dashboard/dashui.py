# SPDX-License-Identifier: Apache-2.0
"""The dashboard's browser harness: the whole back office for real, Debian's chromium, a leak recorder.

    stack = DashboardStack(workdir, pg, kiosks=[KioskSpec("k-ui-1", "beijing-dongcheng-01")]).start()
    manager = Manager(browser, stack, "ops-li")              # a logged-in fleet manager, zh by default
    manager.page.goto(stack.url + "/")
    manager.row("k-ui-1")                                     # that kiosk's row in the fleet table
    stack.kiosk("k-ui-1").kill()                              # kill -9: the broker sends its Will
    expect(manager.row("k-ui-1")).to_contain_text(manager.text("status.offline"))
    recorder.assert_no_leaks()                                # every response body and SSE event

Nothing is mocked: PostgreSQL is a private cluster (tests/ledger/pgcluster.py),
Mosquitto a real broker on a free port, ``kiosk-ledger serve`` one real
worker (ingest and the history worker), ``kiosk-ledger dashboard`` the real
server with the pages of the working tree, and every kiosk ``kiosk-agent
run`` on simulated peripherals (pty simulators) with its own device key,
registered with the ledger, some with a trickle of simulated citizens so
that real session records reach the ledger. A short MQTT keepalive makes a
kill -9 visible within seconds (the broker's Will after 1.5 keepalives).

Tests read what a person reads: visible texts are looked up in
``static/js/i18n.js`` by key (``Manager.text``), so a renamed string fails
a test instead of passing silently.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_TESTS = Path(__file__).resolve().parents[1]
for _folder in (_TESTS, _TESTS / "ledger", _TESTS / "ui", _TESTS / "dashboard"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))   # appended: shadows nothing already importable

from corekit import LedgerProcess, write_ledger_config  # noqa: E402
from dashkit import DashboardProcess, free_port, make_user  # noqa: E402
from kiosktest import AgentProcess, wait_until  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from uikit import CHROMIUM, CHROMIUM_ARGS, card_secrets, find_secrets, launch_browser  # noqa: E402

from agent.sim.devbroker import DevBroker  # noqa: E402
from agent.wire.sealing import X25519PrivateKey, public_key_b64  # noqa: E402
from agent.wire.signing import public_b64, public_raw  # noqa: E402
from fleet.keys import init_key, load_key  # noqa: E402
from fleet.ledger.db import connect, register_kiosk  # noqa: E402
from fleet.ledger.schema import migrate  # noqa: E402
from hal.sim.idcard import SAMPLE_KINDS  # noqa: E402

__all__ = ["UI", "PASSWORD", "USERS", "KioskSpec", "StackKiosk", "DashboardStack", "Manager", "Recorder",
           "citizen_secrets", "load_strings", "launch_browser", "CHROMIUM", "CHROMIUM_ARGS", "OFFICE", "WIDE"]

UI = Path(__file__).resolve().parents[2] / "fleet" / "dashboard" / "ui"
PASSWORD = "correct horse battery staple"
USERS = {"ops-li": "operator", "view-wang": "viewer", "adm-zhao": "admin"}
FLEET = "north"
OFFICE = {"width": 1366, "height": 768}     # the office screen the pages must work on
WIDE = {"width": 1920, "height": 1080}


def load_strings() -> dict[str, dict[str, str]]:
    """Every string of the pages (``static/js/i18n.js``'s STRINGS, strict JSON)."""
    text = (UI / "static" / "js" / "i18n.js").read_text(encoding="utf-8")
    match = re.search(r"^export const STRINGS = (\{.*?^\});$", text, re.S | re.M)
    assert match, "static/js/i18n.js: `export const STRINGS = {...};` not found"
    strings: dict[str, dict[str, str]] = json.loads(match.group(1))
    return strings


STRINGS = load_strings()


def citizen_secrets() -> list[str]:
    """What must never reach a page: each simulated card's full ID number, names and address, and the
    simulated citizens' typed mailing details (agent/sim/simulate.py's synthetic addresses)."""
    secrets = [s for kind in SAMPLE_KINDS for s in card_secrets(kind)]
    return sorted(set(secrets)) + ["模拟收件人", "模拟省测试市"]


# -- the stack ------------------------------------------------------------------------------

@dataclass
class KioskSpec:
    name: str
    site: str
    sessions_per_minute: int = 0        # > 0: simulated citizens, so session records reach the ledger


class StackKiosk:
    """One real agent: its own device key, registered with the ledger before it starts; keepalive 5 s."""

    def __init__(self, workdir: Path, spec: KioskSpec, broker_url: str, dsn: str, *, ack_key_b64: str,
                 evidence_b64: str, operator_b64: str) -> None:
        self.name, self.site = spec.name, spec.site
        workdir.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        key_file = workdir / "device-ed25519.pem"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        with connect(dsn) as conn:
            register_kiosk(conn, spec.name, FLEET, public_raw(key), source="test")
        self.public_b64 = public_b64(key)
        # keepalive 5: the broker publishes the Will 7.5 s after a kill -9; health every 5 s for the plots.
        self.agent = AgentProcess(workdir, broker_url=broker_url, overrides={
            "id": f'"{spec.name}"', "fleet": f'"{FLEET}"', "site": json.dumps(spec.site), "keepalive": "5",
            "interval_s": "5", "sessions_per_minute": str(spec.sessions_per_minute)})
        text = self.agent.config.read_text().replace("\n[mqtt]\n", "\n[mqtt]\nreconnect_max_s = 2\n", 1)
        self.agent.config.write_text(
            text + f'\n[keys]\nsigning_key = "{key_file}"\n\n[evidence]\nrecipient_public_key = "{evidence_b64}"\n'
            f'ack_public_keys = ["{ack_key_b64}"]\n\n[[commands.operators]]\nid = "op-1"\n'
            f'public_key = "{operator_b64}"\nrole = "operator"\n')

    def start(self) -> StackKiosk:
        self.agent.start()
        return self

    def kill(self) -> None:
        """kill -9 of the agent and its firmware runner (its own process group)."""
        proc = self.agent.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def sim(self, device: str, action: str, *args: str) -> dict[str, Any]:
        return self.agent.sim(device, action, *args)


class DashboardStack:
    """A database on the cluster, Mosquitto, one ``kiosk-ledger serve``, ``kiosk-ledger dashboard``, agents."""

    def __init__(self, workdir: Path, pg: PgCluster, *, kiosks: list[KioskSpec], never_seen: tuple[str, ...] = (),
                 database: str = "dashui") -> None:
        self.workdir, self.pg, self.specs, self.database = workdir, pg, kiosks, database
        self.never_seen = never_seen          # registered at commissioning, never switched on
        self.kiosks: dict[str, StackKiosk] = {}
        self.broker: DevBroker | None = None
        self.ledger: LedgerProcess | None = None
        self.dashboard: DashboardProcess | None = None
        self.operator_key: Any = None
        self.dsn = ""
        self.url = ""

    def start(self) -> DashboardStack:
        self.dsn = self.pg.create_database(self.database)
        with connect(self.dsn) as conn:
            migrate(conn)
        for name, role in USERS.items():
            make_user(self.dsn, name, role, PASSWORD)
        self.broker = DevBroker(self.workdir / "broker").start()
        key_paths, _key = init_key(self.workdir / "keys", "backoffice-1")
        _kid, ack_key = load_key(key_paths.private)
        # An operator's own key, trusted by the kiosks: the kioskctl lines the dashboard shows name it, so a
        # test can run a line exactly as shown.
        self.operator_key, operator = init_key(self.workdir / "keys", "op-1")
        port = free_port()
        extra = (f'\n[history]\nsnapshot_quiet_ms = 300\n\n[dashboard]\nlisten = "127.0.0.1:{port}"\n'
                 f'secure_cookies = false\ntx_today_refresh_s = 0\nkioskctl_key = "{self.operator_key.private}"\n')
        config = write_ledger_config(self.workdir / "ledger.toml", dsn=self.dsn, broker_url=self.broker.url,
                                     client_id="ledger-ui", key_file=key_paths.private, fleet=FLEET, extra=extra)
        self.ledger = LedgerProcess(self.workdir, config).start()
        wait_until(lambda: "history: subscribed" in self.ledger.log, 30,  # type: ignore[union-attr]
                   message="the ledger's history worker subscribed")
        self.dashboard = DashboardProcess(self.workdir, config).start()
        self.url = self.dashboard.url
        evidence = public_key_b64(X25519PrivateKey.generate())
        for spec in self.specs:
            self.kiosks[spec.name] = StackKiosk(self.workdir / spec.name, spec, self.broker.url, self.dsn,
                                                ack_key_b64=public_b64(ack_key), evidence_b64=evidence,
                                                operator_b64=public_b64(operator)).start()
        with connect(self.dsn) as conn:
            for name in self.never_seen:
                register_kiosk(conn, name, FLEET, public_raw(Ed25519PrivateKey.generate()), source="test")
        for name in self.kiosks:
            self.wait_status(name, online=True)
        return self

    def kiosk(self, name: str) -> StackKiosk:
        return self.kiosks[name]

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def wait_status(self, kiosk: str, *, online: bool, timeout: float = 40.0) -> None:
        """Until the ledger's history says ``kiosk`` is (not) online."""
        wait_until(lambda: self.rows("SELECT 1 FROM kiosk_status WHERE kiosk = %s AND online = %s",
                                     (kiosk, online)), timeout, interval=0.1,
                   message=f"{kiosk} {'online' if online else 'offline'} in kiosk_status")

    def stop(self) -> None:
        for kiosk in self.kiosks.values():
            kiosk.kill()
        for proc in (self.dashboard, self.ledger):
            if proc is not None:
                proc.kill()
        if self.broker is not None:
            self.broker.stop()

    def logs(self) -> str:
        """The tail of each process's log, for a failure's report."""
        parts = [f"--- ledger\n{self.ledger.log[-3000:] if self.ledger else ''}",
                 f"--- dashboard\n{self.dashboard.log[-3000:] if self.dashboard else ''}"]
        return "\n".join(parts)


# -- what the pages received ------------------------------------------------------------------

@dataclass
class Recorder:
    """Every HTTP response body a browser context received, and every server-sent event its pages got.

    Response bodies are read as each request finishes. An event stream never
    finishes, so ``/api/events`` is recorded in the page itself: a small init
    script wraps ``EventSource`` before any page script runs and keeps each
    event's data (read back with ``collect_events``).
    """

    bodies: list[tuple[str, int, bytes]] = field(default_factory=list)     # (url, status, body)
    events: list[str] = field(default_factory=list)                        # "<event> <data>"
    finished: list[str] = field(default_factory=list)                      # every request's url, in order
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, context: Any) -> None:
        context.add_init_script(script=_EVENT_TAP)
        context.on("requestfinished", self._finished)

    def _finished(self, request: Any) -> None:
        response = request.response()
        if response is None:
            return
        if "text/event-stream" in (response.headers.get("content-type") or "") or 300 <= response.status < 400:
            return
        with self._lock:
            self.finished.append(request.url)
        try:
            body = response.body()
        except Exception:  # noqa: BLE001 - a page that navigated away, a fetch read in the page: body gone
            return
        with self._lock:
            self.bodies.append((request.url, response.status, body))

    def collect_events(self, page: Any) -> None:
        """Move the events the page's EventSources received into ``events``."""
        got = page.evaluate("() => (window.__kdEvents || []).splice(0)")
        with self._lock:
            self.events += [str(e) for e in got]

    def leaks(self, secrets: list[str]) -> list[str]:
        with self._lock:
            found = [f"{url}: {hit}" for url, _status, body in self.bodies for hit in find_secrets(body, secrets)]
            found += [f"event: {hit}" for data in self.events for hit in find_secrets(data, secrets)]
        return found

    def api_bodies(self) -> list[tuple[str, int, bytes]]:
        with self._lock:
            return [(u, s, b) for u, s, b in self.bodies if "/api/" in u]

    def contract_errors(self) -> list[str]:
        """Each JSON answer and event checked against fleet/dashboard/schemas/api.json (the server's contract)."""
        import jsonschema
        from dashkit import validate
        errors = []
        checks = [(_schema_for(url, status), body, url) for url, status, body in self.api_bodies()]
        checks += [({"kiosk": "fleet_row", "alarm": "alarm"}.get(e.split(" ", 1)[0]), e.split(" ", 1)[1].encode(),
                    "event") for e in list(self.events)]
        for name, body, where in checks:
            if name is None:
                continue
            try:
                validate(json.loads(body), name)
            except (ValueError, jsonschema.ValidationError) as exc:
                errors.append(f"{where} ({name}): {str(exc).splitlines()[0]}")
        return errors


def _schema_for(url: str, status: int) -> str | None:
    """The contract's ``$defs`` name for an API answer, None for one that is not JSON (CSV) or not listed."""
    path = urlsplit(url).path
    query = urlsplit(url).query
    if status >= 400:
        return "error"
    if "format=csv" in query or path == "/api/events":
        return None
    if path.startswith("/api/kiosks/"):
        return "series" if path.endswith("/series") else "kiosk"
    return {"/api/me": "me", "/api/fleet": "fleet", "/api/alarms": "alarms", "/api/alarms/ack": "alarm",
            "/api/reports/tx": "report", "/api/audit": "audit"}.get(path)


# Kept in the page's own memory; the tests read it with page.evaluate. Wrapping keeps EventSource's behaviour.
_EVENT_TAP = """
(() => {
  const Original = window.EventSource;
  if (!Original || Original.__kdTapped) { return; }
  window.__kdEvents = [];
  class Tapped extends Original {
    constructor(url, options) {
      super(url, options);
      for (const kind of ["kiosk", "alarm", "message"]) {
        this.addEventListener(kind, (event) => window.__kdEvents.push(kind + " " + event.data));
      }
    }
  }
  Tapped.__kdTapped = true;
  window.EventSource = Tapped;
})();
"""


# -- what a page shows, measured --------------------------------------------------------------------

# Every visible text of the page: its contrast against the background it sits on (the first opaque
# ancestor background), and whether it is Chinese where nothing marks it so (lang=zh on the element or an
# ancestor) and it is not what a person typed (.user-text: a note, an audit detail).
MEASURE_TEXT = """
() => {
  const rgba = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest(".visually-hidden, .uplot, option")) continue;
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === "hidden") continue;
    const fg = luminance(rgba(style.color)), bg = luminance(background(el));
    out.push({text: node.textContent.trim().slice(0, 40), cls: el.className,
              contrast: (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05),
              chinese: /[\u3400-\u9fff]/.test(node.textContent) && !el.closest("[lang^=zh], .user-text")});
  }
  return out;
}
"""


# -- a person at the dashboard ---------------------------------------------------------------------

class Manager:
    """A fleet manager in their own browser context: logged in through the login form."""

    def __init__(self, browser: Any, stack: DashboardStack, user: str | None, *, lang: str = "zh",
                 viewport: dict[str, int] | None = None, recorder: Recorder | None = None,
                 scale: float = 1.0) -> None:
        self.stack, self.user, self.lang = stack, user, lang
        self.context = browser.new_context(viewport=viewport or OFFICE, locale="zh-CN" if lang == "zh" else "en-US",
                                           accept_downloads=True, device_scale_factor=scale)
        self.recorder = recorder or Recorder()
        self.recorder.attach(self.context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        if user is not None:
            self.login(user)

    def text(self, key: str, **values: Any) -> str:
        """The page's string ``key`` in this manager's language, placeholders filled."""
        text = STRINGS[key][self.lang]
        return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), text)

    def pattern(self, key: str) -> re.Pattern[str]:
        """``key``'s string with every placeholder matching anything (a duration, a name)."""
        parts = re.split(r"\{\w+\}", STRINGS[key][self.lang])
        return re.compile(".*?".join(re.escape(p) for p in parts))

    def login(self, user: str, password: str = PASSWORD, *, expect_ok: bool = True) -> None:
        self.page.goto(f"{self.stack.url}/login")
        self.page.get_by_label(self.text("login.username")).fill(user)
        self.page.get_by_label(self.text("login.password")).fill(password)
        self.page.get_by_role("button", name=self.text("btn.login")).click()
        if expect_ok:
            self.page.wait_for_url(f"{self.stack.url}/")
            self.ready("fleet")

    def open(self, path: str, ready: str) -> None:
        self.collect_events()
        self.page.goto(f"{self.stack.url}{path}")
        self.ready(ready)

    def collect_events(self) -> None:
        """Keep the server-sent events this page received before it navigates (they live in the page)."""
        if self.page.url.startswith(self.stack.url):
            self.recorder.collect_events(self.page)

    def ready(self, page_name: str, timeout: float = 20_000) -> None:
        # The data-ready hook says the page drew itself once; tests then read visible text.
        self.page.wait_for_selector(f"body[data-ready={page_name}]", state="attached", timeout=timeout)

    def row(self, kiosk: str) -> Any:
        return self.page.locator(f"#fleet-rows tr[data-kiosk='{kiosk}']")

    def switch_language(self) -> None:
        self.page.locator("#language-toggle").click()
        self.lang = "en" if self.lang == "zh" else "zh"
        self.page.wait_for_selector(f"html[lang^={self.lang}]", state="attached")

    def fetch(self, method: str, path: str, *, body: Any = None, csrf: bool = True) -> dict[str, Any]:
        """A request from the page's own context (its cookies, its origin): {status, body}."""
        return self.page.evaluate(
            """async ([method, path, body, csrf]) => {
                 const headers = {"Content-Type": "application/json"};
                 if (csrf) {
                   const me = await (await fetch("/api/me")).json();
                   headers["X-CSRF-Token"] = me.csrf;
                 }
                 const response = await fetch(path, {method, headers,
                   body: body === null ? undefined : JSON.stringify(body)});
                 let parsed = null;
                 try { parsed = await response.json(); } catch { parsed = null; }
                 return {status: response.status, body: parsed};
               }""", [method, path, body, csrf])

    def wait(self, predicate: Any, timeout: float = 20.0, message: str = "condition") -> None:
        """``wait_until`` that lets Playwright deliver its events meanwhile (a plain sleep holds them back)."""
        for _ in range(int(timeout * 10)):
            if predicate():
                return
            self.page.wait_for_timeout(100)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")

    def measure_text(self) -> list[dict[str, Any]]:
        """MEASURE_TEXT on the page as it is now."""
        found: list[dict[str, Any]] = self.page.evaluate(MEASURE_TEXT)
        return found

    def visible_text(self) -> str:
        return str(self.page.inner_text("body"))

    def close(self) -> None:
        self.collect_events()
        self.context.close()

