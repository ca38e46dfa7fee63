// SPDX-License-Identifier: Apache-2.0
// The audit trail (/audit, admins only): logins, failed logins, logouts,
// acknowledgements and user changes, newest first.

import {get} from "./api.js";
import {byId, fill, h} from "./dom.js";
import {dateTime} from "./format.js";
import {label, t} from "./i18n.js";
import {errorBox, startPage} from "./shell.js";

const state = {entries: null, error: null};

function detailText(detail) {
  if (!detail || typeof detail !== "object" || Object.keys(detail).length === 0) {
    return "—";
  }
  return Object.entries(detail).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join("; ");
}

function result() {
  if (state.error) {
    return errorBox(state.error);
  }
  if (!state.entries) {
    return h("p", {class: "muted"}, t("loading"));
  }
  if (!state.entries.length) {
    return h("p", {class: "muted"}, t("audit.empty"));
  }
  return h("div", {class: "table-wrap"}, h("table", {class: "data", id: "audit-table"},
    h("thead", {}, h("tr", {}, ["col.time", "col.user", "col.action", "col.target", "col.detail", "col.remote"]
      .map((c) => h("th", {scope: "col"}, t(c))))),
    h("tbody", {}, state.entries.map((e) => h("tr", {"data-action": e.action},
      h("td", {}, dateTime(e.at, {seconds: true})),
      h("td", {}, e.username),
      h("th", {scope: "row"}, label("auditaction", e.action)),
      h("td", {}, e.target || "—"),
      h("td", {class: "detail user-text"}, detailText(e.detail)),
      h("td", {}, e.remote || "—"))))));
}

function render() {
  fill(byId("main"), h("h1", {}, t("page.audit.title")), h("p", {class: "muted"}, t("audit.note")),
    h("div", {id: "audit-result"}, result()));
  document.body.dataset.ready = "audit";
}

async function load() {
  try {
    state.entries = (await get("/api/audit?limit=500")).entries;
    state.error = null;
  } catch (error) {
    state.error = error;
  }
  fill(byId("audit-result"), result());
}

startPage({name: "audit", render, load});
