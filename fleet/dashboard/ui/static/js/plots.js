// SPDX-License-Identifier: Apache-2.0
// Time-series plots (uPlot, vendored from npm): a line per health series and
// bars for transactions per hour. Each plot has a sentence under it (points,
// latest, lowest, highest), because a canvas says nothing to a screen
// reader or to someone who needs the number rather than the shape.

import uPlot from "../vendor/uplot@1.6.32/dist/uPlot.esm.js";
import {h} from "./dom.js";
import {clock, monthDay, timezone} from "./format.js";
import {t} from "./i18n.js";

const HEIGHT = 170;
// Time-axis tick steps in seconds, never under one (the labels show whole seconds at most).
const TICK_STEPS = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600,
  12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400];

function roundish(value) {
  return Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
}

/** The sentence under a plot: how many points and their range, or that there is no data. */
export function summary(values, unit) {
  const present = values.filter((v) => v !== null && v !== undefined && !Number.isNaN(v));
  if (present.length === 0) {
    return t("plot.empty");
  }
  const u = unit ? ` ${unit}` : "";
  return t("plot.summary", {
    n: present.length, last: `${roundish(present[present.length - 1])}${u}`,
    min: `${roundish(Math.min(...present))}${u}`, max: `${roundish(Math.max(...present))}${u}`,
  });
}

// Axis labels in the dashboard's zone, 24-hour clock, the same in both languages: "14:00" within two
// days (midnight as "11-30", where the day changes), "11-30" beyond, "14:05:30" within ten minutes.
function axisLabels(u, splits) {
  const span = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
  return splits.map((v) => {
    if (span > 2 * 86400) {
      return monthDay(v);
    }
    if (span < 600) {
      return clock(v, {seconds: true});      // a kiosk heard from for minutes only: ticks seconds apart
    }
    const hm = clock(v);
    return hm === "00:00" ? monthDay(v) : hm;
  });
}

// The kiosk's offline periods as pale red bands behind the series ([from, to] in Unix seconds), so a gap
// in a line reads as "it was offline", not "the value was zero". The sentence under the plots says so.
function shadeOffline(u, periods) {
  const {ctx, bbox} = u;
  ctx.save();
  ctx.fillStyle = "rgba(164, 22, 26, 0.13)";
  for (const [from, to] of periods) {
    const x0 = Math.max(bbox.left, u.valToPos(from, "x", true));
    const x1 = Math.min(bbox.left + bbox.width, u.valToPos(to, "x", true));
    if (x1 > x0) {
      ctx.fillRect(x0, bbox.top, Math.max(1, x1 - x0), bbox.height);
    }
  }
  ctx.restore();
}

/**
 * A figure with a title, a uPlot canvas and its summary sentence.
 * spec: {id, title, unit, t: [unix s], values: [...], bars: bool, color, offline: [[from, to], ...] (unix s)}
 * Returns {figure, mount(), destroy()}: mount() once the figure is in the document (uPlot measures it).
 */
export function timePlot(spec) {
  const canvasBox = h("div", {class: "plot-canvas"});
  const figure = h("figure", {class: "plot", "data-plot": spec.id},
    h("figcaption", {}, spec.title),
    canvasBox,
    h("p", {class: "plot-summary"}, summary(spec.values, spec.unit)));
  let plot = null;
  let observer = null;

  function mount() {
    if (plot || spec.t.length === 0) {
      return;
    }
    const width = Math.max(260, canvasBox.clientWidth || 400);
    const series = {
      label: spec.title, stroke: spec.color, width: 2, spanGaps: false,
      value: (_u, v) => (v === null || v === undefined ? "—" : `${roundish(v)}${spec.unit ? ` ${spec.unit}` : ""}`),
    };
    if (spec.bars) {
      series.fill = spec.color;
      series.paths = uPlot.paths.bars({size: [0.7, 60]});
      series.points = {show: false};
    }
    plot = new uPlot({
      width, height: HEIGHT,
      hooks: {drawClear: [(u) => shadeOffline(u, spec.offline || [])]},
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), timezone()),
      scales: {x: {time: true}, y: spec.bars ? {range: (_u, _min, max) => [0, Math.max(1, max)]} : {}},
      axes: [{stroke: "#3f4a56", grid: {stroke: "#e4e6ea"}, values: axisLabels, incrs: TICK_STEPS, space: 60},
        {stroke: "#3f4a56", grid: {stroke: "#e4e6ea"}, size: 56}],
      legend: {show: true, live: true},
      cursor: {drag: {x: false, y: false}},
      series: [{label: t("plot.time"), value: "{YYYY}-{MM}-{DD} {HH}:{mm}"}, series],
    }, [spec.t, spec.values], canvasBox);
    observer = new ResizeObserver(() => {
      const w = Math.max(260, canvasBox.clientWidth);
      if (plot && Math.abs(plot.width - w) > 4) {
        plot.setSize({width: w, height: HEIGHT});
      }
    });
    observer.observe(canvasBox);
  }

  function destroy() {
    observer?.disconnect();
    plot?.destroy();
    plot = null;
  }

  return {figure, mount, destroy};
}
