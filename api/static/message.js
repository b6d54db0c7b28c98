// The message page (README, Status page): what happened to one message, for each
// recipient the diagnosis first, then everything SES said, the steps against the
// last hour's figures, the message's facts, and the stored events as text.
"use strict";

import { api, getJson } from "./api.js";
import { duration, el, facts, text, viewLink, when, scrollBox } from "./dom.js";
import { waterfall } from "./waterfall.js";

const HOUR_S = 3600;
const DELAY_COLUMNS = ["delay at", "type", "expires", "status", "diagnostic code", "reporting MTA"];

/** The sending domain, as the service reckons it: ses:from-domain, else source's. */
export function identityOf(message) {
  const tag = (message.tags || {})["ses:from-domain"];
  if (tag) return String(Array.isArray(tag) ? tag[0] : tag).toLowerCase();
  const address = String(message.source || "").split("<").pop().replace(">", "").trim();
  const at = address.lastIndexOf("@");
  return at > 0 ? address.slice(at + 1).toLowerCase() : null;
}

const domainOf = (address) => address.slice(address.lastIndexOf("@") + 1).toLowerCase();

/** The stored event of `type` at `at` naming `address` (where SES's extra fields live). */
function eventOf(message, address, type, at) {
  return (message.events || []).find(
    (e) => e.type === type && e.at === at && (e.recipients || []).includes(address),
  ) || {};
}

/** One hour's figures per group of a dimension: key -> group. */
async function hourGroups(dimension) {
  const body = await getJson(`/v1/stats?window_s=${HOUR_S}&by=${encodeURIComponent(dimension)}`);
  const groups = new Map();
  for (const group of (body && body.by && body.by.groups) || []) groups.set(group.key, group);
  return groups;
}

/**
 * Renders message `messageId` into `view` (an object with `title` and `body`
 * elements). `ctx`: `{canWrite, openMessage, openRecipient}`.
 */
export async function showMessage(messageId, view, ctx) {
  view.title.textContent = messageId;
  view.body.replaceChildren(text("p", "loading…", "muted"));
  const [response, byProvider, byConfigurationSet] = await Promise.all([
    api("/v1/messages/" + encodeURIComponent(messageId)),
    hourGroups("provider"),
    hourGroups("configuration_set"),
  ]);
  if (!response.ok) {
    const reason = {
      404: "Unknown message id: no kept message has it (kept for the retention period; check for typos).",
      401: "Sign in to see this message.",
    }[response.status];
    view.body.replaceChildren(text("p", reason || "error " + response.status, "status-bounced"));
    return;
  }
  const message = await response.json();
  // Until the API names each recipient's provider, compare by recipient domain.
  const byDomain = message.recipients.some((r) => !r.provider) ? await hourGroups("domain") : null;
  const now = Date.now();
  const summary = el("p", "message-status");
  summary.id = "lookup-status";
  summary.append(text("strong", message.status, "status-" + message.status));
  summary.append(` · sent ${when(message.sent_at)}`);
  if (message.overdue) summary.append(" · ", text("span", "overdue", "status-bounced"));
  if (message.subject) summary.append(" · ", text("span", message.subject, "subject"));
  const recipients = el("div", "recipients");
  for (const recipient of message.recipients) {
    const side = recipient.provider
      ? { label: "provider " + recipient.provider, key: recipient.provider, group: byProvider.get(recipient.provider) }
      : { label: "domain " + domainOf(recipient.address), key: domainOf(recipient.address), group: byDomain.get(domainOf(recipient.address)) };
    const setSide = {
      label: "configuration set " + (message.configuration_set || "(none)"),
      key: message.configuration_set,
      group: byConfigurationSet.get(message.configuration_set || "(none)"),
    };
    recipients.append(recipientCard(message, recipient, [side, setSide], now, ctx));
  }
  if (message.truncated) {
    recipients.append(text("p", "More recipients than are kept: only the first ones are shown.", "muted"));
  }
  view.body.replaceChildren(
    summary,
    ...(message.notes || []).map((note) => text("p", note, "muted")),
    recipients,
    text("h3", "Message"),
    messageFacts(message),
    storedEvents(message),
  );
}

function recipientCard(message, recipient, against, now, ctx) {
  const card = el("article", "recipient");
  card.dataset.address = recipient.address;
  const head = el("header", "recipient-head");
  head.append(
    text("h3", recipient.address, "address"),
    text("span", recipient.status, "badge status-" + recipient.status),
  );
  if (recipient.overdue) head.append(text("span", "overdue", "badge status-bounced"));
  head.append(
    viewLink("recipient profile", "/?recipient=" + encodeURIComponent(recipient.address),
      () => ctx.openRecipient(recipient.address), { recipient: recipient.address }),
  );
  card.append(head);
  if (recipient.diagnosis) card.append(diagnosis(recipient.diagnosis));
  card.append(text("h4", "What SES said"), sesSaid(message, recipient));
  card.append(text("h4", "Steps"), waterfall(message, recipient, against, now));
  card.append(suppression(recipient, ctx));
  return card;
}

function diagnosis(d) {
  const box = el("div", "diagnosis diagnosis-" + String(d.code || "").split(".")[0]);
  box.append(text("p", d.summary, "diagnosis-summary"));
  if (d.action) box.append(el("p", "diagnosis-action", text("strong", "What to do: "), d.action));
  box.append(text("code", d.code, "diagnosis-code"));
  return box;
}

/** Everything SES said about this recipient, field by field, as text. */
function sesSaid(message, recipient) {
  const box = el("div", "ses-said");
  const { address } = recipient;
  const rows = [];
  if (recipient.delivered_at) {
    const delivery = eventOf(message, address, "delivery", recipient.delivered_at);
    rows.push(
      ["delivered at", when(recipient.delivered_at)],
      ["SMTP response", recipient.smtp_response],
      ["processing time", recipient.latency_ms && recipient.latency_ms.processing_time !== undefined
        ? duration(recipient.latency_ms.processing_time) : null],
      ["remote MTA", delivery.remote_mta_ip],
    );
  }
  const bounce = recipient.bounce;
  if (bounce) rows.push(...bounceRows(bounce, eventOf(message, address, "bounce", bounce.at)));
  for (const note of recipient.notes || []) {
    if (note.kind === "auto_reply" && note.bounce) {
      rows.push(["auto-reply", "a bounce beside the delivery, kept as a note"],
        ...bounceRows(note.bounce, eventOf(message, address, "bounce", note.bounce.at)));
    }
  }
  const complaint = recipient.complaint;
  if (complaint) {
    rows.push(
      ["complained at", when(complaint.at)],
      ["feedback type", complaint.feedback_type || "not given"],
      ["complaint subtype", complaint.subtype],
      ["user agent", complaint.user_agent],
      ["feedback id", complaint.feedback_id],
    );
  }
  for (const event of message.events || []) {
    if (event.type === "reject") rows.push(["rejected at", when(event.at)], ["reject reason", event.reason || "not given"]);
    if (event.type === "rendering_failure") {
      rows.push(["rendering failed at", when(event.at)], ["template", event.template_name],
        ["rendering error", event.error_message || "not given"]);
    }
  }
  rows.push(["opened at", recipient.opened_at && when(recipient.opened_at)],
    ["clicked at", recipient.clicked_at && when(recipient.clicked_at)]);
  const delays = recipient.delays || [];
  if (!rows.some(([, value]) => value) && !delays.length) {
    box.append(text("p", "Nothing yet beyond the send.", "muted"));
  } else {
    box.append(facts(rows));
  }
  if (delays.length) {
    const table = el("table", "delays");
    table.append(el("thead", null, el("tr", null, ...DELAY_COLUMNS.map((h) => text("th", h)))));
    const body = el("tbody");
    for (const delay of delays) {
      const event = eventOf(message, address, "delivery_delay", delay.at);
      const row = el("tr");
      const values = [when(delay.at), delay.delay_type || "not given", when(delay.expiration_time),
        delay.status, delay.diagnostic_code, event.reporting_mta];
      values.forEach((value, i) => {
        const cell = text("td", value || "–");
        cell.dataset.label = DELAY_COLUMNS[i]; // shown beside the value on a narrow screen
        row.append(cell);
      });
      body.append(row);
    }
    table.append(body);
    box.append(scrollBox(table));
  }
  return box;
}

function bounceRows(bounce, event) {
  return [
    ["bounced at", when(bounce.at)],
    ["bounce type", [bounce.type, bounce.subtype].filter(Boolean).join(" / ") || "not given"],
    ["diagnostic code", bounce.diagnostic_code],
    ["status", bounce.status],
    ["action", bounce.action],
    ["reporting MTA", bounce.reporting_mta],
    ["remote MTA", event.remote_mta_ip],
    ["feedback id", bounce.feedback_id],
  ];
}

function suppression(recipient, ctx) {
  const line = el("div", "suppression");
  if (recipient.suppressed === undefined) return line;
  if (!recipient.suppressed) {
    line.append(text("span", "Not suppressed: safe to mail as far as this service knows.", "status-delivered"));
    return line;
  }
  const s = recipient.suppressed;
  line.append(text("span", `Suppressed (${s.reason}) since ${when(s.since)}`, "status-bounced"));
  if (s.message_id) {
    line.append(" by ", viewLink(s.message_id, "/?message=" + encodeURIComponent(s.message_id),
      () => ctx.openMessage(s.message_id), { messageId: s.message_id }));
  }
  if (ctx.canWrite) line.append(" ", removeSuppressionButton(recipient.address, line));
  return line;
}

/** A control that changes state: only ever built for a session that may write. */
export function removeSuppressionButton(address, where) {
  const button = text("button", "Remove from suppression list", "writes remove-suppression");
  button.type = "button";
  button.onclick = async () => {
    if (!confirm(`Make ${address} safe to mail again?`)) return;
    const response = await api("/v1/suppressions/" + encodeURIComponent(address), { method: "DELETE" });
    where.replaceChildren(text("span", response.ok
      ? "Removed from the suppression list." : "Not removed: error " + response.status,
    response.ok ? "status-delivered" : "status-bounced"));
  };
  return button;
}

function messageFacts(message) {
  const tags = el("div", "tags");
  for (const [key, value] of Object.entries(message.tags || {})) {
    tags.append(el("span", "tag", text("span", key, "tag-key"), " ", text("span", Array.isArray(value) ? value.join(", ") : value)));
  }
  return facts([
    ["message id", message.message_id],
    ["status", message.status],
    ["sent at", when(message.sent_at)],
    ["subject", message.subject],
    ["source", message.source],
    ["configuration set", message.configuration_set || "(none)"],
    ["identity", identityOf(message)],
    ["tags", tags.childElementCount ? tags : null],
    ["opened at", message.opened_at && when(message.opened_at)],
    ["clicked at", message.clicked_at && when(message.clicked_at)],
  ], "facts message-facts");
}

/** The stored events, each expandable, as JSON text (never markup). */
function storedEvents(message) {
  const events = message.events || [];
  const box = el("details", "events");
  box.id = "message-events";
  box.append(text("summary", `Stored events (${events.length})`));
  for (const event of events) {
    const item = el("details", "event");
    item.append(text("summary", `${when(event.at)} · ${event.type} · ${(event.recipients || []).join(", ")}`));
    item.append(text("pre", JSON.stringify(event, null, 2)));
    box.append(item);
  }
  return box;
}
