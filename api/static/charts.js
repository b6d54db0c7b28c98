// Charts people can read, drawn by uPlot (vendored: static/vendor/uplot): time axes
// in UTC with dates, units on the value axis, a legend naming each line with its
// value under the cursor, and thresholds drawn and named as lines of their own.
"use strict";

import uPlot from "./vendor/uplot/uPlot.esm.js";

const AXIS = {
  stroke: "#8a96a3",
  grid: { stroke: "#2a3440", width: 1 },
  ticks: { stroke: "#2a3440", width: 1 },
};
const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

/**
 * A line chart in `container`. `series`: [{label, colour, dashed}], `format(v)`:
 * a value as people read it (axis and legend), `unit`: the value axis's title,
 * `day`: x is whole days (the legend says the date only); `windowS`: x always spans
 * that many seconds up to the newest point (a live chart). `onPick(i)`: a click on
 * the chart at point `i`. Returns `update(xs, ...columns)` (x in epoch seconds).
 */
export function lineChart(
  container, { series, format, unit, height = 170, day = false, windowS = null, onPick },
) {
  const stamp = (ts) => new Date(ts * 1000).toISOString().replace("T", " ").slice(0, day ? 10 : 19);
  const options = {
    width: Math.max(200, container.clientWidth || 600),
    height,
    tzDate: utc,
    cursor: { points: { size: 6 } },
    legend: { live: true },
    scales: { x: { time: true } },
    axes: [
      {
        ...AXIS,
        // UTC, written out (uPlot's own date labels follow the browser's locale),
        // far enough apart to read.
        space: day ? 50 : 90,
        values: (u, splits) => splits.map((ts) => {
          const iso = new Date(ts * 1000).toISOString();
          return day ? iso.slice(5, 10) : iso.slice(11, 19);
        }),
      },
      { ...AXIS, label: unit, size: 64, values: (u, splits) => splits.map(format) },
    ],
    series: [
      { label: day ? "day (UTC)" : "time (UTC)", value: (u, v) => (v === null ? "–" : stamp(v)) },
      ...series.map((s) => ({
        label: s.label,
        stroke: s.colour,
        width: 2,
        dash: s.dashed ? [6, 4] : undefined,
        points: { show: !s.dashed },
        spanGaps: false,
        value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
      })),
    ],
  };
  const empty = [[], ...series.map(() => [])];
  const chart = new uPlot(options, empty, container);
  if (onPick) {
    chart.over.style.cursor = "pointer";
    chart.over.addEventListener("click", () => {
      if (chart.cursor.idx !== null && chart.cursor.idx !== undefined) onPick(chart.cursor.idx);
    });
  }
  new ResizeObserver(() => {
    const width = Math.max(200, container.clientWidth);
    if (width !== chart.width) chart.setSize({ width, height });
  }).observe(container);
  return (xs, ...columns) => {
    if (windowS !== null && xs.length && xs[0] > xs[xs.length - 1] - windowS) {
      // The whole window from the first point on: an empty start, not a stretch.
      xs = [xs[xs.length - 1] - windowS, ...xs];
      columns = columns.map((column) => [null, ...column]);
    }
    chart.setData([xs, ...columns]);
  };
}
