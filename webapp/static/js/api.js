// Every call goes to the API with the key from sessionStorage; a 401 forgets the page's data and asks
// for the key again. A key change bumps `generation`, so answers for the previous key are dropped.

import { $ } from "./util.js";

const KEY = "stockq.apiKey";
const forgetters = [];
export const session = { generation: 0 };

export class Unauthorized extends Error {}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
  forget();
}

// Each view registers what to clear when the tenant changes.
export function onForget(fn) {
  forgetters.push(fn);
}

function forget() {
  session.generation += 1;
  for (const fn of forgetters) fn();
}

export function askKey(message) {
  const dialog = $("#key-dialog");
  const error = $("#key-error");
  error.hidden = !message;
  error.textContent = message || "";
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

export function authHeaders(extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

// A 401 for the current key: forget, ask again, and stop the caller.
export function refused() {
  const key = apiKey();
  sessionStorage.removeItem(KEY);
  forget();
  askKey(key ? "The API refused that key (401): enter a valid one." : "This API needs a key.");
  return new Unauthorized("401");
}

export async function api(method, path, body, init = {}) {
  const generation = session.generation;
  const headers = authHeaders(body === undefined ? {} : { "Content-Type": "application/json" });
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), ...init,
  });
  if (generation !== session.generation) throw new Unauthorized("stale");  // the key changed meanwhile
  if (response.status === 401) throw refused();
  return response;
}

export async function json(method, path, body) {
  const response = await api(method, path, body);
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

export async function getOk(path) {
  const { status, data } = await json("GET", path);
  if (status !== 200) throw new Error(errorText(data, status));
  return data;
}

export function errorText(data, status) {
  const error = data && data.error;
  return error ? `${error.code}: ${error.message}` : `HTTP ${status}`;
}
