// SPDX-License-Identifier: Apache-2.0
// A small element builder. Text always goes in as text nodes (never
// innerHTML), so nothing the agent sends can become markup.
//
//   h("button", {class: "primary", onclick: go, "data-action": "cancel"}, t("btn.cancel"))

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A <button type="button"> with visible text (its accessible name). */
export function button(text, onclick, attrs = {}) {
  return h("button", {type: "button", onclick, ...attrs}, text);
}
