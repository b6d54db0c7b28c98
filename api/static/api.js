// Calls to the service's API. After sign-in the session travels as an HttpOnly
// cookie on these same-origin calls, so the page never holds or sends a token.
"use strict";

let onUnauthorised = () => {};

/** Called when the API answers 401: the session expired or was revoked. */
export function whenUnauthorised(handler) {
  onUnauthorised = handler;
}

export async function api(path, init) {
  const response = await fetch(path, { credentials: "same-origin", ...(init || {}) });
  if (response.status === 401) onUnauthorised();
  return response;
}

/** The JSON body of a GET, or null when the answer is not 2xx. */
export async function getJson(path) {
  try {
    const response = await api(path);
    return response.ok ? await response.json() : null;
  } catch (error) {
    return null;
  }
}
