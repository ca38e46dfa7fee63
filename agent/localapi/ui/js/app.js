// SPDX-License-Identifier: Apache-2.0
// The reference kiosk screen: connects to the agent's local API, keeps the
// screen's state and turns what the citizen taps into Kiosk.* commands.
// What is shown is built in screens.js from this state; the agent owns the
// session (steps, timeouts, card data), the screen only follows it.
//
// Citizen data discipline: the screen holds only what the agent sends, which
// is masked (nameMasked, idMasked); the photo preview lives in a blob: URL
// that is revoked as soon as it is answered. Nothing is written to storage.

import {CONNECTION_LOST, XfsService} from "./xfs.js";
import {has, language, setLanguage, t} from "./i18n.js";
import {renderScreen, stepBar} from "./screens.js";
import {DevPanel} from "./devpanel.js";

// Seconds an end screen stays before home (a citizen reads it, takes the card).
const END_SECONDS = {completed: 20, default: 12, refused: 8};
const TICK_MS = 250;
// Failed connection attempts in a row before asking whether the token is stale.
const STALE_AFTER_REFUSALS = 3;
// Kiosk.ProvideAddress refusals (the engine's error code, last part) -> what the screen says.
const ADDRESS_ERRORS = {
  invalid_phone: "address.invalidPhone",
  invalid_postcode: "address.invalidPostcode",
  invalid_address: "address.missing",
  no_card_address: "address.noCardAddress",
};
// The agent repeats "take your card" a few times (the reader cannot tell a
// lifted card); each shows the banner this long.
const CARD_REMINDER_MS = 15000;

const state = {
  connected: false,
  hasToken: true,
  staleToken: false,     // the server is up but refuses our token: the agent restarted
  mode: "in_service",
  online: true,
  developer: false,
  defaultLanguage: "zh",
  elder: false,
  services: [],
  phase: "home",         // home | starting | step | end
  session: null,         // the session the screen follows (masked data only)
  end: null,             // what the end screen says, and when it goes home
  cardReminderUntil: 0,  // Kiosk.CardLeftEvent: the card may still be on the reader until then
};

let kiosk = null;
let devPanel = null;
let lastHeading = "";

const screenRoot = () => document.getElementById("screen");

// -- rendering ---------------------------------------------------------------

function render() {
  document.title = t("app.title");
  document.getElementById("app-title").textContent = t("app.title");
  const langButton = document.getElementById("language-toggle");
  langButton.textContent = t("lang.switch");
  langButton.setAttribute("lang", language() === "zh" ? "en" : "zh-CN");
  const elderButton = document.getElementById("elder-toggle");
  elderButton.textContent = t("elder.toggle");
  elderButton.setAttribute("aria-pressed", String(state.elder));
  document.documentElement.classList.toggle("elder", state.elder);

  const screen = renderScreen(state, actions);
  screenRoot().replaceChildren(screen);
  announce(screen);
  tick();
  if (devPanel) {
    devPanel.render();
  }
}

/** Tell screen readers about a new screen (its heading), once per change. */
function announce(screen) {
  const heading = screen.querySelector("h2");
  const text = heading ? heading.textContent : "";
  if (text && text !== lastHeading) {
    document.getElementById("announce").textContent = text;
  }
  lastHeading = text;
}

/** Update the visible countdowns; go home when an end screen's time is up. */
function tick() {
  const now = performance.now();
  if (state.phase === "step" && state.session && state.session.deadline) {
    const seconds = Math.max(0, Math.ceil((state.session.deadline - now) / 1000));
    for (const el of document.querySelectorAll("[data-countdown]")) {
      el.textContent = t("step.remaining", {seconds});
    }
    const hurry = seconds <= 15;
    for (const el of document.querySelectorAll("[data-hurry]")) {
      el.hidden = !hurry;
    }
    const timer = document.querySelector(".timer");
    if (timer) {
      timer.classList.toggle("hurry", hurry);
    }
  } else if (state.phase === "end" && state.end) {
    const seconds = Math.max(0, Math.ceil((state.end.homeAt - now) / 1000));
    for (const el of document.querySelectorAll("[data-countdown]")) {
      el.textContent = t("end.returnHome", {seconds});
    }
    if (seconds === 0) {
      actions.home();
    }
  } else if (state.phase === "home" && state.cardReminderUntil && now > state.cardReminderUntil) {
    state.cardReminderUntil = 0;
    render();
  }
}

// -- the connection ----------------------------------------------------------

function start() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  // The token stays in memory only: out of the address bar, history and storage.
  history.replaceState(null, "", location.pathname);
  if (!token) {
    state.hasToken = false;
    render();
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const base = `${scheme}://${location.host}/xfs4iot/v1.0/`;
  const query = `?token=${encodeURIComponent(token)}`;
  kiosk = new XfsService(`${base}kiosk${query}`, {
    onOpen: onConnected,
    onClose: () => {
      state.connected = false;
      if (kiosk.refusedInARow >= STALE_AFTER_REFUSALS && !state.staleToken) {
        checkStaleToken();
      }
      render();
    },
    onUnsolicited: onKioskUnsolicited,
  });
  devPanel = new DevPanel({
    url: `${base}dev${query}`,
    root: document.getElementById("dev-panel"),
    toggle: document.getElementById("dev-toggle"),
  });
  kiosk.connect();
  setInterval(tick, TICK_MS);
  render();
}

/**
 * The socket keeps failing: if the server answers plain HTTP, it is up and
 * refuses our token (the agent restarted and wrote a new one), so say so.
 */
async function checkStaleToken() {
  try {
    const reply = await fetch("/", {cache: "no-store"});
    state.staleToken = reply.ok;
  } catch {
    state.staleToken = false;  // not up at all: "please wait" is right
  }
  render();
}

async function onConnected() {
  state.staleToken = false;
  const status = await kiosk.command("Kiosk.Status");
  if (status.completionCode !== "success") {
    return;
  }
  state.connected = true;
  state.mode = status.mode ?? "in_service";
  state.online = status.online !== false;
  state.developer = status.developer === true;
  if (!state.session && status.language) {
    state.defaultLanguage = status.language;
    setLanguage(status.language);
  }
  await refreshServices();
  if (state.developer) {
    devPanel.enable();
  }
  render();
}

async function refreshServices() {
  const reply = await kiosk.command("Kiosk.GetServices");
  if (reply.completionCode === "success") {
    state.services = reply.services ?? [];
  }
}

function onKioskUnsolicited(name, payload) {
  if (name === "Kiosk.ServicesChangedEvent") {
    state.services = payload.services ?? state.services;
    state.mode = payload.mode ?? state.mode;
    state.online = payload.online ?? state.online;
    if (state.phase === "home") {
      render();
    }
  } else if (name === "Kiosk.CardLeftEvent") {
    state.cardReminderUntil = performance.now() + CARD_REMINDER_MS;
    if (state.phase === "home") {
      render();
    }
  }
}

// -- the session -------------------------------------------------------------

function serviceById(id) {
  return state.services.find((s) => s.id === id) ?? null;
}

function onSessionEvent(name, payload) {
  const session = state.session;
  if (!session) {
    return;
  }
  if (name === "Kiosk.StepEvent") {
    const sameStep = state.phase === "step" && session.index === payload.index && session.step === payload.step;
    session.step = payload.step;
    session.index = payload.index;
    session.count = payload.count;
    session.moreTimeLeft = payload.moreTimeLeft ?? 0;
    session.deadline = performance.now() + (payload.remainingMs ?? payload.timeoutMs ?? 0);
    state.phase = "step";
    state.cardReminderUntil = 0;
    if (sameStep) {
      // More time: only the bar changes; a half-typed address stays as it is.
      const bar = document.querySelector(".stepbar");
      if (bar) {
        bar.replaceWith(stepBar(state, actions));
        tick();
        return;
      }
    } else {
      session.notice = null;
      dropPhoto(session);
    }
  } else if (name === "Kiosk.CardReadEvent") {
    session.card = {cardType: payload.cardType, nameMasked: payload.nameMasked, idMasked: payload.idMasked};
    session.notice = null;
  } else if (name === "Kiosk.CardRejectedEvent") {
    const key = `card.rejected.${payload.reason}`;
    session.notice = has(key) ? key : "card.rejected.other";
  } else if (name === "Kiosk.PhotoPreviewEvent") {
    dropPhoto(session);
    session.photo = {url: jpegUrl(payload.jpeg), retakesLeft: payload.retakesLeft ?? 0};
  } else if (name === "Kiosk.PaymentCodeRejectedEvent") {
    session.notice = "payment.rejected";
  } else if (name === "Kiosk.ReceiptEvent") {
    session.receipt = payload.status;
  }
  render();
}

/** A blob: URL for the preview; the base64 text is not kept anywhere. */
function jpegUrl(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], {type: "image/jpeg"}));
}

function dropPhoto(session) {
  if (session && session.photo) {
    URL.revokeObjectURL(session.photo.url);
    session.photo = null;
  }
}

/** What the end screen says for a BeginSession completion. */
function endOf(completion, session) {
  const code = completion.completionCode;
  // A session refused before it began names its reason only at the head of errorDescription.
  const reason = completion.reason ?? (String(completion.errorDescription ?? "").match(/^([a-z_]+):/) ?? [])[1] ?? null;
  const takeCard = Boolean(session.card);
  const started = session.step !== null;
  const base = {code, reason, takeCard, started};
  if (code === "success") {
    return {...base, kind: "completed", receiptNumber: completion.receiptNumber ?? null,
      waybill: completion.waybill ?? null, receipt: session.receipt ?? null,
      mailDocument: Boolean(session.service && session.service.mailDocument), seconds: END_SECONDS.completed};
  }
  if (code === "canceled") {
    return {...base, kind: "cancelled", seconds: END_SECONDS.default};
  }
  if (code === "timeOut") {
    return {...base, kind: "timeout", seconds: END_SECONDS.default};
  }
  if (code === "hardwareError") {
    return {...base, kind: "fault", seconds: END_SECONDS.default};
  }
  if (code === "deviceNotReady") {
    return {...base, kind: reason === "door_open" ? "door_open" : "not_ready",
      seconds: started ? END_SECONDS.default : END_SECONDS.refused};
  }
  if (code === "sequenceError" && !started) {
    return {...base, kind: "busy", seconds: END_SECONDS.refused};
  }
  if (code === CONNECTION_LOST) {
    return {...base, kind: "lost", seconds: END_SECONDS.default};
  }
  return {...base, kind: "failed", seconds: END_SECONDS.default};
}

// -- what the citizen can do ---------------------------------------------------

const actions = {
  async begin(serviceId) {
    if (state.session || !kiosk.connected) {
      return;
    }
    const session = {
      serviceId, service: serviceById(serviceId), step: null, index: 0, count: 0, deadline: null,
      moreTimeLeft: 0, card: null, photo: null, consent: null, notice: null, receipt: null,
      address: {choice: null, field: "phone", phone: "", recipient: "", address: "", postcode: "",
        error: null, pinyin: true},
    };
    state.session = session;
    state.phase = "starting";
    state.cardReminderUntil = 0;
    render();
    const completion = await kiosk.command("Kiosk.BeginSession", {serviceId, language: language()},
      {onEvent: onSessionEvent});
    dropPhoto(session);
    const end = endOf(completion, session);
    if (end.kind === "busy") {
      // Read-only: another screen drove when this one connected. Connect again,
      // so that if that screen is gone (a restarted browser) this one drives.
      kiosk.reconnect();
    }
    state.session = null;
    state.end = {...end, homeAt: performance.now() + end.seconds * 1000};
    state.phase = "end";
    render();
  },

  /** A command during the session; returns its completion payload. */
  async send(name, payload = {}) {
    const reply = await kiosk.command(name, payload);
    return reply;
  },

  cancel() {
    return actions.send("Kiosk.Cancel");
  },

  moreTime() {
    return actions.send("Kiosk.MoreTime");
  },

  confirm() {
    return actions.send("Kiosk.Confirm");
  },

  async setConsent(face) {
    const reply = await actions.send("Kiosk.SetConsent", {face});
    if (reply.completionCode === "success" && state.session) {
      state.session.consent = face;
      render();
    }
  },

  acceptPhoto() {
    return answerPhoto("Kiosk.AcceptPhoto");
  },

  retakePhoto() {
    return answerPhoto("Kiosk.RetakePhoto");
  },

  async provideAddress(payload) {
    const reply = await actions.send("Kiosk.ProvideAddress", payload);
    if (reply.completionCode !== "success" && state.session) {
      const form = state.session.address;
      const code = String(reply.errorCode ?? "").split(".").pop();
      form.error = ADDRESS_ERRORS[code] ?? "address.rejected";
      if (code === "no_card_address") {
        form.choice = "other";      // the card has none: the citizen types one
      }
      render();
    }
  },

  rerender: render,

  /** Back to the home screen, ready for the next citizen (default language, normal text). */
  home() {
    state.end = null;
    state.phase = "home";
    state.elder = false;
    if (language() !== state.defaultLanguage) {
      setLanguage(state.defaultLanguage);
      if (kiosk && kiosk.connected) {
        kiosk.command("Kiosk.SetLanguage", {language: state.defaultLanguage});
      }
    }
    if (kiosk && kiosk.connected) {
      refreshServices().then(render);
    }
    render();
  },
};

/** Accept or retake: the preview goes once the agent took the answer (kept if refused). */
async function answerPhoto(name) {
  const session = state.session;
  if (!session || !session.photo || session.photo.answering) {
    return null;                // one answer per preview: a double tap is not two retakes
  }
  const answered = session.photo;
  answered.answering = true;
  render();
  const reply = await actions.send(name);
  answered.answering = false;
  // A retake's new preview may arrive before this completion: drop only the one answered.
  if (reply.completionCode === "success" && session.photo === answered) {
    dropPhoto(session);
  }
  render();
  return reply;
}

function switchLanguage() {
  const next = language() === "zh" ? "en" : "zh";
  setLanguage(next);
  if (kiosk && kiosk.connected) {
    kiosk.command("Kiosk.SetLanguage", {language: next});
  }
  render();
}

function toggleElder() {
  state.elder = !state.elder;
  render();
}

document.getElementById("language-toggle").addEventListener("click", switchLanguage);
document.getElementById("elder-toggle").addEventListener("click", toggleElder);
setLanguage("zh");
start();
