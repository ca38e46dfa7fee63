// SPDX-License-Identifier: Apache-2.0
// A small element builder. Text always goes in as text nodes (never
// innerHTML), so nothing the API sends (a site name, an alarm detail, a
// note) can become markup; with the server's CSP no inline script runs.
//
//   h("button", {class: "primary", onclick: go, "aria-pressed": "true"}, t("btn.ack"))

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const name in attrs) {
    const value = attrs[name];
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
  append(el, children);
  return el;
}

// Children may be nested arrays (a list of badges); walked without flattening copies (1,000-row tables).
function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    if (Array.isArray(child)) {
      append(el, child);
    } else {
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
}

/** A <button type="button"> with visible text (its accessible name). */
export function button(text, onclick, attrs = {}) {
  return h("button", {type: "button", onclick, ...attrs}, text);
}

/** Replace the children of ``el`` with ``children`` (nodes or text). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return el;
}

/** The element with ``id`` (the page shells name their parts by id). */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) {
    throw new Error(`the page has no #${id}`);
  }
  return el;
}
