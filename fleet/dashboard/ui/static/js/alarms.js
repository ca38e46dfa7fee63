// SPDX-License-Identifier: Apache-2.0
// Alarms (/alarms): the open ones across the fleet, oldest first, with their
// age; or every episode of the last 7 days. Operators and admins acknowledge
// one with a note ("someone is on it"): POST /api/alarms/ack with the CSRF
// token; the row then shows who, when and the note. Viewers get no button
// (and the server refuses them anyway).

import {errorText, get, post} from "./api.js";
import {button, byId, fill, h} from "./dom.js";
import {dateTime, duration, since} from "./format.js";
import {label, t} from "./i18n.js";
import {errorBox, showFatal, startPage} from "./shell.js";
import {ackSummary, alarmSeverity} from "./widgets.js";

const NOTE_MAX = 500;

const state = {
  me: null,
  view: new URLSearchParams(location.search).get("state") === "all" ? "all" : "open",
  alarms: new Map(),         // key -> alarm
  trs: new Map(),            // key -> <tr>
  editing: new Set(),        // keys whose acknowledge form is open: live updates leave those rows alone
  drafts: new Map(),         // key -> the note typed so far (kept across a language switch)
  loaded: false,
  error: null,
};

function keyOf(alarm) {
  return `${alarm.kiosk}\u0000${alarm.code}\u0000${Date.parse(alarm.raised_at)}`;
}

function canAck() {
  return state.me && (state.me.role === "operator" || state.me.role === "admin");
}

function ordered() {
  const list = [...state.alarms.values()];
  const dir = state.view === "open" ? 1 : -1;     // open: oldest first; all: newest first
  return list.sort((a, b) => (Date.parse(a.raised_at) - Date.parse(b.raised_at)) * dir);
}

function ageCell(alarm) {
  if (alarm.cleared_at) {
    return h("span", {}, t("alarm.clearedAfter", {d: duration((Date.parse(alarm.cleared_at) -
      Date.parse(alarm.raised_at)) / 1000)}));
  }
  return since(alarm.raised_at, "alarm.openFor");
}

function ackCell(alarm, key) {
  const cell = h("td", {class: "ack"});
  if (alarm.acked_by) {
    fill(cell, ackSummary(alarm), alarm.command ? commandHint(alarm.command) : null);
  } else if (canAck() && state.editing.has(key)) {
    buildForm(alarm, key, cell);
  } else if (canAck()) {
    fill(cell, ackSummary(alarm), " ",
      button(t("btn.ack"), () => openForm(alarm, key, cell), {class: "primary small",
        "aria-label": t("ack.buttonLabel", {alarm: label("alarmcode", alarm.code), kiosk: alarm.kiosk})}));
  } else {
    fill(cell, ackSummary(alarm));
  }
  return cell;
}

function commandHint(command) {
  return h("p", {class: "hint"}, t("ack.clearAtKiosk"), " ", h("code", {class: "cmdline"}, command));
}

function openForm(alarm, key, cell) {
  state.editing.add(key);
  buildForm(alarm, key, cell).focus();
}

/** The note field and its buttons in ``cell``; returns the field. */
function buildForm(alarm, key, cell) {
  const noteId = `note-${Math.random().toString(36).slice(2)}`;
  const message = h("p", {class: "form-error", role: "alert"});
  const note = h("textarea", {id: noteId, maxlength: NOTE_MAX, rows: 2,
    oninput: () => state.drafts.set(key, note.value)});
  note.value = state.drafts.get(key) || "";
  const form = h("form", {class: "ack-form", onsubmit: async (event) => {
    event.preventDefault();
    submit.disabled = true;
    fill(message);
    try {
      const updated = await post("/api/alarms/ack", {kiosk: alarm.kiosk, code: alarm.code,
        raised_at: alarm.raised_at, note: note.value.trim()});
      state.editing.delete(key);
      state.drafts.delete(key);
      upsert({...alarm, ...updated});
    } catch (error) {
      fill(message, errorText(error));
      submit.disabled = false;
      if (error.code === "alarm.already_acked") {
        // Someone else was quicker: show theirs.
        state.editing.delete(key);
        load();
      }
    }
  }},
  h("label", {for: noteId}, t("ack.note")),
  note,
  h("div", {class: "form-actions"}));
  const submit = h("button", {type: "submit", class: "primary small"}, t("btn.ackSave"));
  form.querySelector(".form-actions").append(submit, button(t("btn.cancel"), () => {
    state.editing.delete(key);
    state.drafts.delete(key);
    upsert(state.alarms.get(key) || alarm);
  }, {class: "secondary small"}));
  fill(cell, form, message);
  return note;
}

function renderRow(alarm) {
  const key = keyOf(alarm);
  return h("tr", {"data-kiosk": alarm.kiosk, "data-code": alarm.code, class: alarm.cleared_at ? "cleared" : null},
    h("td", {}, ageCell(alarm)),
    h("th", {scope: "row"}, h("a", {href: `/kiosks/${encodeURIComponent(alarm.kiosk)}`}, alarm.kiosk)),
    h("td", {}, alarm.site || "—"),
    h("td", {}, label("alarmcode", alarm.code), h("span", {class: "code"}, alarm.code),
      alarm.latched ? h("p", {class: "latched"}, t("alarm.latched")) : null),
    h("td", {}, alarmSeverity(alarm.severity)),
    h("td", {}, dateTime(alarm.raised_at, {seconds: true}),
      alarm.cleared_at ? [h("br"), t("alarm.clearedAt", {at: dateTime(alarm.cleared_at, {seconds: true})})] : null),
    h("td", {}, alarm.detail || "—"),
    ackCell(alarm, key));
}

function drawTable() {
  const tbody = document.getElementById("alarm-rows");
  if (!tbody) {
    return;
  }
  const fragment = document.createDocumentFragment();
  state.trs.clear();
  for (const alarm of ordered()) {
    const tr = renderRow(alarm);
    state.trs.set(keyOf(alarm), tr);
    fragment.append(tr);
  }
  tbody.replaceChildren(fragment);
  byId("alarms-empty").hidden = state.alarms.size > 0 || !state.loaded;
  byId("alarms-table-wrap").hidden = state.alarms.size === 0;
  byId("alarms-count").textContent = state.loaded ? t(`alarms.count.${state.view}`, {n: state.alarms.size}) : "";
}

/** An alarm changed (live or after acknowledging): its row is replaced in place, or added/removed. */
function upsert(update) {
  const key = keyOf(update);
  const previous = state.alarms.get(key);
  // The kioskctl line an acknowledgement answered with stays while the alarm is open (events do not carry it).
  const alarm = !update.command && previous?.command && !update.cleared_at ? {...update, command: previous.command}
    : update;
  const belongs = state.view === "all" || !alarm.cleared_at;
  const tr = state.trs.get(key);
  if (!belongs) {
    state.alarms.delete(key);
    if (!state.editing.has(key)) {
      tr?.remove();
      state.trs.delete(key);
      drawCount();
      return;
    }
  } else {
    state.alarms.set(key, alarm);
  }
  if (state.editing.has(key)) {
    return;                  // someone is typing a note there: the row changes when they save or cancel
  }
  const fresh = renderRow(alarm);
  if (tr) {
    tr.replaceWith(fresh);
  } else {
    // A new alarm goes where the order puts it; the other rows (a note being typed, the focus) stay as they are.
    const order = ordered().map(keyOf);
    const next = order.slice(order.indexOf(key) + 1).map((k) => state.trs.get(k)).find((row) => row);
    byId("alarm-rows").insertBefore(fresh, next || null);
  }
  state.trs.set(key, fresh);
  drawCount();
}

function drawCount() {
  if (!document.getElementById("alarm-rows")) {
    return;
  }
  byId("alarms-count").textContent = t(`alarms.count.${state.view}`, {n: state.alarms.size});
  byId("alarms-empty").hidden = state.alarms.size > 0;
  byId("alarms-table-wrap").hidden = state.alarms.size === 0;
}

function setView(view) {
  state.view = view;
  const params = new URLSearchParams(location.search);
  if (view === "all") {
    params.set("state", "all");
  } else {
    params.delete("state");
  }
  history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
  state.editing.clear();
  state.drafts.clear();
  render(state.me);
  load();
}

function render(me) {
  state.me = me;
  const columns = ["col.age", "col.kiosk", "col.site", "col.alarm", "col.severity", "col.raised", "col.detail",
    "col.ack"];
  fill(byId("main"),
    h("h1", {}, t("page.alarms.title")),
    state.error ? errorBox(state.error) : null,
    h("div", {class: "toolbar"},
      h("div", {class: "range", role: "group", "aria-label": t("alarms.view")},
        ["open", "all"].map((view) => button(t(`alarms.view.${view}`), () => setView(view),
          {class: "secondary", "aria-pressed": state.view === view ? "true" : "false"}))),
      h("span", {id: "alarms-count", class: "count", role: "status"})),
    canAck() ? h("p", {class: "muted"}, t("ack.explain")) : null,
    h("div", {class: "table-wrap", id: "alarms-table-wrap"},
      h("table", {class: "data", id: "alarms-table"},
        h("caption", {class: "visually-hidden"}, t(`alarms.view.${state.view}`)),
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col"}, t(c))))),
        h("tbody", {id: "alarm-rows"}))),
    h("p", {id: "alarms-empty", class: "notice ok", hidden: true}, t(`alarms.empty.${state.view}`)));
  drawTable();
  document.body.dataset.ready = "alarms";
}

async function load() {
  try {
    const data = await get(state.view === "open" ? "/api/alarms?state=open" : "/api/alarms?state=all");
    state.alarms = new Map(data.alarms.map((a) => [keyOf(a), a]));
    state.loaded = true;
    state.error = null;
    drawTable();
  } catch (error) {
    state.error = error;
    if (!state.loaded) {
      showFatal(error, load);
    } else {
      render(state.me);
    }
  }
}

startPage({name: "alarms", render, load, onAlarm: (alarm) => state.loaded && alarm && alarm.kiosk && upsert(alarm)});
