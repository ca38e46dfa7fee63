// SPDX-License-Identifier: Apache-2.0
// The dashboard's JSON API (docs/dashboard-api.md): GET and POST with the
// session's CSRF token, errors as ApiError with the server's stable code,
// and the message a person reads for each code, in their language.

import {has, t} from "./i18n.js";

let csrfToken = null;

/** The session's CSRF token (from GET /api/me); every POST carries it as X-CSRF-Token. */
export function setCsrf(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** Where the login page sends someone back to: this page, as a local path. */
export function loginUrl() {
  const next = location.pathname + location.search;
  return `/login?next=${encodeURIComponent(next)}`;
}

async function errorFrom(response) {
  let code = `http.${response.status}`;
  let message = "";
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.code === "string") {
      code = body.error.code;
      message = String(body.error.message || "");
    }
  } catch {
    // Not JSON (a proxy's page): the status code is what we have.
  }
  return new ApiError(response.status, code, message);
}

async function send(method, path, body) {
  const headers = {"Accept": "application/json"};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (csrfToken) {
      headers["X-CSRF-Token"] = csrfToken;
    }
  }
  let response;
  try {
    response = await fetch(path, {method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body)});
  } catch {
    throw new ApiError(0, "network", "");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (error.code === "auth.required") {
      // The session ended (idle, logged out elsewhere): log in again and come back here.
      location.assign(loginUrl());
    }
    throw error;
  }
  return response.json();
}

/** GET ``path`` → parsed JSON, or ApiError. */
export function get(path) {
  return send("GET", path);
}

/** POST ``body`` as JSON with the CSRF token → parsed JSON, or ApiError. */
export function post(path, body) {
  return send("POST", path, body ?? {});
}

/** POST with no JSON answer expected (logout): true when the server took it. */
export async function postForm(path, fields = {}) {
  const headers = {"Content-Type": "application/x-www-form-urlencoded"};
  if (csrfToken) {
    headers["X-CSRF-Token"] = csrfToken;
  }
  const response = await fetch(path, {method: "POST", headers, credentials: "same-origin", redirect: "manual",
    body: new URLSearchParams(fields).toString()});
  if (response.type === "opaqueredirect" || response.ok) {
    return true;
  }
  throw await errorFrom(response);
}

/** What a person reads for ``error`` (an ApiError or anything thrown). */
export function errorText(error) {
  if (error instanceof ApiError) {
    if (has(`error.${error.code}`)) {
      return t(`error.${error.code}`);
    }
    return t("error.other", {status: error.status, code: error.code});
  }
  return t("error.network");
}
