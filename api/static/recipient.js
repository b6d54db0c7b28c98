// The recipient profile: what happened to the mail sent to one address, whether it
// is safe to mail, and (for a session that may write) suppression removal and erasure.
"use strict";

import { api } from "./api.js";
import { el, headerRow, text, viewLink, when, scrollBox } from "./dom.js";
import { removeSuppressionButton } from "./message.js";

/** Renders `address`'s profile into `view`; `ctx`: `{canWrite, openMessage}`. */
export async function showRecipient(address, view, ctx) {
  view.title.textContent = address;
  view.body.replaceChildren(text("p", "loading…", "muted"));
  const response = await api("/v1/recipients/" + encodeURIComponent(address));
  if (!response.ok) {
    const reason = { 404: "no kept message to this address", 401: "Sign in to see this recipient." }[response.status];
    view.body.replaceChildren(text("p", reason || "error " + response.status, "status-bounced"));
    return;
  }
  const body = await response.json();
  const summary = text("p", "");
  summary.id = "recipient-summary";
  summary.append(`${body.messages} message(s)${body.complete === false ? " (the newest)" : ""} from ${when(body.first_sent_at)} to ${when(body.last_sent_at)} · last: `);
  summary.append(text("strong", body.last_outcome.status, "status-" + body.last_outcome.status));
  const suppressed = el("p", body.suppressed ? "status-bounced" : "status-delivered");
  suppressed.id = "recipient-suppressed";
  suppressed.append(body.suppressed
    ? `Unsafe to mail again: ${body.suppressed.reason} since ${when(body.suppressed.since)}`
    : "Safe to mail: no permanent bounce or complaint kept");
  if (body.suppressed && ctx.canWrite) suppressed.append(" ", removeSuppressionButton(body.address, suppressed));
  const counts = document.createElement("table");
  counts.append(headerRow(Object.keys(body.status_counts)));
  const row = document.createElement("tr");
  for (const n of Object.values(body.status_counts)) row.append(text("td", String(n)));
  counts.append(row);
  const recent = document.createElement("table");
  recent.append(headerRow(["sent", "message", "status"]));
  for (const m of body.recent) {
    const line = document.createElement("tr");
    const cell = el("td", "mid", viewLink(m.message_id, "/?message=" + encodeURIComponent(m.message_id),
      () => ctx.openMessage(m.message_id), { messageId: m.message_id }));
    const mine = m.recipients.find((r) => r.address === body.address);
    line.append(text("td", when(m.sent_at)), cell, text("td", mine ? mine.status : m.status));
    recent.append(line);
  }
  const parts = [summary, suppressed, scrollBox(counts), text("h3", "Recent messages"), scrollBox(recent)];
  if (ctx.canWrite) parts.push(eraseControl(body.address));
  view.body.replaceChildren(...parts);
}

/** An erasure runs in the background: its progress, until done (or a minute passes). */
async function followErasure(statusUrl, result) {
  for (let attempt = 0; attempt < 60; attempt++) {
    const response = await api(statusUrl);
    if (response.ok) {
      const job = await response.json();
      if (job.status === "done") {
        result.textContent = `Erased from ${job.messages} message(s).`;
        return;
      }
      result.textContent = `Erasure ${job.status}: ${job.messages} message(s) so far…`;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  result.textContent = "Erasure still running: see " + statusUrl;
}

/** Erasure (a privacy request): a control that changes state, for write sessions only. */
function eraseControl(address) {
  const box = el("div", "danger writes");
  const button = text("button", "Erase this recipient's data", "erase");
  button.id = "erase-recipient";
  button.type = "button";
  const result = text("span", "", "muted");
  button.onclick = async () => {
    if (!confirm(`Erase every kept trace of ${address}? This cannot be undone.`)) return;
    button.disabled = true;
    const response = await api("/v1/recipients/" + encodeURIComponent(address), { method: "DELETE" });
    if (!response.ok) {
      result.textContent = "Not erased: error " + response.status;
      return;
    }
    result.textContent = "Erasure started…";
    followErasure((await response.json()).status_url, result);
  };
  box.append(button, " ", result);
  return box;
}
