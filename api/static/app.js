// The live status page: one websocket for transitions and stats, fetch for lookups.
// A token, when the service needs one, comes from ?token= in this page's URL.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const authHeaders = token ? { Authorization: "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
const FEED_ROWS = 50;
const HISTORY = 300; // one stats point a second: five minutes
const history = [];
const WAITING_POLL_MS = 5000;
const WAITING_ROWS = 15;

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (className) el.className = className;
  return el;
}

let unauthorised = false;

// A service with an API token refuses this page's calls without it: say so, and
// how to open the page, instead of reconnecting for ever.
function showUnauthorised() {
  unauthorised = true;
  $("connection").className = "dot off";
  $("connection").textContent = "unauthorised";
  const notice = $("auth-notice");
  notice.textContent = token
    ? "The API token in this page's address was refused."
    : "This service needs its API token: open this page as /?token=<your API token>.";
  notice.hidden = false;
}

async function checkAccess() {
  const response = await fetch("/v1/stats?window_s=10", { headers: authHeaders });
  if (response.status === 401) showUnauthorised();
  return !unauthorised;
}

function connect() {
  if (unauthorised) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/live${query}`);
  ws.onopen = () => { $("connection").className = "dot on"; $("connection").textContent = "live"; };
  ws.onclose = () => {
    if (unauthorised) return;
    $("connection").className = "dot off"; $("connection").textContent = "reconnecting";
    setTimeout(async () => { if (await checkAccess()) connect(); }, 1000);
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
    history.push({ p50: delivery.p50, p90: delivery.p90, p99: delivery.p99 });
    if (history.length > HISTORY) history.shift();
    $("latency-now").textContent =
      `now: p50 ${delivery.p50} ms · p90 ${delivery.p90} ms · p99 ${delivery.p99} ms · max ${delivery.max} ms (${delivery.count} deliveries)`;
    drawChart();
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
    body.append(row);
  }
}

async function refreshBreakdown() {
  if (breakdownBy === "domain") return;
  const wanted = breakdownBy;
  try {
    const response = await fetch("/v1/stats?by=" + encodeURIComponent(wanted), { headers: authHeaders });
    if (!response.ok) return;
    const body = await response.json();
    if (breakdownBy === wanted) showBreakdown(body.by.groups);
  } catch (error) { /* next poll */ }
}

// Ninety days of daily figures against SES's review thresholds.
const TREND_DAYS = 90;
const TREND_POLL_MS = 60000;
const SVG = "http://www.w3.org/2000/svg";

function polyline(svg, points, colour, dashed) {
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", colour);
  line.setAttribute("stroke-width", "2");
  if (dashed) line.setAttribute("stroke-dasharray", "6 4");
  svg.append(line);
}

function drawTrend(svg, days, series, threshold, label) {
  // series: [[colour, day -> value or null]]; x is the day's place in the 90.
  svg.replaceChildren();
  const values = series.flatMap(([, value]) => days.map(value)).filter((v) => v !== null);
  const max = Math.max(threshold === null ? 0 : threshold * 1.5, ...values, 1e-9);
  const top = document.createElementNS(SVG, "text");
  top.setAttribute("x", "4");
  top.setAttribute("y", "12");
  top.setAttribute("fill", "#8b949e");
  top.setAttribute("font-size", "11");
  top.textContent = "top " + label(max);
  svg.append(top);
  const x = (i) => (i / (TREND_DAYS - 1)) * 600;
  const y = (v) => 135 - (v / max) * 125;
  if (threshold !== null) polyline(svg, [[0, y(threshold)], [600, y(threshold)]], "#8b949e", true);
  for (const [colour, value] of series) {
    const points = days.map((day, i) => [i, value(day)]).filter(([, v]) => v !== null);
    polyline(svg, points.map(([i, v]) => [x(i), y(v)]), colour, false);
  }
}

async function refreshTrend() {
  const until = new Date();
  const start = new Date(until.getTime() - (TREND_DAYS - 1) * 86400000);
  start.setUTCHours(0, 0, 0, 0);
  const params = new URLSearchParams({ step: "day", since: start.toISOString(), until: until.toISOString() });
  try {
    const response = await fetch("/v1/history?" + params, { headers: authHeaders });
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
    const percent = (v) => (v * 100).toFixed(2) + "%";
    const ms = (v) => (v >= 10000 ? (v / 1000).toFixed(0) + " s" : Math.round(v) + " ms");
    drawTrend($("trend-bounce"), days, [["#f85149", rate("bounce")]], 0.05, percent);
    drawTrend($("trend-complaint"), days, [["#d29922", rate("complaint")]], 0.001, percent);
    drawTrend($("trend-latency"), days,
      [["#3fb950", delivery("p50")], ["#d29922", delivery("p90")], ["#f85149", delivery("p99")]], null, ms);
    const seen = days.filter((day) => day !== null);
    const sent = seen.reduce((total, day) => total + day.counts.sent, 0);
    $("trend-summary").textContent = seen.length
      ? `${seen.length} days with mail in the last ${TREND_DAYS}: ${sent.toLocaleString()} recipients sent`
      : `no history in the last ${TREND_DAYS} days yet`;
  } catch (error) { /* next poll */ }
}

function showRate(name, rate, reviewAt) {
  const bar = $(name + "-bar");
  // The bar's full width is twice the review threshold; the marker sits at half.
  const share = rate === null ? 0 : Math.min(1, rate / (2 * reviewAt));
  bar.style.width = (share * 100).toFixed(1) + "%";
  bar.className = rate !== null && rate >= reviewAt ? "over" : "";
  $(name + "-rate").textContent = rate === null ? "–" : (rate * 100).toFixed(2) + "%";
}

function drawChart() {
  const svg = $("latency-chart");
  const max = Math.max(1, ...history.map((h) => h.p99));
  const x = (i) => (history.length < 2 ? 0 : (i / (history.length - 1)) * 600);
  const y = (v) => 175 - (v / max) * 165;
  const colours = { p50: "#3fb950", p90: "#d29922", p99: "#f85149" };
  svg.replaceChildren();
  for (const [key, colour] of Object.entries(colours)) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", history.map((h, i) => `${x(i)},${y(h[key])}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colour);
    line.setAttribute("stroke-width", "2");
    svg.append(line);
  }
}

function showTransitions(items) {
  const body = $("feed").querySelector("tbody");
  for (const item of items) {
    const row = document.createElement("tr");
    row.append(text("td", item.at.slice(11, 23)));
    const cell = document.createElement("td");
    cell.className = "mid";
    const link = text("a", item.message_id.slice(0, 28) + (item.message_id.length > 28 ? "…" : ""));
    link.dataset.messageId = item.message_id;
    link.onclick = () => lookup(item.message_id);
    cell.append(link);
    row.append(cell, text("td", item.recipient));
    row.append(text("td", `${item.from || "new"} → ${item.to}`, "status-" + item.to));
    row.append(text("td", item.latency_ms + " ms"));
    body.prepend(row);
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
        const link = text("a", message.message_id.slice(0, 24) + "…");
        link.dataset.messageId = message.message_id;
        link.onclick = () => lookup(message.message_id);
        item.append(link, ` ${waiting.map((r) => r.address).join(", ")}`);
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
    const response = await fetch("/v1/alerts?limit=1", { headers: authHeaders });
    if (!response.ok) throw new Error("alerts failed: " + response.status);
    const list = $("alerts");
    list.replaceChildren();
    for (const alert of (await response.json()).firing) {
      const item = document.createElement("li");
      item.append(text("span", alert.severity, alert.severity === "critical" ? "status-bounced" : "status-delayed"));
      item.append(` ${alert.title} `);
      const example = (alert.examples || [])[0];
      if (example) {
        const link = text("a", example.message_id.slice(0, 24) + "…");
        link.dataset.messageId = example.message_id;
        link.onclick = () => lookup(example.message_id);
        item.append(link);
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
    const response = await fetch("/readyz", { headers: authHeaders });
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
  const response = await fetch("/v1/messages?" + new URLSearchParams(params), { headers: authHeaders });
  if (!response.ok) throw new Error("search failed: " + response.status);
  return (await response.json()).items;
}

async function lookup(messageId) {
  const panel = $("lookup-panel");
  panel.hidden = false;
  $("lookup-title").textContent = messageId;
  const result = $("lookup-result");
  result.replaceChildren(text("p", "loading…", "muted"));
  const response = await fetch("/v1/messages/" + encodeURIComponent(messageId), { headers: authHeaders });
  if (!response.ok) {
    if (response.status === 401) showUnauthorised();
    const reason = { 404: "unknown message id", 401: "unauthorised: the API token is missing or wrong" }[response.status];
    result.replaceChildren(text("p", reason || "error " + response.status, "status-bounced"));
    return;
  }
  const message = await response.json();
  const summary = text("p", "");
  summary.append(text("strong", message.status, "status-" + message.status));
  summary.append(` · sent ${message.sent_at || "?"} · ${message.subject || ""}${message.overdue ? " · OVERDUE" : ""}`);
  summary.id = "lookup-status";
  const recipients = document.createElement("table");
  recipients.append(headerRow(["recipient", "status", "delivered at", "latency"]));
  for (const r of message.recipients) {
    const row = document.createElement("tr");
    row.append(text("td", r.address), text("td", r.status, "status-" + r.status), text("td", r.delivered_at || "–"));
    row.append(text("td", r.latency_ms.send_to_delivery !== undefined ? r.latency_ms.send_to_delivery + " ms" : "–"));
    recipients.append(row);
  }
  const timeline = document.createElement("table");
  timeline.append(headerRow(["at", "event", "recipients"]));
  for (const e of message.events) {
    const row = document.createElement("tr");
    row.append(text("td", e.at), text("td", e.type), text("td", e.recipients.join(", ")));
    timeline.append(row);
  }
  result.replaceChildren(summary, recipients, text("h2", "Timeline"), timeline);
}

function headerRow(names) {
  const row = document.createElement("tr");
  for (const name of names) row.append(text("th", name));
  return row;
}

// An address in the lookup box shows that recipient's profile instead.
async function lookupRecipient(address) {
  $("lookup-panel").hidden = false;
  $("lookup-title").textContent = address;
  const result = $("lookup-result");
  result.replaceChildren(text("p", "loading…", "muted"));
  const response = await fetch("/v1/recipients/" + encodeURIComponent(address), { headers: authHeaders });
  if (!response.ok) {
    if (response.status === 401) showUnauthorised();
    const reason = { 404: "no kept message to this address" }[response.status];
    result.replaceChildren(text("p", reason || "error " + response.status, "status-bounced"));
    return;
  }
  const body = await response.json();
  const summary = text("p", "");
  summary.id = "recipient-summary";
  summary.append(`${body.messages} message(s)${body.complete ? "" : " (the newest)"} from ${body.first_sent_at} to ${body.last_sent_at} · last: `);
  summary.append(text("strong", body.last_outcome.status, "status-" + body.last_outcome.status));
  const suppressed = text("p", body.suppressed
    ? `Unsafe to mail again: ${body.suppressed.reason} since ${body.suppressed.since}`
    : "Safe to mail: no permanent bounce or complaint kept", body.suppressed ? "status-bounced" : "status-delivered");
  suppressed.id = "recipient-suppressed";
  const counts = document.createElement("table");
  counts.append(headerRow(Object.keys(body.status_counts)));
  const row = document.createElement("tr");
  for (const n of Object.values(body.status_counts)) row.append(text("td", String(n)));
  counts.append(row);
  const recent = document.createElement("table");
  recent.append(headerRow(["sent", "message", "status"]));
  for (const m of body.recent) {
    const line = document.createElement("tr");
    const cell = document.createElement("td");
    cell.className = "mid";
    const link = text("a", m.message_id);
    link.dataset.messageId = m.message_id;
    link.onclick = () => lookup(m.message_id);
    cell.append(link);
    const mine = m.recipients.find((r) => r.address === body.address);
    line.append(text("td", m.sent_at || "–"), cell, text("td", mine ? mine.status : m.status));
    recent.append(line);
  }
  result.replaceChildren(summary, suppressed, counts, text("h2", "Recent messages"), recent);
}

$("lookup-form").onsubmit = (event) => {
  event.preventDefault();
  const id = $("lookup-id").value.trim();
  if (id.includes("@")) lookupRecipient(id);
  else if (id) lookup(id);
};
// Alert links open the page on one message: /?message=<id>.
const linked = new URLSearchParams(location.search).get("message");
if (linked) {
  $("lookup-id").value = linked;
  lookup(linked);
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
