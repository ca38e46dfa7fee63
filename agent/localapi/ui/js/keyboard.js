// SPDX-License-Identifier: Apache-2.0
// On-screen input for a touchscreen without a physical keyboard: a text
// keyboard (simple-keyboard, with the pinyin candidates of
// simple-keyboard-layouts' Chinese layout, so an address can be written in
// Chinese by touch alone) and a numeric keypad for phone numbers and
// postcodes. Both edit a string the caller owns, through onChange.

import SimpleKeyboard from "../vendor/simple-keyboard@3.8.192/build/index.modern.esm.js";
import chinese from "../vendor/simple-keyboard-layouts@3.4.265/build/layouts/chinese.js";
import {button, h} from "./dom.js";
import {t} from "./i18n.js";

// Letters as on the Chinese layout, without its tab/.com/@ keys (an address
// needs digits, "-", "#" and the comma rather than those).
const LAYOUT = {
  default: [
    "1 2 3 4 5 6 7 8 9 0 {bksp}",
    "q w e r t y u i o p",
    "a s d f g h j k l -",
    "{shift} z x c v b n m , . #",
    "{space}",
  ],
  shift: [
    "1 2 3 4 5 6 7 8 9 0 {bksp}",
    "Q W E R T Y U I O P",
    "A S D F G H J K L -",
    "{shift} Z X C V B N M , . #",
    "{space}",
  ],
};

/**
 * A text keyboard in ``container``. Returns {setInput(value), setPinyin(on), destroy()}.
 */
export function textKeyboard(container, {value = "", pinyin = true, onChange}) {
  const keyboard = new SimpleKeyboard(container, {
    layout: LAYOUT,
    layoutName: "default",
    layoutCandidates: chinese.layoutCandidates,
    enableLayoutCandidates: pinyin,
    layoutCandidatesPageSize: 8,
    useButtonTag: true,          // real <button>s: reachable by role, text is the name
    disableButtonHold: true,     // a held finger types one key (elder users press long)
    preventMouseDownDefault: true,
    display: {
      "{bksp}": t("btn.delete"),
      "{shift}": "⇧ A/a",
      "{space}": t("keyboard.space"),
    },
    onChange: (input) => onChange(input),
    onKeyPress: (key) => {
      if (key === "{shift}") {
        const next = keyboard.options.layoutName === "default" ? "shift" : "default";
        keyboard.setOptions({layoutName: next});
      }
    },
  });
  keyboard.setInput(value);
  return {
    setInput: (text) => keyboard.setInput(text),
    setPinyin: (on) => keyboard.setOptions({enableLayoutCandidates: on}),
    destroy: () => keyboard.destroy(),
  };
}

/**
 * A numeric keypad of <button>s (digits, clear, delete) editing the string
 * ``read()`` returns, at most ``maxLength`` digits.
 */
export function numericKeypad({read, maxLength, onChange}) {
  const set = (next) => onChange(next.slice(0, maxLength));
  const digit = (d) => button(d, () => set(read() + d), {class: "key", "data-key": d});
  return h("div", {class: "keypad", role: "group", "aria-label": t("keypad.label")},
    ["1", "2", "3", "4", "5", "6", "7", "8", "9"].map(digit),
    button(t("btn.clear"), () => set(""), {class: "key key-aux"}),
    digit("0"),
    button(t("btn.delete"), () => set(read().slice(0, -1)), {class: "key key-aux"}),
  );
}
