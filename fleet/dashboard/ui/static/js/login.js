// SPDX-License-Identifier: Apache-2.0
// The login page (/login). The form posts to /login itself (it works without
// scripts too); with scripts it is sent with fetch so a refusal is shown
// here, in the reader's language, from the server's error code, and the
// password field is emptied. `next` is followed only as a local path.

import {byId, fill, h} from "./dom.js";
import {browserLanguage, chosenLanguage, has, setLanguage, t} from "./i18n.js";
import {languageButton, translateShell} from "./shell.js";

// The refusal is kept as (status, code), not text: switching language redraws it in the other one.
const state = {error: null, busy: false, username: ""};

/** Where to go after logging in: ?next= when it is a path on this site, else the fleet page. */
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/";
}

function messageFor(status, code) {
  if (code === "network") {
    return t("error.network");
  }
  if (has(`error.${code}`) && code !== "auth.required") {
    return t(`error.${code}`);
  }
  if (status === 401) {
    return t("login.failed");
  }
  if (status === 429) {
    return t("error.auth.locked");
  }
  if (status === 403) {
    return t("login.refused");
  }
  return t("error.other", {status, code});
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  state.username = form.elements.username.value;
  state.busy = true;
  state.error = null;
  drawStatus();
  let refusal = null;
  try {
    const response = await fetch("/login", {
      method: "POST", credentials: "same-origin", redirect: "manual",
      headers: {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
      body: new URLSearchParams({username: form.elements.username.value, password: form.elements.password.value,
        next: nextPath()}).toString(),
    });
    if (response.type === "opaqueredirect" || response.ok) {
      location.assign(nextPath());
      return;
    }
    let code = "";
    try {
      code = (await response.json()).error.code;
    } catch {
      // not JSON: the status decides the message
    }
    refusal = {status: response.status, code};
  } catch {
    refusal = {status: 0, code: "network"};
  }
  state.busy = false;
  state.error = refusal;
  form.elements.password.value = "";
  drawStatus();
  form.elements.password.focus();
}

function drawStatus() {
  const box = byId("login-error");
  fill(box, state.error ? messageFor(state.error.status, state.error.code) : "");
  box.hidden = !state.error;
  byId("login-submit").disabled = state.busy;
}

function render() {
  document.title = `${t("page.login.title")} · ${t("app.title")}`;
  translateShell();
  fill(byId("top"),
    h("div", {class: "brand"}, h("span", {class: "brand-mark", "aria-hidden": "true"}, "▦"), t("app.title")),
    h("div", {class: "top-actions"}, languageButton(render)));
  const username = h("input", {id: "username", name: "username", autocomplete: "username", required: true,
    value: state.username, autocapitalize: "none", spellcheck: "false"});
  fill(byId("main"),
    h("div", {class: "login-card"},
      h("h1", {}, t("page.login.title")),
      h("form", {method: "post", action: "/login", onsubmit: submit},
        h("input", {type: "hidden", name: "next", value: nextPath()}),
        h("div", {class: "field"}, h("label", {for: "username"}, t("login.username")), username),
        h("div", {class: "field"}, h("label", {for: "password"}, t("login.password")),
          h("input", {id: "password", name: "password", type: "password", autocomplete: "current-password",
            required: true})),
        h("p", {id: "login-error", class: "notice error", role: "alert", hidden: true}),
        h("button", {type: "submit", class: "primary", id: "login-submit"}, t("btn.login"))),
      h("p", {class: "muted"}, t("login.help"))));
  drawStatus();
  (state.username ? byId("password") : username).focus();
  document.body.dataset.ready = "login";
}

setLanguage(chosenLanguage() || browserLanguage());
render();
