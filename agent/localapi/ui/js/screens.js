// SPDX-License-Identifier: Apache-2.0
// Every screen of the kiosk, built from the app's state. Each screen's root
// carries data-screen (and data-step for a session step) so tools can tell
// which one shows; what a citizen reads is its text.

import {button, h} from "./dom.js";
import {has, language, reasonText, t} from "./i18n.js";
import {numericKeypad, textKeyboard} from "./keyboard.js";

const PHONE_DIGITS = 11;
const POSTCODE_DIGITS = 6;

let openKeyboard = null;  // the text keyboard on screen, destroyed before the next render

/** The screen for ``state``. */
export function renderScreen(state, actions) {
  if (openKeyboard) {
    openKeyboard.destroy();
    openKeyboard = null;
  }
  if (!state.hasToken) {
    return screen("no_token", t("wait.heading"), h("p", {class: "lead"}, t("wait.noToken")));
  }
  if (!state.connected && state.staleToken) {
    return screen("stale_token", t("wait.heading"),
      h("p", {class: "lead"}, h("span", {class: "spinner", "aria-hidden": "true"}), t("wait.staleToken")));
  }
  if (!state.connected) {
    return screen("please_wait", t("wait.heading"),
      h("p", {class: "lead"}, h("span", {class: "spinner", "aria-hidden": "true"}), t("wait.body")));
  }
  if (state.phase === "end" && state.end) {
    return endScreen(state, actions);
  }
  if (state.phase === "starting") {
    return screen("please_wait", t("wait.heading"),
      h("p", {class: "lead"}, h("span", {class: "spinner", "aria-hidden": "true"}), t("home.starting")));
  }
  if (state.phase === "step" && state.session) {
    return stepScreen(state, actions);
  }
  if (state.mode === "maintenance" || state.mode === "out_of_service") {
    return screen(state.mode, t(`mode.${state.mode}.heading`),
      h("img", {class: "picture", src: "img/out-of-service.svg", alt: ""}),
      h("p", {class: "lead"}, t(`mode.${state.mode}.body`)));
  }
  return homeScreen(state, actions);
}

function screen(name, heading, ...body) {
  return h("section", {class: `screen screen-${name}`, "data-screen": name},
    h("h2", {}, heading), ...body);
}

function serviceName(service, lang = language()) {
  const name = service.name ?? {};
  return name[lang] ?? service.id;
}

// -- home ----------------------------------------------------------------------

function homeScreen(state, actions) {
  const other = language() === "zh" ? "en" : "zh";
  const tiles = state.services.map((service) => {
    const available = service.available !== false;
    return h("button", {
      type: "button",
      class: available ? "tile" : "tile tile-unavailable",
      "data-service": service.id,
      disabled: !available,
      onclick: () => actions.begin(service.id),
    },
    h("span", {class: "tile-name"}, serviceName(service)),
    h("span", {class: "tile-name-other", lang: other === "zh" ? "zh-CN" : "en"}, serviceName(service, other)),
    available ? null : h("span", {class: "tile-reason"},
      h("span", {class: "tile-reason-mark", "aria-hidden": "true"}, "⊘ "),
      t("home.unavailable", {reason: reasonText(service.unavailableReason)})),
    );
  });
  return h("section", {class: "screen screen-home", "data-screen": "home"},
    state.online ? null : h("p", {class: "banner banner-warning", role: "status"},
      h("span", {"aria-hidden": "true"}, "⚠ "), t("banner.offline")),
    state.cardReminderUntil > performance.now() ? h("p", {class: "banner banner-card", role: "alert"},
      h("span", {"aria-hidden": "true"}, "⚠ "), t("banner.takeCard")) : null,
    h("h2", {}, t("home.heading")),
    tiles.length ? h("div", {class: "tiles"}, tiles) : h("p", {class: "lead"}, t("home.none")),
  );
}

// -- steps ---------------------------------------------------------------------

function stepKinds(service) {
  return (service?.steps ?? []).map((step) => (typeof step === "string" ? step : step.kind));
}

/** Progress, countdown, "more time": the bar on top of every step. */
export function stepBar(state, actions) {
  const session = state.session;
  const kinds = stepKinds(session.service);
  return h("div", {class: "stepbar"},
    h("p", {class: "progress"}, t("step.progress", {index: session.index + 1, count: session.count})),
    kinds.length ? h("ol", {class: "steps"}, kinds.map((kind, i) => h("li", {
      class: i < session.index ? "done" : i === session.index ? "current" : "todo",
      "aria-current": i === session.index ? "step" : null,
    }, h("span", {class: "mark", "aria-hidden": "true"}, i < session.index ? "✓" : String(i + 1)),
    t(`step.name.${kind}`)))) : null,
    h("div", {class: "timer", role: "timer"},
      h("span", {"data-countdown": ""}, ""),
      session.moreTimeLeft > 0
        ? button(t("btn.moreTime"), () => actions.moreTime(), {class: "secondary", "data-action": "more-time"})
        : null),
    h("p", {class: "hurry-note", "data-hurry": "", hidden: true, role: "status"}, t("step.hurry")),
  );
}

function stepScreen(state, actions) {
  const session = state.session;
  const kind = session.step;
  const build = STEP_SCREENS[kind] ?? genericStep;
  const body = build(state, actions);
  return h("section", {class: `screen screen-step step-${kind}`, "data-screen": kind, "data-step": kind},
    stepBar(state, actions),
    session.notice ? h("p", {class: "notice", role: "alert"},
      h("span", {"aria-hidden": "true"}, "⚠ "), t(session.notice)) : null,
    body,
    h("div", {class: "actions actions-cancel"},
      button(t("btn.cancel"), () => actions.cancel(), {class: "danger", "data-action": "cancel"})),
  );
}

function genericStep(state) {
  return h("h2", {}, t(`step.name.${state.session.step}`));
}

function picture(src, altKey) {
  return h("img", {class: "picture", src, alt: t(altKey)});
}

function readIdStep() {
  return h("div", {class: "step-body"},
    h("h2", {}, t("read_id.heading")),
    picture("img/place-card.svg", "read_id.img"),
    h("p", {class: "lead"}, t("read_id.body")),
  );
}

function asksConsent(service) {
  // The agent keeps the photo only with a legal basis or the citizen's consent.
  return !(service && service.faceLegalBasis === true);
}

function capturePhotoStep(state, actions) {
  const session = state.session;
  const consent = asksConsent(session.service) ? h("div", {class: "consent", role: "group",
    "aria-labelledby": "consent-heading"},
  h("h3", {id: "consent-heading"}, t("consent.heading")),
  h("p", {}, t("consent.body")),
  h("div", {class: "actions"},
    button(t("btn.consentYes"), () => actions.setConsent(true),
      {class: "choice", "aria-pressed": String(session.consent === true)}),
    button(t("btn.consentNo"), () => actions.setConsent(false),
      {class: "choice", "aria-pressed": String(session.consent === false)})),
  session.consent === null ? null
    : h("p", {class: "chosen", role: "status"}, "✓ ", t(session.consent ? "consent.yes" : "consent.no")),
  ) : null;

  const photo = session.photo;
  const preview = photo
    ? h("div", {class: "preview"},
      h("img", {class: "photo", src: photo.url, alt: t("capture_photo.preview")}),
      h("p", {}, photo.retakesLeft > 0
        ? t("capture_photo.retakesLeft", {n: photo.retakesLeft}) : t("capture_photo.noRetakes")),
      h("div", {class: "actions"},
        button(t("btn.accept"), () => actions.acceptPhoto(), {class: "primary", disabled: photo.answering}),
        photo.retakesLeft > 0 ? button(t("btn.retake"), () => actions.retakePhoto(),
          {class: "secondary", disabled: photo.answering}) : null))
    : h("div", {class: "preview preview-waiting"},
      picture("img/camera.svg", "capture_photo.img"),
      h("p", {class: "lead"}, h("span", {class: "spinner", "aria-hidden": "true"}), t("capture_photo.taking")));

  return h("div", {class: "step-body"},
    h("h2", {}, t("capture_photo.heading")),
    h("p", {class: "lead"}, t("capture_photo.body")),
    h("div", {class: "photo-layout"}, preview, consent),
  );
}

// -- capture_address -------------------------------------------------------------

function addressField(form, name, onSelect) {
  const id = `field-${name}`;
  const numeric = name === "phone" || name === "postcode";
  return h("div", {class: form.field === name ? "field active" : "field", "data-field": name},
    h("label", {for: id}, t(`field.${name}`)),
    h("input", {
      id, name, value: form[name], autocomplete: "off", spellcheck: "false",
      maxlength: name === "phone" ? PHONE_DIGITS : name === "postcode" ? POSTCODE_DIGITS : null,
      // No system keyboard: the screen has its own; inputs stay editable for
      // a physical keyboard on a service visit.
      inputmode: "none",
      "data-numeric": numeric ? "" : null,
      onfocus: () => onSelect(name),
      oninput: (ev) => {
        form[name] = ev.target.value;
        if (openKeyboard && form.field === name && !numeric) {
          openKeyboard.setInput(form[name]);
        }
      },
    }),
  );
}

/** Put the keypad (phone, postcode) or the text keyboard for ``form.field`` in ``host``. */
function mountKeyboard(host, form, onChange) {
  if (openKeyboard) {
    openKeyboard.destroy();
    openKeyboard = null;
  }
  host.replaceChildren();
  if (form.field === "phone" || form.field === "postcode") {
    host.append(numericKeypad({
      read: () => form[form.field],
      maxLength: form.field === "phone" ? PHONE_DIGITS : POSTCODE_DIGITS,
      onChange,
    }));
    return;
  }
  const pinyinToggle = button(t("btn.pinyin"), () => {
    form.pinyin = !form.pinyin;
    pinyinToggle.setAttribute("aria-pressed", String(form.pinyin));
    if (openKeyboard) {
      openKeyboard.setPinyin(form.pinyin);
    }
  }, {class: "secondary small", "aria-pressed": String(form.pinyin)});
  const board = h("div", {class: "simple-keyboard"});
  // The candidate box floats above the keys: the host leaves room for it.
  host.append(board, h("div", {class: "keyboard-tools"}, pinyinToggle,
    h("span", {class: "hint"}, t("address.pinyinHint"))));
  openKeyboard = textKeyboard(board, {value: form[form.field], pinyin: form.pinyin, onChange});
}

function captureAddressStep(state, actions) {
  const form = state.session.address;
  const valid = (name) => {
    if (name === "phone") {
      return /^1[3-9]\d{9}$/.test(form.phone);
    }
    if (name === "postcode") {
      return new RegExp(`^\\d{${POSTCODE_DIGITS}}$`).test(form.postcode);
    }
    return form[name].trim().length > 0;
  };
  const fail = (key) => {
    form.error = key;
    actions.rerender();
  };
  const useCard = () => {
    if (!valid("phone")) {
      return fail("address.invalidPhone");
    }
    form.error = null;
    return actions.provideAddress({useCardAddress: true, phone: form.phone});
  };
  const submit = () => {
    if (!valid("phone")) {
      return fail("address.invalidPhone");
    }
    if (!valid("recipient") || !valid("address")) {
      return fail("address.missing");
    }
    if (!valid("postcode")) {
      return fail("address.invalidPostcode");
    }
    form.error = null;
    return actions.provideAddress({recipient: form.recipient.trim(), phone: form.phone,
      address: form.address.trim(), postcode: form.postcode});
  };

  const fields = form.choice === "other" ? ["phone", "recipient", "address", "postcode"] : ["phone"];
  if (!fields.includes(form.field)) {
    form.field = "phone";
  }
  const keyboardHost = h("div", {class: "keyboard-host", "data-keyboard": ""});
  const showValue = (value) => {
    form[form.field] = value;
    const input = inputs.querySelector(`#field-${form.field}`);
    if (input) {
      input.value = value;
    }
  };
  // Selecting a field swaps only the keyboard: no re-render, so the input
  // being touched (or filled by a test) stays the same element.
  const select = (name) => {
    if (form.field === name && keyboardHost.childElementCount) {
      return;
    }
    form.field = name;
    for (const el of inputs.querySelectorAll(".field")) {
      el.classList.toggle("active", el.dataset.field === name);
    }
    mountKeyboard(keyboardHost, form, showValue);
  };
  const inputs = h("div", {class: "fields"}, fields.map((name) => addressField(form, name, select)));
  mountKeyboard(keyboardHost, form, showValue);

  const choices = form.choice === "other"
    ? h("div", {class: "actions"},
      button(t("btn.submitAddress"), submit, {class: "primary"}),
      button(t("btn.back"), () => {
        form.choice = null;
        form.field = "phone";
        form.error = null;
        actions.rerender();
      }, {class: "secondary"}))
    : h("div", {class: "actions"},
      button(t("btn.useCardAddress"), useCard, {class: "primary big", "data-action": "use-card-address"}),
      button(t("btn.otherAddress"), () => {
        form.choice = "other";
        form.error = null;
        actions.rerender();
      }, {class: "secondary"}));

  return h("div", {class: "step-body"},
    h("h2", {}, t(form.choice === "other" ? "capture_address.otherHeading" : "capture_address.heading")),
    h("p", {class: "lead"}, t("capture_address.body")),
    form.choice === "other" ? null : h("p", {class: "hint"}, t("capture_address.cardHint")),
    form.error ? h("p", {class: "notice", role: "alert"}, h("span", {"aria-hidden": "true"}, "⚠ "),
      t(form.error)) : null,
    h("div", {class: "address-layout"}, h("div", {}, inputs, choices), keyboardHost),
  );
}

// -- confirm, payment, receipt -----------------------------------------------------

function confirmStep(state, actions) {
  const session = state.session;
  const card = session.card;
  const kinds = stepKinds(session.service).slice(session.index + 1);
  const next = kinds.filter((k) => k === "scan_payment" || k === "print_receipt").map((k) => t(`next.${k}`));
  if (session.service && session.service.mailDocument) {
    next.push(t("next.mail"));
  }
  if (!next.length) {
    next.push(t("next.done"));
  }
  // data-value: the card's masked data, shown as read (not text of the screen's language).
  const row = (label, value, isData = false) => [h("dt", {}, label), h("dd", {"data-value": isData}, value)];
  return h("div", {class: "step-body"},
    h("h2", {}, t("confirm.heading")),
    h("dl", {class: "details"},
      row(t("confirm.service"), session.service ? serviceName(session.service) : session.serviceId),
      card ? [
        row(t("confirm.cardType"), t(has(`card.type.${card.cardType}`) ? `card.type.${card.cardType}` : "card.type.other")),
        row(t("confirm.name"), card.nameMasked ?? "", true),
        row(t("confirm.id"), card.idMasked ?? "", true),
      ] : row(t("confirm.cardType"), t("confirm.noCard")),
      row(t("confirm.next"), h("ol", {class: "next"}, next.map((text) => h("li", {}, text)))),
    ),
    h("div", {class: "actions"}, button(t("btn.confirm"), () => actions.confirm(),
      {class: "primary big", "data-action": "confirm"})),
  );
}

function scanPaymentStep() {
  return h("div", {class: "step-body"},
    h("h2", {}, t("scan_payment.heading")),
    picture("img/scan-code.svg", "scan_payment.img"),
    h("p", {class: "lead"}, t("scan_payment.body")),
  );
}

function printReceiptStep(state) {
  const receipt = state.session.receipt;
  return h("div", {class: "step-body"},
    h("h2", {}, receipt === "printed" ? t("receipt.printed") : t("print_receipt.heading")),
    picture("img/receipt.svg", "print_receipt.body"),
    h("p", {class: "lead"}, receipt ? t(`receipt.${receipt}`) : t("print_receipt.body")),
  );
}

const STEP_SCREENS = {
  read_id: readIdStep,
  capture_photo: capturePhotoStep,
  capture_address: captureAddressStep,
  confirm: confirmStep,
  scan_payment: scanPaymentStep,
  print_receipt: printReceiptStep,
};

// -- the end -----------------------------------------------------------------------

const END_TEXT = {
  completed: ["end.completed.heading", null],
  cancelled: ["end.cancelled.heading", null],
  timeout: ["end.timeout.heading", "end.timeout.body"],
  fault: ["end.fault.heading", "end.fault.body"],
  door_open: ["end.door.heading", "end.door.body"],
  not_ready: ["end.notReady.heading", null],
  busy: ["end.busy.heading", "end.busy.body"],
  lost: ["end.lost.heading", "end.lost.body"],
  failed: ["end.failed.heading", "end.failed.body"],
};

function endScreen(state, actions) {
  const end = state.end;
  const [headingKey, bodyKey] = END_TEXT[end.kind] ?? END_TEXT.failed;
  const lines = [];
  if (end.kind === "completed") {
    if (end.receiptNumber) {
      lines.push(h("p", {class: "lead strong", "data-receipt-number": ""},
        t("end.receiptNumber", {value: end.receiptNumber})));
    }
    if (end.waybill) {
      lines.push(h("p", {class: "lead strong", "data-waybill": ""}, t("end.waybill", {value: end.waybill})));
    }
    if (end.mailDocument) {
      lines.push(h("p", {}, t("end.mailed")));
    }
    if (end.receipt === "failed" || end.receipt === "skipped") {
      lines.push(h("p", {class: "notice", role: "status"}, t(`receipt.${end.receipt}`)));
    } else if (end.receipt === "printed") {
      lines.push(h("p", {}, t("receipt.printed")));
    }
  } else {
    if (end.kind === "not_ready") {
      lines.push(h("p", {class: "lead"}, reasonText(end.reason)));
    }
    if (bodyKey) {
      lines.push(h("p", {class: "lead"}, t(bodyKey)));
    }
    if (end.started) {           // something was collected, and is now gone
      lines.push(h("p", {class: "lead"}, t("end.erased")));
    }
  }
  const name = end.kind === "completed" ? "end" : "ended";
  return h("section", {class: `screen screen-${name} end-${end.kind}`, "data-screen": name,
    "data-end": end.kind},
  h("h2", {}, end.kind === "completed" ? "✓ " : "", t(headingKey)),
  end.takeCard ? h("div", {class: "take-card", role: "alert"},
    h("img", {class: "picture", src: "img/take-card.svg", alt: ""}),
    h("p", {class: "take-card-text"}, t("end.takeCard"))) : null,
  ...lines,
  h("p", {class: "countdown", "data-countdown": ""}, ""),
  h("div", {class: "actions"}, button(t("btn.home"), () => actions.home(),
    {class: "primary", "data-action": "home"})),
  );
}
