// SPDX-License-Identifier: Apache-2.0
// Times, durations and "since": shown in the dashboard's configured time
// zone (GET /api/me's `timezone`), not the browser's, so an office in
// another zone and the reports agree on what "today" is.

import {h} from "./dom.js";
import {t} from "./i18n.js";

let zone = "Asia/Shanghai";
let partsFormat = null;

/** Use ``timezone`` (an IANA name) from now on. */
export function setTimezone(timezone) {
  zone = timezone || zone;
  partsFormat = null;
  offsetCache.clear();
}

export function timezone() {
  return zone;
}

const offsetCache = new Map();    // hour bucket -> the zone's UTC offset in ms then

// The zone's offset at ``ms``, asked of Intl once per hour (offsets change on hour boundaries), so a
// 1,000-row table formats its times with Date arithmetic instead of 2,000 Intl calls.
function offsetAt(ms) {
  const bucket = Math.floor(ms / 3_600_000);
  let offset = offsetCache.get(bucket);
  if (offset === undefined) {
    partsFormat ??= new Intl.DateTimeFormat("en-CA", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    });
    const p = {};
    for (const part of partsFormat.formatToParts(new Date(bucket * 3_600_000))) {
      p[part.type] = Number(part.value);
    }
    offset = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - bucket * 3_600_000;
    offsetCache.set(bucket, offset);
  }
  return offset;
}

function parts(date) {
  const local = new Date(date.getTime() + offsetAt(date.getTime()));
  const two = (n) => String(n).padStart(2, "0");
  return {year: String(local.getUTCFullYear()), month: two(local.getUTCMonth() + 1), day: two(local.getUTCDate()),
    hour: two(local.getUTCHours()), minute: two(local.getUTCMinutes()), second: two(local.getUTCSeconds())};
}

function toDate(value) {
  if (value === null || value === undefined || value === "") {
    return null;
  }
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "2026-11-30 14:05" in the configured zone; "—" for no time. */
export function dateTime(value, {seconds = false} = {}) {
  const date = toDate(value);
  if (!date) {
    return "—";
  }
  const p = parts(date);
  const clock = seconds ? `${p.hour}:${p.minute}:${p.second}` : `${p.hour}:${p.minute}`;
  return `${p.year}-${p.month}-${p.day} ${clock}`;
}

/** "14:05" (a plot's axis within a day or two), "14:05:30" with seconds. */
export function clock(value, {seconds = false} = {}) {
  const date = toDate(value);
  if (!date) {
    return "";
  }
  const p = parts(date);
  return seconds ? `${p.hour}:${p.minute}:${p.second}` : `${p.hour}:${p.minute}`;
}

/** "11-30" (a plot's axis over days). */
export function monthDay(value) {
  const date = toDate(value);
  if (!date) {
    return "";
  }
  const p = parts(date);
  return `${p.month}-${p.day}`;
}

/** The day ("YYYY-MM-DD") of ``value`` (default now) in the configured zone. */
export function day(value = new Date()) {
  const p = parts(toDate(value) ?? new Date());
  return `${p.year}-${p.month}-${p.day}`;
}

/** The day ``days`` before the day "YYYY-MM-DD" (calendar arithmetic, zone-free). */
export function dayMinus(isoDay, days) {
  const [y, m, d] = isoDay.split("-").map(Number);
  const date = new Date(Date.UTC(y, m - 1, d - days));
  return date.toISOString().slice(0, 10);
}

/** A duration in seconds as people say it: "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) {
    return "—";
  }
  if (seconds > 0 && seconds < 1) {
    return t("dur.lt1");
  }
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return t("dur.s", {s});
  }
  if (s < 3600) {
    return t("dur.m", {m: Math.floor(s / 60)});
  }
  if (s < 86400) {
    return t("dur.hm", {h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60)});
  }
  return t("dur.dh", {d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600)});
}

/** Seconds from ``value`` to now (never negative: clocks of two hosts differ a little). */
export function secondsSince(value) {
  const date = toDate(value);
  return date ? Math.max(0, (Date.now() - date.getTime()) / 1000) : null;
}

/** The text of a relative time: ``key`` (an i18n string with {d}) filled with the time since ``value``. */
export function sinceText(value, key = "time.ago") {
  const elapsed = secondsSince(value);
  if (elapsed === null) {
    return "—";
  }
  if (key === "time.ago" && elapsed < 5) {
    return t("time.justNow");
  }
  return t(key, {d: duration(elapsed)});
}

/** A <time> showing "3 min ago" (or ``key``'s sentence), the exact time as its title; kept fresh by refreshRelative. */
export function since(value, key = "time.ago") {
  const date = toDate(value);
  if (!date) {
    return h("span", {class: "muted"}, "—");
  }
  return h("time", {datetime: date.toISOString(), title: dateTime(date, {seconds: true}), "data-since": key},
    sinceText(date, key));
}

/** Bring every relative time under ``root`` up to date (run every few seconds; no re-render, focus stays). */
export function refreshRelative(root = document) {
  for (const el of root.querySelectorAll("time[data-since]")) {
    el.textContent = sinceText(el.getAttribute("datetime"), el.dataset.since);
  }
}

const numberFormat = new Intl.NumberFormat("en-US");    // one formatter: toLocaleString builds one per call

/** A number with thousands grouped ("12,000"; the same in both languages). */
export function number(value) {
  return value === null || value === undefined ? "—" : numberFormat.format(Number(value));
}
