// The search view: the API's message search (/v1/messages) with every filter it
// takes, paged, each recipient with its diagnosis code, and the export of the same
// query. Opened by its own address (/?search=1&status=bounced...), by a status
// counter or a breakdown row of the live page.
"use strict";

import { api } from "./api.js";
import { el, headerRow, text, viewLink, when, scrollBox } from "./dom.js";

const STATUSES = ["sent", "delayed", "delivered", "bounced", "complained", "rejected", "rendering_failed"];
const BOUNCE_TYPES = ["Permanent", "Transient", "Undetermined"];
// The filters, as the API names them: [name, label, kind].
const FILTERS = [
  ["status", "status", STATUSES],
  ["recipient", "recipient", "text"],
  ["since", "sent from (UTC)", "text"],
  ["until", "sent before (UTC)", "text"],
  ["configuration_set", "configuration set", "text"],
  ["identity", "identity", "text"],
  ["provider", "provider", "text"],
  ["domain", "recipient domain", "text"],
  ["tag", "tag (NAME:VALUE)", "text"],
  ["bounce_type", "bounce type", BOUNCE_TYPES],
];
export const SEARCH_FILTERS = FILTERS.map(([name]) => name);
const PAGE = 50;

/** The search's own address for `filters` ({name: value}). */
export function searchHref(filters) {
  const params = new URLSearchParams({ search: "1" });
  for (const name of SEARCH_FILTERS) if (filters[name]) params.set(name, filters[name]);
  return "/?" + params.toString();
}

/** The API query of the filters in `params` (URLSearchParams), plus `extra`. */
function apiQuery(params, extra) {
  const query = new URLSearchParams();
  for (const name of SEARCH_FILTERS) {
    const value = (params.get(name) || "").trim();
    if (value) query.set(name, value);
  }
  for (const [name, value] of Object.entries(extra || {})) query.set(name, value);
  return query;
}

function field(name, label, kind, value) {
  const id = "search-" + name;
  const labelEl = text("label", label);
  labelEl.htmlFor = id;
  let input;
  if (Array.isArray(kind)) {
    input = document.createElement("select");
    input.append(new Option("any", ""), ...kind.map((option) => new Option(option, option)));
  } else {
    input = document.createElement("input");
    input.type = "text";
    input.autocomplete = "off";
    if (name === "since" || name === "until") input.placeholder = "2026-12-01T00:00:00Z";
    if (name === "tag") input.placeholder = "campaign:spring";
  }
  input.id = id;
  input.name = name;
  input.value = value || "";
  return el("div", "search-field", labelEl, input);
}

/** Renders the search the address names into `view`; `ctx.openSearch(filters)`
 * searches again, `ctx.openMessage(id)` opens a result. */
export async function showSearch(params, view, ctx) {
  view.title.textContent = "";
  const form = el("form", "search-form");
  form.id = "search-form";
  for (const [name, label, kind] of FILTERS) form.append(field(name, label, kind, params.get(name)));
  const submit = text("button", "Search");
  submit.type = "submit";
  form.append(el("div", "search-field", submit));
  form.onsubmit = (event) => {
    event.preventDefault();
    const filters = {};
    for (const name of SEARCH_FILTERS) filters[name] = form.elements[name].value.trim();
    ctx.openSearch(filters);
  };
  const exports = el("p", "muted");
  exports.id = "search-export";
  exports.append("Export every match: ");
  for (const format of ["csv", "ndjson"]) {
    const link = text("a", format.toUpperCase());
    link.href = "/v1/messages?" + apiQuery(params, { format }).toString();
    link.download = `ses-tracker-search.${format}`;
    link.className = "export-" + format;
    exports.append(link, " ");
  }
  const results = scrollBox();
  results.id = "search-results";
  const more = text("button", "More");
  more.id = "search-more";
  more.type = "button";
  more.hidden = true;
  view.body.replaceChildren(form, exports, results, more);

  const table = document.createElement("table");
  table.append(headerRow(["sent", "message", "status", "recipients (diagnosis)", "configuration set", "subject"]));
  results.replaceChildren(table);
  let cursor = null;
  let shown = 0;
  const load = async () => {
    more.disabled = true;
    const query = apiQuery(params, { limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    const response = await api("/v1/messages?" + query.toString());
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      results.append(text("p", `Search refused: ${body.error || "error " + response.status}`, "status-bounced"));
      more.hidden = true;
      return;
    }
    const page = await response.json();
    for (const item of page.items) table.append(resultRow(item, ctx));
    shown += page.items.length;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    const count = $count(results);
    count.textContent = shown ? `${shown} message(s)${cursor ? " so far" : ""}` : "no message matches";
  };
  more.onclick = load;
  await load();
}

function $count(results) {
  let count = results.querySelector(".search-count");
  if (!count) {
    count = text("p", "", "muted search-count");
    results.prepend(count);
  }
  return count;
}

function resultRow(item, ctx) {
  const row = document.createElement("tr");
  const link = viewLink(item.message_id, "/?message=" + encodeURIComponent(item.message_id),
    () => ctx.openMessage(item.message_id), { messageId: item.message_id });
  const recipients = el("td");
  for (const r of item.recipients) {
    recipients.append(el("div", null, text("span", r.address), " ",
      text("span", r.status, "status-" + r.status), " ", text("code", r.diagnosis, "diagnosis-code")));
  }
  row.append(text("td", when(item.sent_at)), el("td", "mid", link),
    text("td", item.status, "status-" + item.status), recipients,
    text("td", item.configuration_set || "–"), text("td", item.subject || ""));
  return row;
}
