// SPDX-License-Identifier: Apache-2.0
// The developer side panel (only when the agent runs on simulated devices and
// Kiosk.Status says developer: true): buttons for the simulators' actions
// from Dev.GetActions, and the last receipt the simulated printer received
// (Dev.GetReceipt, Dev.ReceiptPrintedEvent). Receipts carry masked data only.

import {XfsService} from "./xfs.js";
import {button, h} from "./dom.js";
import {t} from "./i18n.js";

const CARD_KINDS = ["resident", "gat_permit", "foreign_pr_2017", "foreign_pr_2023"];
// A code the scanner classifies as a WeChat payment code, and a product barcode.
const PAYMENT_CODE = "134567890123456789";
const PRODUCT_CODE = "6901234567892";
// Actions that need arguments get presets below; these are left out.
const SKIPPED = new Set(["status", "transcript", "fail", "inject", "key", "joystick", "temp", "relays"]);
// The devices a walk-through needs first; the rest follow by name.
const FIRST = ["idcard", "scanner", "printer", "door"];

export class DevPanel {
  constructor({url, root, toggle}) {
    this.url = url;
    this.root = root;
    this.toggle = toggle;
    this.service = null;
    this.devices = {};
    this.receipt = null;
    this.result = "";
    this.open = false;
    toggle.addEventListener("click", () => {
      this.open = !this.open;
      this.render();
    });
  }

  /** Connect to /dev and show the panel's toggle. */
  enable() {
    if (this.service) {
      return;
    }
    this.service = new XfsService(this.url, {
      onOpen: () => this.load(),
      onClose: () => this.render(),
      onUnsolicited: (name, payload) => {
        if (name === "Dev.ReceiptPrintedEvent") {
          this.receipt = payload.lines ?? [];
          this.render();
        }
      },
    });
    this.service.connect();
    this.toggle.hidden = false;
    this.render();
  }

  async load() {
    const actions = await this.service.command("Dev.GetActions");
    if (actions.completionCode === "success") {
      this.devices = actions.devices ?? {};
    }
    const receipt = await this.service.command("Dev.GetReceipt");
    if (receipt.completionCode === "success") {
      this.receipt = receipt.lines ?? null;
    }
    this.render();
  }

  async simulate(device, action, args = []) {
    const reply = await this.service.command("Dev.Simulate", {device, action, args});
    const {completionCode, errorDescription} = reply;
    this.result = `${device} ${action} ${args.join(" ")}: ${completionCode}${errorDescription ? ` (${errorDescription})` : ""}`;
    this.render();
  }

  buttonsFor(device, listed) {
    const actions = Array.isArray(listed) ? listed : Object.keys(listed ?? {});
    const buttons = [];
    const add = (label, action, args) => buttons.push(
      button(label, () => this.simulate(device, action, args), {class: "dev-button", "data-dev": `${device}.${action}`}));
    for (const action of actions) {
      if (action === "place") {
        for (const kind of CARD_KINDS) {
          const year = kind.match(/\d{4}$/);
          add(t("dev.place", {kind: t(`card.type.${kind}`) + (year ? ` (${year[0]})` : "")}), "place", [kind]);
        }
        add(t("dev.placeBad"), "place", ["resident", "bad"]);
      } else if (action === "scan") {
        add(t("dev.scanPayment"), "scan", [PAYMENT_CODE]);
        add(t("dev.scanOther"), "scan", [PRODUCT_CODE]);
      } else if (action === "tamper") {
        add(`${device}: tamper open`, "tamper", ["open"]);
        add(`${device}: tamper close`, "tamper", ["close"]);
      } else if (action === "power") {
        add(`${device}: power off`, "power", ["off"]);
        add(`${device}: power on`, "power", ["on"]);
      } else if (!SKIPPED.has(action)) {
        add(`${device}: ${action}`, action, []);
      }
    }
    return buttons;
  }

  render() {
    this.toggle.textContent = t("dev.toggle");
    this.toggle.setAttribute("aria-expanded", String(this.open));
    this.root.hidden = !this.open;
    if (!this.open) {
      return;
    }
    const connected = this.service && this.service.connected;
    const devices = Object.entries(this.devices).sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
    this.root.replaceChildren(...[
      h("h2", {}, t("dev.heading")),
      connected ? null : h("p", {class: "notice"}, t("dev.unavailable")),
      // The receipt first: it is what a walk-through looks at after each session.
      h("h3", {}, t("dev.receipt")),
      h("pre", {class: "dev-receipt", "data-receipt": ""},
        this.receipt && this.receipt.length ? this.receipt.join("\n") : t("dev.noReceipt")),
      this.result ? h("p", {class: "dev-result", role: "status"}, `${t("dev.result")}: ${this.result}`) : null,
      ...devices.map(([device, actions]) => h("div", {class: "dev-device"},
        h("h3", {}, device), h("div", {class: "dev-buttons"}, this.buttonsFor(device, actions)))),
    ].filter(Boolean));
  }
}

function rank(device) {
  const i = FIRST.indexOf(device);
  return i < 0 ? FIRST.length : i;
}
