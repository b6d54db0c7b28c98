// Two list views the API has and the live page only glimpses: the suppression list
// (/?suppressions=1&reason=) and alert history (/?alerts=1).
"use strict";

import { api } from "./api.js";
import { el, headerRow, text, viewLink, when, scrollBox } from "./dom.js";
import { removeSuppressionButton } from "./message.js";

const PAGE = 100;

/** A time the API gives as ISO text or epoch ms, as the page shows times. */
function at(value) {
  if (value === null || value === undefined) return "–";
  return when(typeof value === "number" ? new Date(value).toISOString() : value);
}

function messageCell(messageId, ctx) {
  if (!messageId) return text("td", "–");
  return el("td", "mid", viewLink(messageId, "/?message=" + encodeURIComponent(messageId),
    () => ctx.openMessage(messageId), { messageId }));
}

function recipientCell(address, ctx) {
  return el("td", "mid", viewLink(address, "/?recipient=" + encodeURIComponent(address),
    () => ctx.openRecipient(address)));
}

/** The suppression list, newest first, filtered by reason; a session that may
 * write gets a remove button (with a confirmation) on each line. */
export async function showSuppressions(params, view, ctx) {
  view.title.textContent = "";
  const reason = params.get("reason") || "";
  const filter = document.createElement("select");
  filter.id = "suppressions-reason";
  filter.append(new Option("any reason", ""), new Option("bounce", "bounce"), new Option("complaint", "complaint"));
  filter.value = reason;
  filter.onchange = () => ctx.go(filter.value ? `/?suppressions=1&reason=${filter.value}` : "/?suppressions=1");
  const label = text("label", "Reason ");
  label.htmlFor = filter.id;
  const csv = text("a", "CSV");
  csv.href = "/v1/suppressions?format=csv" + (reason ? "&reason=" + reason : "");
  csv.download = "ses-tracker-suppressions.csv";
  csv.id = "suppressions-csv";
  const count = text("p", "loading…", "muted");
  count.id = "suppressions-count";
  const table = document.createElement("table");
  table.id = "suppressions";
  const columns = ["address", "reason", "subtype", "since", "message"];
  table.append(headerRow(ctx.canWrite ? [...columns, "action"] : columns));
  const more = text("button", "More");
  more.type = "button";
  more.hidden = true;
  view.body.replaceChildren(el("p", null, label, filter, " · export: ", csv), count, scrollBox(table), more);
  let cursor = null;
  let shown = 0;
  const load = async () => {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (reason) query.set("reason", reason);
    if (cursor) query.set("cursor", cursor);
    const response = await api("/v1/suppressions?" + query.toString());
    if (!response.ok) {
      count.textContent = "error " + response.status;
      return;
    }
    const page = await response.json();
    for (const item of page.items) {
      const row = document.createElement("tr");
      row.append(recipientCell(item.address, ctx), text("td", item.reason, "status-bounced"),
        text("td", item.subtype || "–"), text("td", at(item.since)), messageCell(item.message_id, ctx));
      if (ctx.canWrite) {
        const cell = document.createElement("td");
        cell.append(removeSuppressionButton(item.address, cell));
        row.append(cell);
      }
      table.append(row);
    }
    shown += page.items.length;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    count.textContent = shown ? `${shown} address(es)${cursor ? " so far" : ""}` : "nothing suppressed";
  };
  more.onclick = load;
  await load();
}

/** What fires now, then the notices sent (fired, repeated, resolved), newest
 * first, each with its figures and example messages. */
export async function showAlerts(params, view, ctx) {
  view.title.textContent = "";
  view.body.replaceChildren(text("p", "loading…", "muted"));
  const response = await api("/v1/alerts?limit=200");
  if (!response.ok) {
    view.body.replaceChildren(text("p", "error " + response.status, "status-bounced"));
    return;
  }
  const body = await response.json();
  const firing = el("section", "alert-list");
  firing.id = "alerts-firing";
  firing.append(text("h3", "Firing now"));
  for (const alert of body.firing) firing.append(alertCard(alert, ctx));
  if (!body.firing.length) firing.append(text("p", "nothing firing", "muted"));
  const history = el("section", "alert-list");
  history.id = "alerts-history";
  history.append(text("h3", "Notices sent, newest first"));
  for (const alert of body.items) history.append(alertCard(alert, ctx));
  if (!body.items.length) history.append(text("p", "none kept", "muted"));
  view.body.replaceChildren(firing, history);
}

function alertCard(alert, ctx) {
  const severity = alert.severity === "critical" ? "status-bounced" : "status-delayed";
  const card = el("div", "alert-card");
  const head = el("p", null, text("span", alert.state === "resolved" ? "resolved" : alert.severity,
    alert.state === "resolved" ? "status-delivered" : severity), " ", text("strong", alert.title),
  " ", text("span", `since ${at(alert.started_at)}` + (alert.resolved_at ? `, resolved ${at(alert.resolved_at)}` : ""), "muted"));
  card.append(head, text("p", alert.summary));
  const figures = Object.entries(alert.figures || {});
  if (figures.length) {
    const list = el("dl", "facts");
    for (const [name, value] of figures) list.append(text("dt", name), text("dd", value));
    card.append(list);
  }
  if ((alert.examples || []).length) {
    const table = document.createElement("table");
    table.append(headerRow(["example message", "recipient", "status", "diagnosis"]));
    for (const example of alert.examples) {
      const row = document.createElement("tr");
      row.append(messageCell(example.message_id, ctx),
        example.recipient ? recipientCell(example.recipient, ctx) : text("td", "–"),
        text("td", example.detail || "–"),
        text("td", example.diagnosis ? example.diagnosis.code : "–"));
      table.append(row);
    }
    card.append(scrollBox(table));
  }
  return card;
}
