// SPDX-License-Identifier: Apache-2.0
// The fleet page (/): totals, a card per site, the kiosk table with filters,
// search and sortable columns. Live: an `event: kiosk` replaces that kiosk's
// row in place and recounts the totals and site cards (no reload). Rows are
// built with DOM calls into one fragment: 1,000 kiosks render in one pass.

import {errorText, get} from "./api.js";
import {button, byId, fill, h} from "./dom.js";
import {number, since} from "./format.js";
import {label, t} from "./i18n.js";
import {errorBox, showFatal, startPage} from "./shell.js";
import {alarmBadges, SEVERITIES} from "./widgets.js";

const STATUSES = ["online", "offline", "alarm", "paper", "maintenance", "never_seen"];
const COLUMNS = ["kiosk", "site", "status", "mode", "alarms", "paper", "tx_today", "last_seen", "agent", "firmware"];
const PAPER_ORDER = {out: 0, low: 1, unknown: 2, ok: 3};
const STATUS_ORDER = {offline: 0, never_seen: 1, online: 2};
const collator = new Intl.Collator("en", {numeric: true});
// The site filter's value for kiosks without a site (registered, never heard from): "" means every site.
const NO_SITE = "~none";

const state = {
  rows: new Map(),           // kiosk -> its /api/fleet row
  trs: new Map(),            // kiosk -> its <tr> while shown
  loaded: false,
  error: null,
  filters: {site: "", status: "", q: ""},
  sort: {key: "kiosk", dir: 1},
};

// -- what a row says ------------------------------------------------------------------

function statusOf(row) {
  if (row.online === null || row.online === undefined) {
    return "never_seen";
  }
  return row.online ? "online" : "offline";
}

function alarmCount(row, severity) {
  return (row.alarms && row.alarms[severity]) || 0;
}

function alarmWeight(row) {
  return alarmCount(row, "critical") * 1e6 + alarmCount(row, "warning") * 1e3 + alarmCount(row, "info");
}

function matches(row) {
  const {site, status, q} = state.filters;
  if (site && (row.site || NO_SITE) !== site) {
    return false;
  }
  if (q) {
    const needle = q.toLowerCase();
    if (!row.kiosk.toLowerCase().includes(needle) && !(row.site || "").toLowerCase().includes(needle)) {
      return false;
    }
  }
  switch (status) {
    case "": return true;
    case "alarm": return alarmWeight(row) > 0;
    case "paper": return row.paper === "low" || row.paper === "out";
    case "maintenance": return row.mode === "maintenance" || row.mode === "out_of_service";
    default: return statusOf(row) === status;
  }
}

function sortValue(row, key) {
  switch (key) {
    case "status": return STATUS_ORDER[statusOf(row)];
    case "alarms": return alarmWeight(row);
    case "paper": return PAPER_ORDER[row.paper] ?? 2;
    case "tx_today": return row.tx_today || 0;
    case "last_seen": return row.last_seen ? Date.parse(row.last_seen) : 0;
    case "agent": return (row.versions && row.versions.agent) || "";
    case "firmware": return (row.versions && row.versions.firmware) || "";
    default: return row[key] || "";
  }
}

function compare(a, b) {
  const {key, dir} = state.sort;
  const va = sortValue(a, key);
  const vb = sortValue(b, key);
  const order = typeof va === "number" && typeof vb === "number" ? va - vb : collator.compare(String(va), String(vb));
  return order * dir || collator.compare(a.kiosk, b.kiosk);
}

// -- pieces ---------------------------------------------------------------------------

function statusCell(row) {
  const status = statusOf(row);
  if (status === "never_seen") {
    return h("span", {class: "status status-never"}, t("status.never_seen"));
  }
  const key = status === "online" ? "status.onlineFor" : "status.offlineFor";
  return h("span", {class: `status status-${status}`},
    h("span", {class: "status-mark", "aria-hidden": "true"}, status === "online" ? "●" : "○"), " ",
    row.online_since ? since(row.online_since, key) : t(`status.${status}`));
}

function paperCell(paper) {
  const value = paper || "unknown";
  return h("span", {class: `paper paper-${value}`}, label("paper", value));
}

function renderRow(row) {
  const versions = row.versions || {};
  const shownAlarms = (row.active_alarms || []);
  // data-alarms: the active codes, for the bench's live-latency probe and tests (what the badges say in words).
  return h("tr", {"data-kiosk": row.kiosk, "data-alarms": shownAlarms.map((a) => a.code).sort().join(" ")},
    h("th", {scope: "row"}, h("a", {href: `/kiosks/${encodeURIComponent(row.kiosk)}`}, row.kiosk)),
    h("td", {}, row.site || "—"),
    h("td", {}, statusCell(row)),
    h("td", {}, label("mode", row.mode)),
    h("td", {class: "badges"}, alarmBadges(row.alarms, shownAlarms)),
    h("td", {}, paperCell(row.paper)),
    h("td", {class: "num"}, number(row.tx_today ?? 0)),
    h("td", {}, since(row.last_seen)),
    h("td", {}, versions.agent || "—"),
    h("td", {}, versions.firmware || "—"));
}

function totals() {
  const out = {kiosks: 0, online: 0, offline: 0, never: 0, tx: 0, alarms: {critical: 0, warning: 0, info: 0}};
  for (const row of state.rows.values()) {
    out.kiosks += 1;
    const status = statusOf(row);
    out[status === "never_seen" ? "never" : status] += 1;
    out.tx += row.tx_today || 0;
    for (const severity of SEVERITIES) {
      out.alarms[severity] += alarmCount(row, severity);
    }
  }
  return out;
}

function sites() {
  const bySite = new Map();
  for (const row of state.rows.values()) {
    const name = row.site || NO_SITE;
    if (!bySite.has(name)) {
      bySite.set(name, {site: name, kiosks: 0, online: 0, offline: 0, tx: 0,
        alarms: {critical: 0, warning: 0, info: 0}});
    }
    const site = bySite.get(name);
    site.kiosks += 1;
    if (row.online === true) {
      site.online += 1;
    } else {
      site.offline += 1;    // never seen counts as not online here: nobody is being served there
    }
    site.tx += row.tx_today || 0;
    for (const severity of SEVERITIES) {
      site.alarms[severity] += alarmCount(row, severity);
    }
  }
  // Kiosks without a site last.
  return [...bySite.values()].sort((a, b) => (a.site === NO_SITE) - (b.site === NO_SITE) ||
    collator.compare(a.site, b.site));
}

// -- drawing --------------------------------------------------------------------------

function drawTotals() {
  const sum = totals();
  const item = (key, value, cls = "") => h("div", {class: `total ${cls}`, "data-total": key},
    h("dt", {}, t(`totals.${key}`)), h("dd", {}, number(value)));
  fill(byId("totals"),
    item("kiosks", sum.kiosks),
    item("online", sum.online, "ok"),
    item("offline", sum.offline, sum.offline ? "bad" : ""),
    sum.never ? item("never", sum.never, "bad") : null,
    item("critical", sum.alarms.critical, sum.alarms.critical ? "sev-critical" : ""),
    item("warning", sum.alarms.warning, sum.alarms.warning ? "sev-warning" : ""),
    item("info", sum.alarms.info),
    item("tx", sum.tx));
}

function drawSites() {
  // Live updates redraw the cards: a keyboard user's focus stays on the card they were on.
  const focused = document.activeElement?.closest?.(".site-card")?.dataset.site;
  const cards = sites().map((site) => h("li", {}, button([
    h("span", {class: "site-line"},
      h("span", {class: "site-name"}, site.site === NO_SITE ? t("sites.none") : site.site),
      h("span", {class: "site-counts"}, t("sites.counts", {online: site.online, offline: site.offline}))),
    h("span", {class: "site-line"}, h("span", {class: "site-alarms"}, alarmBadges(site.alarms)),
      h("span", {class: "site-tx"}, t("sites.tx", {n: number(site.tx)}))),
  ], () => setFilter({site: state.filters.site === site.site ? "" : site.site}),
  {class: `site-card${site.offline ? " has-offline" : ""}`,
    "aria-pressed": state.filters.site === site.site ? "true" : "false", "data-site": site.site})));
  fill(byId("sites"), cards);
  if (focused !== undefined) {
    document.querySelector(`.site-card[data-site="${CSS.escape(focused)}"]`)?.focus();
  }
}

function markSites() {
  for (const card of document.querySelectorAll(".site-card")) {
    card.setAttribute("aria-pressed", card.dataset.site === state.filters.site ? "true" : "false");
  }
}

function drawSiteOptions() {
  const select = document.getElementById("filter-site");
  if (!select) {
    return;
  }
  const names = sites().map((s) => s.site);
  fill(select, h("option", {value: ""}, t("filter.allSites")),
    names.map((name) => h("option", {value: name, selected: name === state.filters.site},
      name === NO_SITE ? t("sites.none") : name)));
  select.value = state.filters.site;
}

function drawTable() {
  const tbody = byId("fleet-rows");
  const shown = [...state.rows.values()].filter(matches).sort(compare);
  const fragment = document.createDocumentFragment();
  state.trs.clear();
  for (const row of shown) {
    const tr = renderRow(row);
    state.trs.set(row.kiosk, tr);
    fragment.append(tr);
  }
  tbody.replaceChildren(fragment);
  drawCount();
  for (const th of document.querySelectorAll("#fleet-table thead th[data-column]")) {
    const active = th.dataset.column === state.sort.key;
    th.setAttribute("aria-sort", active ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
    th.querySelector(".sort-mark").textContent = active ? (state.sort.dir > 0 ? "▲" : "▼") : "";
  }
  byId("fleet-empty").hidden = shown.length > 0 || !state.loaded;
}

function drawCount() {
  byId("fleet-count").textContent = t("fleet.shown", {shown: state.trs.size, total: state.rows.size});
}

function drawAll() {
  drawTotals();
  drawSites();
  drawSiteOptions();
  drawTable();
  document.body.dataset.ready = "fleet";
}

// -- filters in the address bar (a reload or a shared link keeps them) ------------------

function readFilters() {
  const params = new URLSearchParams(location.search);
  state.filters = {site: params.get("site") || "", status: STATUSES.includes(params.get("status")) ?
    params.get("status") : "", q: params.get("q") || ""};
  const sortKey = params.get("sort");
  if (COLUMNS.includes(sortKey)) {
    state.sort = {key: sortKey, dir: params.get("dir") === "desc" ? -1 : 1};
  }
}

function writeFilters() {
  const params = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(state.filters)) {
    if (value) {
      params.set(name, value);
    } else {
      params.delete(name);
    }
  }
  params.set("sort", state.sort.key);
  params.set("dir", state.sort.dir > 0 ? "asc" : "desc");
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

function setFilter(change) {
  Object.assign(state.filters, change);
  writeFilters();
  markSites();
  drawSiteOptions();
  const status = document.getElementById("filter-status");
  if (status) {
    status.value = state.filters.status;
  }
  drawTable();
}

function sortBy(key) {
  state.sort = {key, dir: state.sort.key === key ? -state.sort.dir : 1};
  writeFilters();
  drawTable();
}

// -- the page -------------------------------------------------------------------------

function render() {
  let searchTimer = null;
  const head = h("tr", {}, COLUMNS.map((column) => h("th", {scope: "col", "data-column": column, "aria-sort": "none"},
    button([t(`col.${column}`), h("span", {class: "sort-mark", "aria-hidden": "true"})], () => sortBy(column),
      {class: "sort"}))));
  fill(byId("main"),
    h("h1", {}, t("page.fleet.title")),
    state.error ? errorBox(state.error) : null,
    h("section", {"aria-labelledby": "totals-heading"},
      h("h2", {id: "totals-heading", class: "visually-hidden"}, t("totals.heading")),
      h("dl", {id: "totals", class: "totals"})),
    h("section", {"aria-labelledby": "sites-heading", class: "sites-section"},
      h("h2", {id: "sites-heading"}, t("sites.heading")),
      h("ul", {id: "sites", class: "sites"})),
    h("section", {"aria-labelledby": "table-heading"},
      h("h2", {id: "table-heading"}, t("fleet.tableHeading")),
      h("form", {class: "filters", role: "search", onsubmit: (e) => e.preventDefault()},
        h("label", {}, t("filter.status"), " ",
          h("select", {id: "filter-status", onchange: (e) => setFilter({status: e.target.value})},
            h("option", {value: ""}, t("filter.allStatuses")),
            STATUSES.map((s) => h("option", {value: s, selected: s === state.filters.status}, t(`filter.${s}`))))),
        h("label", {}, t("filter.site"), " ",
          h("select", {id: "filter-site", onchange: (e) => setFilter({site: e.target.value})})),
        h("label", {}, t("filter.search"), " ",
          h("input", {type: "search", id: "filter-q", value: state.filters.q, placeholder: t("filter.searchHint"),
            autocomplete: "off",
            oninput: (e) => {
              clearTimeout(searchTimer);
              searchTimer = setTimeout(() => setFilter({q: e.target.value.trim()}), 120);
            }})),
        h("span", {id: "fleet-count", class: "count", role: "status"})),
      h("div", {class: "table-wrap"},
        h("table", {id: "fleet-table", class: "data fleet"},
          h("caption", {class: "visually-hidden"}, t("fleet.caption")),
          h("thead", {}, head),
          h("tbody", {id: "fleet-rows"}))),
      h("p", {id: "fleet-empty", class: "muted", hidden: true}, t("fleet.empty"))));
  drawAll();
}

async function load(early) {
  try {
    const data = await (early instanceof Promise ? early : get("/api/fleet"));
    state.rows = new Map(data.kiosks.map((row) => [row.kiosk, row]));
    state.loaded = true;
    state.error = null;
    performance.mark("fleet-data");
    drawAll();
    performance.mark("fleet-rendered");
    performance.measure("fleet-render", "fleet-data", "fleet-rendered");
  } catch (error) {
    state.error = error;
    if (!state.loaded) {
      showFatal(error, load);
    } else {
      byId("fleet-count").textContent = errorText(error);
    }
  }
}

/** A kiosk changed: its row is replaced where it stands; totals and sites are recounted. */
function onKiosk(row) {
  if (!row || typeof row.kiosk !== "string" || !state.loaded) {
    return;
  }
  const isNew = !state.rows.has(row.kiosk);
  state.rows.set(row.kiosk, row);
  const tr = state.trs.get(row.kiosk);
  if (isNew || (!tr && matches(row))) {
    drawAll();            // a kiosk heard of for the first time: place it where the sort puts it
    return;
  }
  if (tr) {
    if (matches(row)) {
      const fresh = renderRow(row);
      const hadFocus = tr.contains(document.activeElement);
      tr.replaceWith(fresh);
      state.trs.set(row.kiosk, fresh);
      if (hadFocus) {
        fresh.querySelector("a")?.focus();     // a keyboard user on this row stays on it
      }
    } else {
      tr.remove();
      state.trs.delete(row.kiosk);
      drawCount();
    }
  }
  drawTotals();
  drawSites();
}

readFilters();
startPage({name: "fleet", render, prefetch: () => get("/api/fleet"), load, onKiosk});
