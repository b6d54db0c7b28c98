// DOM and formatting helpers shared by the page's modules. Every value that came
// from outside (an event, a recipient, a sender's tag) reaches the page through
// textContent, never through markup.
"use strict";

export const $ = (id) => document.getElementById(id);

/** An element holding `value` as text, with an optional class. */
export function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value === null || value === undefined ? "" : String(value);
  if (className) el.className = className;
  return el;
}

/** An element with children (nodes or strings, which become text). */
export function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** A box that scrolls what it holds sideways (a wide table on a narrow screen):
 * focusable, so a keyboard can scroll it too. */
export function scrollBox(...children) {
  const box = el("div", "scroll", ...children);
  box.tabIndex = 0;
  return box;
}

export function headerRow(names) {
  const row = document.createElement("tr");
  for (const name of names) row.append(text("th", name));
  return row;
}

/** A <dl> of the given [term, value] pairs, skipping empty values. */
export function facts(pairs, className) {
  const list = el("dl", className || "facts");
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(text("dt", term), value instanceof Node ? el("dd", null, value) : text("dd", value));
  }
  return list;
}

/** "850 ms", "12.3 s", "4 min 5 s", "2.1 h": a duration a person reads at a glance. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  if (ms < 3600000) {
    const minutes = Math.floor(ms / 60000);
    const seconds = Math.round((ms % 60000) / 1000);
    return seconds ? `${minutes} min ${seconds} s` : `${minutes} min`;
  }
  return (ms / 3600000).toFixed(1).replace(/\.0$/, "") + " h";
}

/** "2026-12-04 19:13:11.777 UTC" from the API's ISO time (kept in UTC, as SES's). */
export function when(iso) {
  if (!iso) return "–";
  return iso.replace("T", " ").replace("Z", " UTC");
}

/** A link to a view of the page (a message, a recipient): a real address, so it can
 * be opened in a new tab or shared, opened in place on a plain click. */
export function viewLink(label, href, onOpen, data) {
  const link = text("a", label);
  link.href = href;
  for (const [key, value] of Object.entries(data || {})) link.dataset[key] = value;
  link.onclick = (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    onOpen();
  };
  return link;
}
