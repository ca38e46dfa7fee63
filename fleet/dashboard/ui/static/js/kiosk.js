// SPDX-License-Identifier: Apache-2.0
// One kiosk (/kiosks/{kiosk}): state, system, health plots and transactions
// per hour (24 h / 7 d / 30 d), active alarms and their history, peripherals,
// the last commands and their results, the ledger's view of its records, and
// the kioskctl lines for actions. The dashboard holds no key that can command
// a kiosk: an action is a line to copy and run with one's own key.

import {get} from "./api.js";
import {button, byId, fill, h} from "./dom.js";
import {dateTime, duration, number, since} from "./format.js";
import {label, language, t} from "./i18n.js";
import {timePlot} from "./plots.js";
import {alarmSeverity, ackSummary} from "./widgets.js";
import {errorBox, showFatal, startPage} from "./shell.js";

const RANGES = {"24h": 24, "7d": 168, "30d": 720};
const kiosk = decodeURIComponent(location.pathname.replace(/^\/kiosks\//, "").replace(/\/$/, ""));

const state = {
  detail: null,
  series: null,
  range: RANGES[new URLSearchParams(location.search).get("range")] ? new URLSearchParams(location.search).get("range")
    : "24h",
  error: null,
  seriesError: null,
  plots: [],
  plotsBox: null,            // kept across redraws: live updates do not rebuild the plots
  plotsLang: null,           // the language the plots' titles were drawn in
  copied: "",
};

/** A selector that finds the focused control again after a redraw (null: nothing worth keeping). */
function focusKey(el) {
  if (!el || el === document.body) {
    return null;
  }
  if (el.dataset?.range) {
    return `[data-range="${el.dataset.range}"]`;
  }
  const action = el.closest?.("li[data-action]");
  if (action) {
    return `li[data-action="${CSS.escape(action.dataset.action)}"] button`;
  }
  return el.id ? `#${CSS.escape(el.id)}` : null;
}

// -- pieces ---------------------------------------------------------------------------

function statusText(detail) {
  if (detail.online === null || detail.online === undefined) {
    return h("span", {class: "status status-never"}, t("status.never_seen"));
  }
  const status = detail.online ? "online" : "offline";
  return h("span", {class: `status status-${status}`},
    h("span", {class: "status-mark", "aria-hidden": "true"}, detail.online ? "●" : "○"), " ",
    detail.online_since ? since(detail.online_since, detail.online ? "status.onlineFor" : "status.offlineFor")
      : t(`status.${status}`));
}

function facts(detail) {
  const system = detail.system || {};
  const versions = detail.versions || {};
  const fact = (key, value) => h("div", {class: "fact"}, h("dt", {}, t(key)), h("dd", {}, value));
  return h("dl", {class: "facts"},
    fact("kiosk.site", detail.site || "—"),
    fact("kiosk.status", statusText(detail)),
    fact("kiosk.mode", label("mode", detail.mode)),
    fact("kiosk.lastSeen", since(detail.last_seen)),
    fact("kiosk.healthAt", since(detail.health_at)),
    fact("kiosk.txToday", number(detail.tx_today ?? 0)),
    fact("kiosk.disk", system.disk_free_mb === undefined || system.disk_free_mb === null ? "—"
      : t("kiosk.diskValue", {free: number(Math.round(system.disk_free_mb)),
        total: number(Math.round(system.disk_total_mb || 0))})),
    fact("kiosk.cpuTemp", system.cpu_temp_c === undefined || system.cpu_temp_c === null ? "—"
      : `${Math.round(system.cpu_temp_c * 10) / 10} °C`),
    fact("kiosk.uptime", system.uptime_s === undefined || system.uptime_s === null ? "—" : duration(system.uptime_s)),
    fact("kiosk.agent", versions.agent || "—"),
    fact("kiosk.firmware", versions.firmware || "—"));
}

function table(id, columns, rows, empty) {
  if (!rows.length) {
    return h("p", {class: "muted", id}, empty);
  }
  return h("div", {class: "table-wrap"}, h("table", {class: "data", id},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col"}, t(c))))),
    h("tbody", {}, rows)));
}

function activeAlarms(detail) {
  const rows = (detail.active_alarms || []).map((a) => h("tr", {"data-code": a.code},
    h("th", {scope: "row"}, label("alarmcode", a.code), h("span", {class: "code"}, a.code)),
    h("td", {}, alarmSeverity(a.severity)),
    h("td", {}, dateTime(a.since), h("br"), since(a.since, "alarm.openFor")),
    h("td", {}, a.detail || "—", a.latched ? h("p", {class: "latched"}, t("alarm.latched")) : null),
    h("td", {}, ackSummary(a))));
  return table("active-alarms", ["col.alarm", "col.severity", "col.since", "col.detail", "col.ack"], rows,
    t("kiosk.noActiveAlarms"));
}

function alarmHistory(detail) {
  const rows = (detail.alarm_history || []).map((a) => h("tr", {"data-code": a.code},
    h("th", {scope: "row"}, label("alarmcode", a.code), h("span", {class: "code"}, a.code)),
    h("td", {}, alarmSeverity(a.severity)),
    h("td", {}, dateTime(a.raised_at, {seconds: true})),
    h("td", {}, a.cleared_at ? dateTime(a.cleared_at, {seconds: true}) : h("strong", {}, t("alarm.stillOpen"))),
    h("td", {class: "num"}, a.cleared_at ? duration(a.duration_s) : since(a.raised_at, "alarm.openFor")),
    h("td", {}, a.detail || "—"),
    h("td", {}, ackSummary(a))));
  return table("alarm-history", ["col.alarm", "col.severity", "col.raised", "col.cleared", "col.duration",
    "col.detail", "col.ack"], rows, t("kiosk.noAlarmHistory"));
}

function peripherals(detail) {
  const rows = (detail.peripherals || []).map((p) => h("tr", {"data-device": p.name},
    h("th", {scope: "row"}, p.name),
    h("td", {}, label("kind", p.kind)),
    h("td", {}, h("span", {class: `device device-${p.state}`}, label("device", p.state))),
    h("td", {}, p.detail || "—"),
    h("td", {}, p.simulated ? t("kiosk.simulated") : t("kiosk.real"))));
  return table("peripherals", ["col.device", "col.kind", "col.state", "col.detail", "col.backend"], rows,
    t("kiosk.noPeripherals"));
}

function commands(detail) {
  const rows = (detail.commands || []).map((c) => h("tr", {},
    h("td", {}, dateTime(c.ts, {seconds: true})),
    h("th", {scope: "row"}, c.name),
    h("td", {}, h("span", {class: `cmd cmd-${c.status}`}, label("cmd", c.status))),
    h("td", {}, c.code || "—"),
    h("td", {}, c.message || "—")));
  return table("commands", ["col.time", "col.command", "col.result", "col.code", "col.message"], rows,
    t("kiosk.noCommands"));
}

function ledger(detail) {
  const l = detail.ledger || {};
  const fact = (key, value, bad = false) => h("div", {class: `fact${bad ? " bad" : ""}`},
    h("dt", {}, t(key)), h("dd", {}, value));
  return h("dl", {class: "facts", id: "ledger"},
    fact("ledger.lastSeq", l.last_seq ?? "—"),
    fact("ledger.lastTx", l.last_tx_at ? dateTime(l.last_tx_at, {seconds: true}) : "—"),
    fact("ledger.lag", l.lag_s === null || l.lag_s === undefined ? "—"
      : l.lag_s < 60 ? t("dur.s", {s: Math.round(l.lag_s * 10) / 10}) : duration(l.lag_s)),
    fact("ledger.gaps", l.gaps_open ? t("ledger.gapsOpen", {n: l.gaps_open}) : t("ledger.none"), l.gaps_open > 0),
    fact("ledger.quarantined", l.quarantined ? t("ledger.quarantinedN", {n: l.quarantined}) : t("ledger.none"),
      l.quarantined > 0),
    fact("ledger.unacked", number(l.unacked ?? 0)),
    fact("ledger.epoch", l.epoch ? h("code", {title: l.epoch}, String(l.epoch).slice(0, 12)) : "—"));
}

async function copy(text, which) {
  try {
    await navigator.clipboard.writeText(text);
    state.copied = t("actions.copied", {what: which});
  } catch {
    // No clipboard permission (plain HTTP off loopback): select the line so Ctrl+C copies it.
    const code = document.querySelector(`[data-action="${CSS.escape(which)}"] code`);
    if (code) {
      getSelection().selectAllChildren(code);
    }
    state.copied = t("actions.selected");
  }
  byId("copy-status").textContent = state.copied;
}

function actions(detail) {
  const items = (detail.actions || []).map((a) => h("li", {"data-action": a.action},
    h("span", {class: "action-name"}, label("action", a.action)),
    h("code", {class: "cmdline"}, a.command),
    button(t("btn.copy"), () => copy(a.command, a.action), {class: "secondary small",
      "aria-label": t("actions.copyLabel", {what: label("action", a.action)})})));
  return [
    h("p", {class: "muted"}, t("actions.note")),
    items.length ? h("ul", {class: "actions", id: "actions"}, items) : h("p", {class: "muted"}, t("actions.none")),
    h("p", {id: "copy-status", class: "muted", role: "status"}, state.copied),
  ];
}

// -- plots ----------------------------------------------------------------------------

/** The offline periods of the range, as [from, to] Unix seconds (an open one ends now). */
function offlinePeriods(series) {
  const now = Date.now() / 1000;
  return (series.online || []).filter((p) => p.online === false)
    .map((p) => [Date.parse(p.from) / 1000, p.to ? Date.parse(p.to) / 1000 : now]);
}

/** "Offline 2 times in this range, 5 min in all (the pale red bands)", or "online throughout". */
function offlineSummary(series) {
  const periods = offlinePeriods(series);
  if (!periods.length) {
    return t((series.online || []).length ? "plot.onlineThroughout" : "plot.noPresence");
  }
  const total = periods.reduce((sum, [from, to]) => sum + Math.max(0, to - from), 0);
  return t("plot.offline", {n: periods.length, d: duration(total)});
}

function plotSpecs(series) {
  const health = series.health || {t: []};
  const tx = series.tx_per_hour || {t: [], count: []};
  const offline = offlinePeriods(series);
  return [
    {id: "disk_free_mb", title: t("plot.disk"), unit: "MB", t: health.t, values: health.disk_free_mb || [],
      color: "#0b57d0", offline},
    {id: "cpu_temp_c", title: t("plot.temp"), unit: "°C", t: health.t, values: health.cpu_temp_c || [],
      color: "#a4161a", offline},
    {id: "outbox_backlog", title: t("plot.backlog"), unit: "", t: health.t, values: health.outbox_backlog || [],
      color: "#7a4b00", offline},
    {id: "reconnects", title: t("plot.reconnects"), unit: "", t: health.t, values: health.reconnects || [],
      color: "#5b2a86", bars: true, offline},
    {id: "tx_per_hour", title: t("plot.tx"), unit: "", t: tx.t, values: tx.count || [], color: "#0a6b2d",
      bars: true, offline},
  ];
}

function drawPlots() {
  for (const plot of state.plots) {
    plot.destroy();
  }
  state.plots = [];
  const box = state.plotsBox;
  if (!box) {
    return;
  }
  state.plotsLang = language();
  if (state.seriesError) {
    fill(box, errorBox(state.seriesError));
    return;
  }
  if (!state.series) {
    fill(box, h("p", {class: "muted"}, t("loading")));
    return;
  }
  state.plots = plotSpecs(state.series).map(timePlot);
  fill(box, h("p", {class: "plot-presence", id: "presence"}, offlineSummary(state.series)),
    state.plots.map((p) => p.figure));
  for (const plot of state.plots) {
    plot.mount();
  }
  box.dataset.ready = state.range;
}

function rangeSwitch() {
  return h("div", {class: "range", role: "group", "aria-label": t("range.label")},
    Object.keys(RANGES).map((range) => button(t(`range.${range}`), () => setRange(range),
      {class: "secondary", "aria-pressed": state.range === range ? "true" : "false", "data-range": range})));
}

async function setRange(range) {
  state.range = range;
  const params = new URLSearchParams(location.search);
  params.set("range", range);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  for (const b of document.querySelectorAll("[data-range]")) {
    b.setAttribute("aria-pressed", b.dataset.range === range ? "true" : "false");
  }
  await loadSeries();
}

// -- the page -------------------------------------------------------------------------

function render() {
  const detail = state.detail;
  if (state.error && !detail) {
    fill(byId("main"), h("h1", {}, t("kiosk.heading", {kiosk})), errorBox(state.error));
    return;
  }
  if (!detail) {
    fill(byId("main"), h("h1", {}, t("kiosk.heading", {kiosk})), h("p", {class: "muted"}, t("loading")));
    return;
  }
  document.title = `${t("kiosk.heading", {kiosk})} · ${t("app.title")}`;
  const section = (id, title, ...body) => h("section",
    {class: "panel", "aria-labelledby": `${id}-heading`, id: `${id}-section`},
    h("h2", {id: `${id}-heading`}, title), ...body);
  // A live update redraws the page every health report: the keyboard focus and the plots stay.
  const focused = focusKey(document.activeElement);
  const firstDraw = !state.plotsBox;
  state.plotsBox ??= h("div", {id: "plots", class: "plots"});
  fill(byId("main"),
    h("p", {class: "crumbs"}, h("a", {href: "/"}, t("nav.backToFleet"))),
    h("h1", {}, t("kiosk.heading", {kiosk}), " ", statusText(detail)),
    state.error ? errorBox(state.error) : null,
    facts(detail),
    h("div", {class: "columns"},
      section("active", t("kiosk.activeAlarms"), activeAlarms(detail)),
      section("ledger", t("kiosk.ledger"), ledger(detail))),
    section("plots", t("kiosk.plots"), rangeSwitch(), state.plotsBox),
    section("history", t("kiosk.alarmHistory"), alarmHistory(detail)),
    h("div", {class: "columns"},
      section("peripherals", t("kiosk.peripherals"), peripherals(detail)),
      section("commands", t("kiosk.commands"), commands(detail))),
    section("actions", t("kiosk.actions"), actions(detail)));
  if (firstDraw || state.plotsLang !== language()) {
    drawPlots();
  }
  if (focused) {
    document.querySelector(focused)?.focus();
  }
  document.body.dataset.ready = "kiosk";
}

async function loadDetail() {
  try {
    state.detail = await get(`/api/kiosks/${encodeURIComponent(kiosk)}`);
    state.error = null;
  } catch (error) {
    state.error = error;
    if (!state.detail) {
      if (error.code === "kiosk.unknown") {
        fill(byId("main"), h("h1", {}, t("kiosk.heading", {kiosk})), errorBox(error),
          h("p", {}, h("a", {href: "/"}, t("nav.backToFleet"))));
        document.body.dataset.ready = "kiosk";
      } else {
        showFatal(error, load);
      }
      return false;
    }
  }
  render();
  return true;
}

async function loadSeries() {
  lastSeriesAt = Date.now();
  try {
    state.series = await get(`/api/kiosks/${encodeURIComponent(kiosk)}/series?hours=${RANGES[state.range]}`);
    state.seriesError = null;
  } catch (error) {
    state.seriesError = error;
  }
  drawPlots();
}

async function load() {
  if (await loadDetail()) {
    await loadSeries();
  }
}

// Live: a change of this kiosk reloads its details (once per burst); the plots at most every 30 s.
let detailTimer = null;
let lastSeriesAt = 0;
function changed() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(async () => {
    await loadDetail();
    if (Date.now() - lastSeriesAt > 30_000) {
      await loadSeries();
    }
  }, 300);
}

startPage({
  name: "kiosk", render, load,
  onKiosk: (row) => row && row.kiosk === kiosk && changed(),
  onAlarm: (alarm) => alarm && alarm.kiosk === kiosk && changed(),
});
