// SPDX-License-Identifier: Apache-2.0
// Small pieces several pages show the same way: severity in words (never
// colour alone) and who acknowledged an alarm, when, with what note.

import {h} from "./dom.js";
import {dateTime} from "./format.js";
import {label, t} from "./i18n.js";

export const SEVERITIES = ["critical", "warning", "info"];

/** One severity as a badge with its name in words. */
export function alarmSeverity(severity) {
  return h("span", {class: `badge sev-${severity}`}, label("severity", severity));
}

/** Badges "Critical 2", "Warning 1" for the non-zero counts; the codes as the title. */
export function alarmBadges(counts, active = []) {
  const badges = [];
  for (const severity of SEVERITIES) {
    const n = (counts && counts[severity]) || 0;
    if (n > 0) {
      const codes = active.filter((a) => a.severity === severity).map((a) => label("alarmcode", a.code)).join(", ");
      badges.push(h("span", {class: `badge sev-${severity}`, title: codes || null},
        t("alarms.badge", {severity: t(`severity.${severity}`), n})));
    }
  }
  return badges.length ? badges : [h("span", {class: "muted"}, t("alarms.none"))];
}

/** "Acknowledged by li at 2026-11-30 14:05: note", or "Not acknowledged". */
export function ackSummary(alarm) {
  if (!alarm.acked_by) {
    return h("span", {class: "unacked"}, t("ack.not"));
  }
  return h("div", {class: "acked"},
    h("span", {}, t("ack.by", {user: alarm.acked_by, at: dateTime(alarm.acked_at)})),
    alarm.ack_note ? h("q", {class: "note user-text"}, alarm.ack_note) : null);
}
