// One sign-in (README, Status page): the token is posted once to /v1/session, which
// answers with an HttpOnly cookie; the page keeps no token (no storage, no address).
"use strict";

import { $ } from "./dom.js";

/**
 * A `?token=` in this page's address, taken out of it at once with replaceState so
 * that the address bar, history and screenshots never keep it. Returns the token.
 */
export function takeTokenFromAddress() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return null;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  return token;
}

/** Opens a session; the answer's status: 204 signed in, 401 refused, 429 too many tries. */
export async function signIn(token) {
  try {
    const response = await fetch("/v1/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    return response.status;
  } catch (error) {
    return 0;
  }
}

export async function signOut() {
  try {
    await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
  } catch (error) {
    // Signed out or not, the page asks for the token again.
  }
}

/**
 * Who this page is: `{kind: "session", scope, name, expires_at}` with a session,
 * `{kind: "open", scope: "write"}` when the service needs no token, or
 * `{kind: "signed-out"}` when it needs one the page has not given.
 */
export async function whoAmI() {
  try {
    const response = await fetch("/v1/session", { credentials: "same-origin" });
    if (response.ok) {
      // expires_at is null for an open service (or a bearer token): nothing to sign out of.
      const body = await response.json();
      return { kind: body.expires_at ? "session" : "open", ...body };
    }
  } catch (error) {
    // Asked again below, through a data route.
  }
  // No session: the service may need none (no API token set).
  try {
    const probe = await fetch("/v1/stats?window_s=10", { credentials: "same-origin" });
    if (probe.status === 401) return { kind: "signed-out" };
  } catch (error) {
    // Unreachable: the page's own calls say so as they fail.
  }
  return { kind: "open", scope: "write" };
}

/** Shows the sign-in form; resolves once a token opened a session. */
export function askForToken(reason) {
  const section = $("signin");
  const form = $("signin-form");
  const input = $("signin-token");
  const message = $("signin-message");
  section.hidden = false;
  message.textContent = reason || "";
  message.hidden = !reason;
  input.value = "";
  input.focus();
  return new Promise((resolve) => {
    form.onsubmit = async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      const button = form.querySelector("button");
      button.disabled = true;
      const status = await signIn(token);
      button.disabled = false;
      input.value = "";
      if (status === 204 || status === 200) {
        section.hidden = true;
        form.onsubmit = null;
        resolve();
        return;
      }
      message.hidden = false;
      message.textContent =
        {
          401: "That token was refused.",
          429: "Too many tries: wait a minute and try again.",
        }[status] || `Sign-in failed (${status ? "error " + status : "no answer"}).`;
    };
  });
}
