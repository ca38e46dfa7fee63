// SPDX-License-Identifier: Apache-2.0
// What every signed-in page shares: who is signed in (GET /api/me), the
// header with navigation, the live-update indicator, the language switch
// and logout, relative times kept fresh, and the live stream wired to the
// page. A page module gives startPage() its render() and live handlers.

import {ApiError, errorText, get, loginUrl, postForm, setCsrf} from "./api.js";
import {button, byId, fill, h} from "./dom.js";
import {refreshRelative, setTimezone} from "./format.js";
import {chosenLanguage, language, LANGUAGES, persistLanguage, setLanguage, t} from "./i18n.js";
import {connectLive} from "./live.js";

const NAV = [
  {page: "fleet", href: "/"},
  {page: "alarms", href: "/alarms"},
  {page: "reports", href: "/reports"},
  {page: "audit", href: "/audit", admin: true},
];

/** The parts of the static shell with words in them (the skip link), in the current language. */
export function translateShell() {
  const skip = document.querySelector(".skip-link");
  if (skip) {
    skip.textContent = t("nav.skip");
  }
}

/** The language switch button: names the other language in that language. */
export function languageButton(onSwitch) {
  const other = LANGUAGES.find((lang) => lang !== language());
  return button(t("lang.switch"), () => {
    setLanguage(other);
    persistLanguage(other);
    onSwitch();
  }, {class: "secondary", id: "language-toggle", lang: other === "zh" ? "zh-CN" : "en"});
}

/**
 * Run a signed-in page.
 * page: {name, render(me) — draw #main from the page's state, prefetch() — start the first data
 *        request before /api/me answers (optional), load(early) — fetch data (async; ``early`` is
 *        prefetch()'s promise on the first load),
 *        onKiosk(row), onAlarm(alarm), reload() — after the live stream was down}
 */
export async function startPage(page) {
  const asked = chosenLanguage();
  if (asked) {
    setLanguage(asked);
  }
  // The page's own data is asked beside /api/me, not after it: the two answers travel together. A
  // refusal is load()'s to show (or /api/me's, which sends a person without a session to the login page).
  const early = page.prefetch?.();
  early?.catch(() => {});
  let me;
  try {
    me = await get("/api/me");
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "auth.required")) {
      showFatal(error, () => startPage(page));
    }
    return;
  }
  setCsrf(me.csrf);
  setTimezone(me.timezone);
  if (!asked) {
    setLanguage(me.language);
  }
  let liveState = "connecting";

  function drawHeader() {
    const nav = h("nav", {"aria-label": t("nav.label")},
      h("ul", {}, NAV.filter((item) => !item.admin || me.role === "admin").map((item) =>
        h("li", {}, h("a", {href: item.href, "aria-current": item.page === page.name ? "page" : null},
          t(`nav.${item.page}`))))));
    const status = h("span", {class: `live live-${liveState}`, id: "live-status", role: "status"},
      t(`live.${liveState}`));
    fill(byId("top"),
      h("div", {class: "brand"}, h("span", {class: "brand-mark", "aria-hidden": "true"}, "▦"), t("app.title")),
      nav,
      h("div", {class: "top-actions"},
        status,
        h("span", {class: "who"}, t("me.signedIn", {user: me.username, role: t(`role.${me.role}`)})),
        languageButton(redraw),
        button(t("btn.logout"), logout, {class: "secondary", id: "logout"})));
  }

  function redraw() {
    document.title = `${t(`page.${page.name}.title`)} · ${t("app.title")}`;
    translateShell();
    drawHeader();
    page.render(me);
  }

  async function logout() {
    try {
      await postForm("/logout");
    } finally {
      location.assign("/login");
    }
  }

  redraw();
  await page.load?.(early);
  setInterval(() => refreshRelative(document), 15_000);
  connectLive({
    onKiosk: (row) => page.onKiosk?.(row),
    onAlarm: (alarm) => page.onAlarm?.(alarm),
    onReconnect: () => page.load?.(),
    onStatus: (state) => {
      liveState = state;
      const el = document.getElementById("live-status");
      if (el) {
        el.className = `live live-${state}`;
        el.textContent = t(`live.${state}`);
      }
      if (state === "down") {
        // The stream may be down because the session ended: asking /api/me sends us to the login page then.
        get("/api/me").catch(() => {});
      }
    },
  });
}

/** A page-wide error (database down, network) with a way to try again. */
export function showFatal(error, retry) {
  fill(byId("main"), h("div", {class: "notice error", role: "alert"},
    h("p", {}, errorText(error)),
    button(t("btn.retry"), retry)));
}

/** An error line for one part of a page (role=alert, so a screen reader says it). */
export function errorBox(error) {
  return h("p", {class: "notice error", role: "alert"}, errorText(error));
}

export {loginUrl};
