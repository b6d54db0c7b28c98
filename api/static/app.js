// The live dashboard: one websocket for transitions and stats, polled panels for
// what waits, what fires, each source, the breakdown and the 90-day trend.
"use strict";

import { api } from "./api.js";
import { $, text, viewLink } from "./dom.js";
import { lineChart } from "./charts.js";
import { searchHref } from "./search.js";

const FEED_ROWS = 50;
const HISTORY = 300; // one stats point a second: five minutes
const history = [];
const WAITING_POLL_MS = 5000;
const WAITING_ROWS = 15;

// Opens a message as the page's main view (set by startDashboard).
let openMessage = () => {};
let openSearch = () => {};
let stopped = false;

function messageLink(messageId, shown) {
  return viewLink(shown, "/?message=" + encodeURIComponent(messageId), () => openMessage(messageId), {
    messageId,
  });
}

// The websocket carries the session cookie (same origin); after a close it comes
// back once a data call shows the session still holds (a 401 asks for sign-in).
async function checkAccess() {
  try {
    return (await api("/v1/stats?window_s=10")).status !== 401;
  } catch (error) {
    return true;
  }
}

function connect() {
  if (stopped) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/live`);
  ws.onopen = () => { $("connection").className = "dot on"; $("connection").textContent = "live"; };
  ws.onclose = () => {
    $("connection").className = "dot off"; $("connection").textContent = "reconnecting";
    setTimeout(async () => {
      if (await checkAccess()) connect();
      else $("connection").textContent = "signed out";
    }, 1000);
  };
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "stats") showStats(frame);
    else if (frame.type === "transitions") showTransitions(frame.items);
  };
}

function showStats(stats) {
  for (const [status, count] of Object.entries(stats.counts)) {
    const el = $("count-" + status);
    if (el) el.textContent = count.toLocaleString();
  }
  showRate("bounce", stats.rates.bounce, 0.05);
  showRate("complaint", stats.rates.complaint, 0.001);
  const delivery = stats.latency_ms.send_to_delivery;
  if (delivery && delivery.count) {
    history.push({ at: Date.now() / 1000, p50: delivery.p50, p90: delivery.p90, p99: delivery.p99 });
    if (history.length > HISTORY) history.shift();
    $("latency-now").textContent =
      `now: p50 ${delivery.p50} ms · p90 ${delivery.p90} ms · p99 ${delivery.p99} ms · max ${delivery.max} ms (${delivery.count} deliveries)`;
    drawLatency(
      history.map((h) => h.at),
      ...["p50", "p90", "p99"].map((q) => history.map((h) => h[q])),
    );
  }
  showDimensions(stats.dimensions || []);
  if (breakdownBy === "domain") {
    showBreakdown(Object.entries(stats.by_domain).map(([key, section]) => ({ key, ...section })));
  }
}

// The breakdown table: recipient domains come with every stats frame; any other
// dimension is read from /v1/stats?by= while it is selected.
let breakdownBy = "domain";
const BREAKDOWN_ROWS = 12;
const BREAKDOWN_POLL_MS = 5000;

function showDimensions(names) {
  const select = $("breakdown-by");
  const have = Array.from(select.options, (option) => option.value);
  if (names.length && have.join() !== names.join()) {
    select.replaceChildren(...names.map((name) => {
      const option = text("option", name);
      option.value = name;
      return option;
    }));
    select.value = breakdownBy;
  }
}

/** The search filters of one breakdown group (null for "(other)"). */
function searchFor(dimension, key) {
  if (key === "(other)" || key === "(none)") return null;
  if (dimension.startsWith("tag:")) return { tag: `${dimension.slice(4)}:${key}` };
  return { [dimension]: key };
}

function showBreakdown(groups) {
  $("breakdown-key").textContent = breakdownBy;
  const body = $("breakdown").querySelector("tbody");
  body.replaceChildren();
  for (const group of groups.slice(0, BREAKDOWN_ROWS)) {
    const row = document.createElement("tr");
    const c = group.counts;
    const delivery = group.latency_ms.send_to_delivery;
    const bounce = group.rates.bounce === null ? "–" : (group.rates.bounce * 100).toFixed(2);
    for (const value of [group.key, c.sent, c.delivered, c.delayed, c.bounced, c.complained, bounce,
                         delivery ? delivery.p90 : "–"]) {
      row.append(text("td", String(value)));
    }
    const filters = searchFor(breakdownBy, group.key);
    if (filters) {
      // A row opens the search for its group (the "(other)" row stands for many).
      const link = viewLink(group.key, searchHref(filters), () => openSearch(filters));
      row.cells[0].replaceChildren(link);
    }
    body.append(row);
  }
}

async function refreshBreakdown() {
  if (breakdownBy === "domain") return;
  const wanted = breakdownBy;
  try {
    const response = await fetch("/v1/stats?by=" + encodeURIComponent(wanted));
    if (!response.ok) return;
    const body = await response.json();
    if (breakdownBy === wanted) showBreakdown(body.by.groups);
  } catch (error) { /* next poll */ }
}

// Ninety days of daily figures against SES's review thresholds.
const TREND_DAYS = 90;
const TREND_POLL_MS = 60000;
const DAY_MS = 86400000;
const COLOURS = { p50: "#3fb950", p90: "#d29922", p99: "#f85149", threshold: "#8a96a3" };
const percent = (v) => (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%";
const ms = (v) => (v >= 10000 ? (v / 1000).toFixed(0) + " s" : Math.round(v) + " ms");
let trendStart = 0;
let drawLatency = () => {};
const charts = {};

/** The charts, once: the live latency, and the 90 days (a click on a day opens the
 * search for the messages sent that day). */
function makeCharts() {
  const percentiles = ["p50", "p90", "p99"].map((q) => ({ label: q, colour: COLOURS[q] }));
  drawLatency = lineChart($("latency-chart"), {
    series: percentiles, format: ms, unit: "ms", windowS: HISTORY,
  });
  const openDay = (i) => {
    const since = new Date(trendStart + i * DAY_MS);
    const until = new Date(since.getTime() + DAY_MS);
    openSearch({ since: since.toISOString(), until: until.toISOString() });
  };
  const trend = (id, label, colour, review) => lineChart($(id), {
    series: [{ label, colour }, { label: `SES review ${percent(review)}`, colour: COLOURS.threshold, dashed: true }],
    format: percent, unit: "%", day: true, height: 150, onPick: openDay,
  });
  charts.bounce = trend("trend-bounce", "bounce rate", "#f85149", 0.05);
  charts.complaint = trend("trend-complaint", "complaint rate", "#d29922", 0.001);
  charts.latency = lineChart($("trend-latency"), {
    series: percentiles, format: ms, unit: "send → delivery", day: true, height: 150, onPick: openDay,
  });
}
async function refreshTrend() {
  const until = new Date();
  const start = new Date(until.getTime() - (TREND_DAYS - 1) * 86400000);
  start.setUTCHours(0, 0, 0, 0);
  const params = new URLSearchParams({ step: "day", since: start.toISOString(), until: until.toISOString() });
  try {
    const response = await fetch("/v1/history?" + params);
    if (!response.ok) return;
    const body = await response.json();
    const byDay = new Map(body.points.map((point) => [point.at.slice(0, 10), point]));
    const days = [];
    for (let i = 0; i < TREND_DAYS; i++) {
      days.push(byDay.get(new Date(start.getTime() + i * 86400000).toISOString().slice(0, 10)) || null);
    }
    const rate = (name) => (day) => (day && day.rates[name] !== null ? day.rates[name] : null);
    const delivery = (q) => (day) => {
      const figures = day && day.latency_ms.send_to_delivery;
      return figures && figures.count ? figures[q] : null;
    };
    const xs = days.map((_, i) => (start.getTime() + i * 86400000) / 1000);
    const column = (value) => days.map(value);
    const flat = (level) => days.map(() => level);
    trendStart = start.getTime();
    charts.bounce(xs, column(rate("bounce")), flat(0.05));
    charts.complaint(xs, column(rate("complaint")), flat(0.001));
    charts.latency(xs, column(delivery("p50")), column(delivery("p90")), column(delivery("p99")));
    const seen = days.filter((day) => day !== null);
    const sent = seen.reduce((total, day) => total + day.counts.sent, 0);
    $("trend-summary").textContent = seen.length
      ? `${seen.length} days with mail in the last ${TREND_DAYS}: ${sent.toLocaleString()} recipients sent`
      : `no history in the last ${TREND_DAYS} days yet`;
  } catch (error) { /* next poll */ }
}

// The severity of a firing rate alert, by kind ("bounce", "complaint"): a bar is
// never green while its alert fires (refreshAlerts keeps this).
const firingRates = {};
let lastRates = {};

function showRate(name, rate, reviewAt) {
  lastRates[name] = [rate, reviewAt];
  const bar = $(name + "-bar");
  // The bar's full width is twice the review threshold; the marker sits at half.
  const share = rate === null ? 0 : Math.min(1, rate / (2 * reviewAt));
  bar.style.width = (share * 100).toFixed(1) + "%";
  // Red at SES's review threshold or a critical alert; amber from 40% of it (2%
  // bounces, AWS's advice) or any firing alert on the rate; green below.
  const alert = firingRates[name];
  let state = "";
  if (rate !== null && (rate >= reviewAt || alert === "critical")) state = "over";
  else if (alert || (rate !== null && rate >= 0.4 * reviewAt)) state = "near";
  bar.className = state;
  $(name + "-rate").textContent = rate === null ? "–" : (rate * 100).toFixed(2) + "%";
}

function showTransitions(items) {
  const body = $("feed").querySelector("tbody");
  for (const item of items) {
    const row = document.createElement("tr");
    row.append(text("td", item.at.slice(11, 23)));
    const cell = document.createElement("td");
    cell.className = "mid";
    cell.append(messageLink(item.message_id, item.message_id.slice(0, 28) + (item.message_id.length > 28 ? "…" : "")));
    row.append(cell, text("td", item.recipient));
    row.append(text("td", `${item.from || "new"} → ${item.to}`, "status-" + item.to));
    row.append(text("td", item.latency_ms + " ms"));
    // In event-time order, newest first (transitions arrive as merged, and a
    // late event is older than what came before it).
    row.dataset.at = item.at;
    const later = Array.from(body.rows).find((other) => other.dataset.at <= item.at);
    body.insertBefore(row, later || null);
  }
  while (body.rows.length > FEED_ROWS) body.deleteRow(-1);
}

// Overdue and delayed messages come from the search API (the store's pending
// index), so the list holds what every replica has seen, not only this page.
async function refreshWaiting() {
  try {
    const [overdue, delayed] = await Promise.all([
      searchMessages({ overdue: "true", limit: WAITING_ROWS }),
      searchMessages({ status: "delayed", limit: WAITING_ROWS }),
    ]);
    const list = $("waiting");
    list.replaceChildren();
    const shown = new Set();
    for (const [label, items] of [["overdue", overdue], ["delayed", delayed]]) {
      for (const message of items) {
        if (shown.has(message.message_id)) continue;
        shown.add(message.message_id);
        const waiting = message.recipients.filter((r) => r.status === "sent" || r.status === "delayed");
        const item = document.createElement("li");
        item.append(text("span", label, label === "overdue" ? "status-bounced" : "status-delayed"));
        item.append(` ${(message.sent_at || "").slice(11, 19)} `);
        item.append(messageLink(message.message_id, message.message_id.slice(0, 24) + "…"), ` ${waiting.map((r) => r.address).join(", ")}`);
        list.append(item);
      }
    }
    if (!list.children.length) list.append(text("li", "nothing waiting", "muted"));
  } finally {
    setTimeout(refreshWaiting, WAITING_POLL_MS);
  }
}

// What fires now, from /v1/alerts (the alert state every replica shares).
async function refreshAlerts() {
  try {
    const response = await fetch("/v1/alerts?limit=1");
    if (!response.ok) throw new Error("alerts failed: " + response.status);
    const list = $("alerts");
    list.replaceChildren();
    const firing = (await response.json()).firing;
    for (const kind of ["bounce", "complaint"]) {
      // A rate rule's alert names its rate among its figures ("bounce rate": ...).
      const severities = firing
        .filter((a) => a.figures && Object.hasOwn(a.figures, kind + " rate"))
        .map((a) => a.severity);
      firingRates[kind] = severities.includes("critical") ? "critical" : severities[0] || null;
      if (lastRates[kind]) showRate(kind, ...lastRates[kind]);
    }
    for (const alert of firing) {
      const item = document.createElement("li");
      item.append(text("span", alert.severity, alert.severity === "critical" ? "status-bounced" : "status-delayed"));
      item.append(` ${alert.title} `);
      const example = (alert.examples || [])[0];
      if (example) {
        item.append(messageLink(example.message_id, example.message_id.slice(0, 24) + "…"));
      }
      item.title = alert.summary;
      list.append(item);
    }
    if (!list.children.length) list.append(text("li", "nothing firing", "muted"));
  } finally {
    setTimeout(refreshAlerts, WAITING_POLL_MS);
  }
}

// "52 min" / "40 s" / "3.5 h", as the alerts word spans.
function span(seconds) {
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1).replace(/\.0$/, "") + " h";
}

// While a source reads events much older than now (a backlog after an outage),
// the figures of the last minutes are incomplete: say so, plainly.
function showCatchUp(ready) {
  const notice = $("catch-up-notice");
  const behind = Object.entries(ready.catching_up || {}).sort((a, b) => b[1] - a[1]);
  notice.hidden = !behind.length;
  if (!behind.length) return;
  const [where, seconds] = behind[0];
  const more = behind.length > 1 ? ` (and ${behind.length - 1} more)` : "";
  notice.textContent = `Catching up: ${where} is reading events ${span(seconds)} old${more}. ` +
    "The last minutes' figures are incomplete until it catches up, and alerts on them will not resolve meanwhile.";
}

// Each consumer's state from /readyz, and in plain words what is wrong: a source
// that is retrying, partitions that stopped while the broker has newer records,
// partitions paused because their dead letters cannot be parked, a source reading
// old events.
async function refreshSources() {
  try {
    const response = await fetch("/readyz");
    const ready = await response.json();
    showCatchUp(ready);
    const list = $("sources");
    list.replaceChildren();
    if (!ready.store) list.append(text("li", "the state store is not answering", "status-bounced"));
    for (const [name, source] of Object.entries(ready.consumers || {})) {
      const bad = source.state === "retrying" || source.failure;
      const item = document.createElement("li");
      item.id = "source-" + name;
      item.append(text("strong", name), " ", text("span", source.state, bad ? "status-bounced" : "status-delivered"));
      const problems = [];
      if ((source.stalled || []).length) problems.push("stalled: " + source.stalled.join(", "));
      if ((source.dlq_blocked || []).length) problems.push("paused, dead letters not parked: " + source.dlq_blocked.join(", "));
      const behind = Object.values(source.lag || {}).reduce((a, b) => a + b, 0);
      if (behind) problems.push(behind.toLocaleString() + " records behind");
      const oldest = Math.max(0, ...Object.values(source.event_lag_s || {}));
      if (oldest >= (ready.catch_up_after_s || 900)) problems.push("reading events " + span(oldest) + " old");
      if (problems.length) item.append(" · " + problems.join(" · "));
      list.append(item);
    }
    if (!list.children.length) list.append(text("li", "no consumers: HTTP ingest only", "muted"));
    // Forwarding: one line per subscription, as this replica sees it.
    for (const sub of ready.forwarding || []) {
      const item = document.createElement("li");
      item.id = "forward-" + sub.name;
      const late = sub.oldest_s !== null && sub.oldest_s >= 60;
      item.append(text("strong", "forward " + sub.name), " ");
      item.append(text("span", late ? "behind" : "ok", late ? "status-bounced" : "status-delivered"));
      const parts = [`${sub.sent.toLocaleString()} sent`, `${sub.queued.toLocaleString()} waiting`];
      if (sub.oldest_s !== null) parts.push("oldest " + span(sub.oldest_s));
      if (sub.failed) parts.push(`${sub.failed.toLocaleString()} failed posts`);
      if (!sub.sending) parts.push("another replica sends");
      item.append(" · " + parts.join(" · "));
      list.append(item);
    }
  } catch (error) {
    // The next refresh tries again.
  } finally {
    setTimeout(refreshSources, WAITING_POLL_MS);
  }
}

async function searchMessages(params) {
  const response = await fetch("/v1/messages?" + new URLSearchParams(params));
  if (!response.ok) throw new Error("search failed: " + response.status);
  return (await response.json()).items;
}

/** Starts the live panels; `ctx.openMessage(id)` opens a message as the main view. */
export function startDashboard(ctx) {
  openMessage = ctx.openMessage;
  openSearch = ctx.openSearch;
  makeCharts();
  // A status counter opens the search for its status.
  for (const counter of document.querySelectorAll(".counter")) {
    const status = counter.querySelector("[id^=count-]").id.slice("count-".length);
    counter.classList.add("clickable");
    counter.tabIndex = 0;
    counter.setAttribute("role", "link");
    counter.title = `search messages ${status}`;
    counter.onclick = () => openSearch({ status });
    counter.onkeydown = (event) => { if (event.key === "Enter") openSearch({ status }); };
  }
  checkAccess().then((allowed) => { if (allowed) connect(); });
  refreshWaiting();
  refreshAlerts();
  refreshSources();
  $("breakdown-by").onchange = (event) => {
    breakdownBy = event.target.value;
    $("breakdown").querySelector("tbody").replaceChildren();
    refreshBreakdown();
  };
  setInterval(refreshBreakdown, BREAKDOWN_POLL_MS);
  refreshTrend();
  setInterval(refreshTrend, TREND_POLL_MS);
}

/** Signed out: the websocket stays closed until the page signs in again. */
export function stopLive() {
  stopped = true;
}
