// SPDX-License-Identifier: Apache-2.0
// Reports (/reports): stored transactions per kiosk, per service or per day
// for a date range (days in the dashboard's time zone, both ends included),
// as a table with a total, and the same as CSV from the server (format=csv).

import {get} from "./api.js";
import {byId, fill, h} from "./dom.js";
import {day, dayMinus, number} from "./format.js";
import {label, t} from "./i18n.js";
import {errorBox, startPage} from "./shell.js";

const GROUPINGS = ["kiosk", "service", "day"];
const OUTCOMES = ["completed", "abandoned", "failed", "total"];

const state = {query: null, data: null, error: null, loading: false};

function initialQuery() {
  const params = new URLSearchParams(location.search);
  const today = day();
  const valid = (value) => /^\d{4}-\d{2}-\d{2}$/.test(value || "");
  return {
    from: valid(params.get("from")) ? params.get("from") : dayMinus(today, 6),
    to: valid(params.get("to")) ? params.get("to") : today,
    by: GROUPINGS.includes(params.get("by")) ? params.get("by") : "kiosk",
  };
}

function queryString(extra = {}) {
  return new URLSearchParams({...state.query, ...extra}).toString();
}

function keyCell(key) {
  if (state.query.by === "kiosk") {
    return h("a", {href: `/kiosks/${encodeURIComponent(key)}`}, key);
  }
  if (state.query.by === "service") {
    return label("service", key);
  }
  return key;
}

function result() {
  if (state.error) {
    return errorBox(state.error);
  }
  if (!state.data) {
    return h("p", {class: "muted"}, state.loading ? t("loading") : "");
  }
  const rows = state.data.rows || [];
  if (!rows.length) {
    return h("p", {class: "muted", id: "report-empty"}, t("reports.empty"));
  }
  const total = state.data.total || {};
  return h("div", {class: "table-wrap"}, h("table", {class: "data", id: "report-table"},
    h("caption", {}, t("reports.caption", {from: state.data.from, to: state.data.to,
      by: t(`reports.by.${state.data.by}`)})),
    h("thead", {}, h("tr", {}, h("th", {scope: "col"}, t(`reports.by.${state.data.by}`)),
      OUTCOMES.map((o) => h("th", {scope: "col", class: "num"}, t(`outcome.${o}`))))),
    h("tbody", {}, rows.map((row) => h("tr", {"data-key": row.key},
      h("th", {scope: "row"}, keyCell(row.key)),
      OUTCOMES.map((o) => h("td", {class: "num"}, number(row[o] ?? 0)))))),
    h("tfoot", {}, h("tr", {}, h("th", {scope: "row"}, t("reports.total")),
      OUTCOMES.map((o) => h("td", {class: "num"}, number(total[o] ?? 0)))))));
}

function drawResult() {
  const box = document.getElementById("report-result");
  if (box) {
    fill(box, result());
  }
  const link = document.getElementById("csv-link");
  if (link) {
    link.href = `/api/reports/tx?${queryString({format: "csv"})}`;
  }
}

function render() {
  const q = state.query;
  const field = (id, text, input) => h("div", {class: "field"}, h("label", {for: id}, text), input);
  fill(byId("main"),
    h("h1", {}, t("page.reports.title")),
    h("form", {class: "filters report-form", onsubmit: (event) => {
      event.preventDefault();
      const form = event.target;
      const query = {from: form.elements.from.value, to: form.elements.to.value, by: form.elements.by.value};
      if (query.from > query.to) {          // ISO days compare as text
        state.data = null;
        state.error = null;
        fill(byId("report-result"), h("p", {class: "notice error", role: "alert"}, t("reports.badRange")));
        return;
      }
      state.query = query;
      history.replaceState(null, "", `${location.pathname}?${queryString()}`);
      load();
    }},
    field("report-from", t("reports.from"), h("input", {type: "date", id: "report-from", name: "from",
      value: q.from, required: true})),
    field("report-to", t("reports.to"), h("input", {type: "date", id: "report-to", name: "to", value: q.to,
      required: true})),
    field("report-by", t("reports.groupBy"), h("select", {id: "report-by", name: "by"},
      GROUPINGS.map((by) => h("option", {value: by, selected: by === q.by}, t(`reports.by.${by}`))))),
    h("div", {class: "field"}, h("button", {type: "submit", class: "primary"}, t("btn.showReport"))),
    h("div", {class: "field"}, h("a", {id: "csv-link", class: "button secondary", download: "",
      href: `/api/reports/tx?${queryString({format: "csv"})}`}, t("btn.csv")))),
    h("p", {class: "muted"}, t("reports.note")),
    h("div", {id: "report-result", "aria-live": "polite"}));
  drawResult();
  document.body.dataset.ready = "reports";
}

async function load() {
  state.loading = true;
  drawResult();
  try {
    state.data = await get(`/api/reports/tx?${queryString()}`);
    state.error = null;
  } catch (error) {
    state.data = null;
    state.error = error;
  } finally {
    state.loading = false;
  }
  drawResult();
}

state.query = initialQuery();
startPage({name: "reports", render, load});
