// The page's entry: sign-in first, then the live dashboard, and the views a link
// or a click opens in place (/?message=<id>, /?recipient=<address>) with the
// history API, so an address can be shared, reloaded and gone back from.
"use strict";

import { whenUnauthorised } from "./api.js";
import { startDashboard, stopLive } from "./app.js";
import { $ } from "./dom.js";
import { showMessage } from "./message.js";
import { showRecipient } from "./recipient.js";
import { showAlerts, showSuppressions } from "./lists.js";
import { searchHref, showSearch } from "./search.js";
import { askForToken, signIn, signOut, takeTokenFromAddress, whoAmI } from "./session.js";

// Before anything else: a token in the address (an old bookmark, a hand-made link)
// leaves it now, and is only ever posted to /v1/session.
const linkToken = takeTokenFromAddress();

const view = { panel: $("lookup-panel"), title: $("lookup-title"), body: $("lookup-result") };
const ctx = {
  canWrite: false,
  openMessage: (id) => open("message", id),
  openRecipient: (a) => open("recipient", a),
  openSearch: (filters) => go(searchHref(filters)),
  go: (href) => go(href),
};
// The list views, by the parameter that names them: [title, renderer].
const LISTS = {
  search: ["Search messages", showSearch],
  suppressions: ["Suppression list", showSuppressions],
  alerts: ["Alerts", showAlerts],
};
let started = false;
let asking = null;

function open(kind, value) {
  go(`/?${kind}=${encodeURIComponent(value)}`);
}

function go(href) {
  history.pushState({ fromPage: true }, "", href);
  route();
}

/** Shows what the address names: a message, a recipient, or the live dashboard. */
function route() {
  const params = new URLSearchParams(location.search);
  const message = params.get("message");
  const recipient = params.get("recipient");
  const list = Object.keys(LISTS).find((name) => params.has(name));
  const viewing = Boolean(message || recipient || list);
  $("dashboard").hidden = viewing;
  view.panel.hidden = !viewing;
  if (!viewing) {
    document.title = "ses-tracker · live";
    return;
  }
  window.scrollTo(0, 0);
  if (list) {
    const [title, show] = LISTS[list];
    $("lookup-kind").textContent = title;
    document.title = `ses-tracker · ${title.toLowerCase()}`;
    show(params, view, ctx);
    return;
  }
  $("lookup-id").value = message || recipient;
  $("lookup-kind").textContent = message ? "Message" : "Recipient";
  document.title = `ses-tracker · ${message ? "message" : "recipient"}`;
  if (message) showMessage(message, view, ctx);
  else showRecipient(recipient, view, ctx);
}

function showAccess(access) {
  ctx.canWrite = access.scope !== "read";
  document.body.classList.toggle("read-only", !ctx.canWrite);
  const badge = $("access");
  badge.hidden = access.kind !== "session";
  badge.textContent = access.scope === "read"
    ? `read-only${access.name ? " · " + access.name : ""}`
    : `signed in${access.name ? " · " + access.name : ""}`;
  $("sign-out").hidden = access.kind !== "session";
}

// A 401 mid-way (the session expired or was revoked): ask once, then start afresh.
whenUnauthorised(() => {
  if (!started || asking) return;
  $("connection").className = "dot off";
  $("connection").textContent = "signed out";
  asking = askForToken("Your session has ended: sign in again.").then(() => location.reload());
});

for (const name of Object.keys(LISTS)) {
  $("open-" + name).onclick = (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    go(`/?${name}=1`);
  };
}

$("sign-out").onclick = async () => {
  stopLive();
  await signOut();
  location.reload();
};

$("back").onclick = () => {
  if (history.state && history.state.fromPage) history.back();
  else {
    history.pushState({}, "", "/");
    route();
  }
};

$("lookup-form").onsubmit = (event) => {
  event.preventDefault();
  const value = $("lookup-id").value.trim();
  if (value) open(value.includes("@") ? "recipient" : "message", value);
};

window.addEventListener("popstate", () => { if (started) route(); });

async function boot() {
  let reason = null;
  if (linkToken !== null) {
    const status = await signIn(linkToken);
    if (status !== 204 && status !== 200) reason = "The token in the link was refused: sign in below.";
  }
  let access = await whoAmI();
  while (access.kind === "signed-out") {
    await askForToken(reason);
    access = await whoAmI();
    reason = "Signed in, but the browser did not keep the session: is the page served over https as its public URL says?";
  }
  showAccess(access);
  $("app").hidden = false;
  started = true;
  route();
  startDashboard(ctx);
}

boot();
