// A recipient's steps (send, each delay, its outcome) as a waterfall, each step's
// time set against the last hour's p50/p90 of the recipient's provider and of the
// message's configuration set (the per-dimension figures of /v1/stats?by=).
"use strict";

import { duration, el, text, when } from "./dom.js";

const WAITING = new Set(["sent", "delayed"]);

/**
 * The steps of one recipient, in time order: `{kind, label, at, stat}` with `at` in
 * epoch ms and `stat` the latency kind of /v1/stats its time from send compares with.
 * Pure: the message and recipient as the API gives them, and now.
 */
export function recipientSteps(message, recipient, nowMs) {
  const steps = [];
  const sentAt = message.sent_at ? Date.parse(message.sent_at) : null;
  if (sentAt !== null) steps.push({ kind: "send", label: "send", at: sentAt, stat: null });
  for (const delay of recipient.delays || []) {
    steps.push({ kind: "delay", label: "delay · " + (delay.delay_type || "type not given"), at: Date.parse(delay.at), stat: null });
  }
  if (recipient.delivered_at) {
    steps.push({ kind: "delivery", label: "delivery", at: Date.parse(recipient.delivered_at), stat: "send_to_delivery" });
  }
  if (recipient.bounce) {
    const type = [recipient.bounce.type, recipient.bounce.subtype].filter(Boolean).join(" / ");
    steps.push({ kind: "bounce", label: "bounce · " + (type || "type not given"), at: Date.parse(recipient.bounce.at), stat: "send_to_bounce" });
  }
  for (const note of recipient.notes || []) {
    if (note.kind === "auto_reply" && note.bounce) {
      steps.push({ kind: "auto_reply", label: "auto-reply (bounce kept as a note)", at: Date.parse(note.bounce.at), stat: null });
    }
  }
  if (recipient.complaint) {
    steps.push({ kind: "complaint", label: "complaint", at: Date.parse(recipient.complaint.at), stat: "send_to_complaint" });
  }
  const known = steps.filter((step) => !Number.isNaN(step.at));
  // Stable: equal times keep the order above (send, delays, outcome).
  known.sort((a, b) => a.at - b.at);
  // The earliest delay, whatever order they came in, compares with send_to_first_delay.
  const firstDelay = known.find((step) => step.kind === "delay");
  if (firstDelay) firstDelay.stat = "send_to_first_delay";
  if (WAITING.has(recipient.status) && sentAt !== null) {
    known.push({ kind: "waiting", label: "no outcome yet", at: Math.max(nowMs, known.at(-1).at), stat: null });
  }
  const start = known.length ? known[0].at : 0;
  let previous = start;
  return known.map((step) => {
    const shaped = { ...step, fromSend: Math.max(0, step.at - start), took: Math.max(0, step.at - previous) };
    previous = Math.max(previous, step.at);
    return shaped;
  });
}

/** p50/p90 of one latency kind in a /v1/stats group, or null. */
function figures(group, stat) {
  const found = group && group.latency_ms ? group.latency_ms[stat] : null;
  return found && found.count ? found : null;
}

/**
 * The waterfall element. `against` is `[{label, key, group}]`: the provider's and
 * the configuration set's group of the last hour (group null when it had none).
 */
export function waterfall(message, recipient, against, nowMs) {
  const steps = recipientSteps(message, recipient, nowMs);
  const box = el("div", "waterfall");
  if (!message.sent_at) box.append(text("p", "Send time unknown: steps are timed from the first event.", "muted"));
  if (!steps.length) return box;
  const marks = [];
  for (const step of steps) {
    if (!step.stat) continue;
    for (const [i, side] of against.entries()) {
      const figure = figures(side.group, step.stat);
      if (figure) marks.push({ step, side: i, p50: figure.p50, p90: figure.p90 });
    }
  }
  const span = Math.max(1, ...steps.map((s) => s.fromSend), ...marks.map((m) => m.p90)) * 1.04;
  const at = (ms) => ((ms / span) * 100).toFixed(2) + "%";
  for (const step of steps) {
    const row = el("div", "step step-" + step.kind);
    const track = el("div", "track");
    const bar = el("div", "bar");
    bar.style.left = at(step.fromSend - step.took);
    bar.style.width = at(step.took);
    track.append(bar);
    for (const mark of marks.filter((m) => m.step === step)) {
      for (const q of ["p50", "p90"]) {
        const tick = el("i", `mark side-${mark.side} ${q}`);
        tick.style.left = at(mark[q]);
        tick.title = `${against[mark.side].label} ${q}: ${duration(mark[q])}`;
        track.append(tick);
      }
    }
    const time = step.kind === "send" ? when(new Date(step.at).toISOString()) : `+${duration(step.took)} · ${duration(step.fromSend)} from send`;
    row.append(text("span", step.label, "step-label"), track, text("span", time, "step-time"));
    box.append(row);
    if (step.stat) box.append(comparison(step, against));
  }
  const legend = el("p", "legend muted", "Ticks, last hour: ");
  against.forEach((side, i) => legend.append(text("span", "▍" + side.label, "key side-" + i), " "));
  legend.append("(solid p50, dashed p90).");
  if (marks.length) box.append(legend);
  return box;
}

/** "send → bounce 20.0 s · gmail, last hour: p50 18 s, p90 25 s (40) · ..." */
function comparison(step, against) {
  const line = el("p", "compare");
  line.append(text("strong", `send → ${step.kind.replace("_", " ")}${step.kind === "delay" ? " (first)" : ""}: ${duration(step.fromSend)}`));
  for (const side of against) {
    const figure = figures(side.group, step.stat);
    line.append(
      " · ",
      text(
        "span",
        figure
          ? `${side.label}, last hour: p50 ${duration(figure.p50)}, p90 ${duration(figure.p90)} (${figure.count})`
          : `${side.label}: no such step in the last hour`,
        // Past p90 by more than the statistics' own bucket rounding (a few %).
        figure && step.fromSend > figure.p90 * 1.05 ? "slow" : "",
      ),
    );
  }
  return line;
}
