// payguard dashboard, shared pieces: DOM helpers, formatting, the API client, banners,
// panels and forms. Vanilla ES modules, no build step, no third-party code.
// Every API-provided string reaches the page through textContent / DOM nodes, never
// innerHTML, so markup in a product name, user name or refund reason shows as text.

export const REFRESH_MS = 5000;

export const state = {
  // The bearer token lives only in this module's memory: never in localStorage,
  // sessionStorage or a cookie, so no other page of this origin (e.g. the simulator's
  // /sim pages) can read it. A reload asks for it again (docs/dashboard.md).
  token: null,
  role: null,          // "admin" | "user"
  me: null,
  paused: false,
  timer: null,
  refreshing: false,
  again: false,        // a refresh was asked for while one was running
  loaders: [],         // functions re-run on every refresh
  busy: new Set(),     // in-flight actions ("buy:<id>", "cancel:<id>", ...): their buttons stay disabled
  entryCursor: null,   // null = newest page
  entryStack: [],      // cursors of the newer pages, for "Newer"
  purchaseFilter: "",
  stuckOlderThan: 3600,
  classRep: {},        // program id -> checkbox state, kept across re-renders
  currency: null,      // the user's wallet currency, once known
};

/** Set by the session module: what a 401 does (sign out and say why). */
export const hooks = { onUnauthorized: () => {} };

// ---------------------------------------------------------------- DOM helpers

export const $ = (id) => document.getElementById(id);

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

export function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
}

export function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c)); // strings become text nodes
  }
}

export const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  appendAll(el, children);
  return el;
}

export function table(headers, rows, { empty = "Nothing here yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted empty", text: empty });
  return h("div", { class: "table-wrap" },
    h("table", null,
      h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", null, rows.map((cells) => h("tr", null, cells.map((c) =>
        h("td", { class: c instanceof HTMLButtonElement ? "act" : null }, c)))))));
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}`, text });
}

export function stat(label, value, extraClass) {
  return h("div", { class: `stat ${extraClass || ""}` },
    h("div", { class: "stat-value", text: value }),
    h("div", { class: "stat-label", text: label }));
}

export function card(title, { wide = false, id = null, tools = null, note = null } = {}) {
  const body = h("div", { class: "card-body" }, h("p", { class: "muted", text: "Loading…" }));
  const el = h("section", { class: `card${wide ? " wide" : ""}`, id },
    h("div", { class: "card-head" }, h("h2", { text: title }), tools),
    note ? h("p", { class: "muted note", text: note }) : null,
    body);
  return { el, body };
}

// ---------------------------------------------------------------- formatting

export const digitCache = new Map();
export function currencyDigits(currency) {
  const cur = (currency || "USD").toUpperCase();
  if (!digitCache.has(cur)) {
    let d = 2;
    try {
      d = new Intl.NumberFormat("en-US", { style: "currency", currency: cur })
        .resolvedOptions().maximumFractionDigits;
    } catch { /* unknown code: assume cents */ }
    digitCache.set(cur, d);
  }
  return digitCache.get(cur);
}

/** Integer minor units -> "$123.45", "¥1,500", "€0.99". */
export function formatMoney(amount, currency) {
  if (amount === null || amount === undefined || amount === "") return "—";
  const cur = (currency || "USD").toUpperCase();
  const digits = currencyDigits(cur);
  const major = Number(amount) / 10 ** digits;
  try {
    return new Intl.NumberFormat("en-US", {
      style: "currency", currency: cur,
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    }).format(major);
  } catch {
    return `${major.toFixed(digits)} ${cur}`;
  }
}

export function formatSigned(amount, currency) {
  const n = Number(amount);
  return (n > 0 ? "+" : "") + formatMoney(n, currency);
}

export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function formatAge(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "—";
  let sec = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (sec < 90) return `${sec}s`;
  const min = Math.round(sec / 60);
  if (min < 90) return `${min}m`;
  const hrs = Math.round(min / 60);
  return hrs < 48 ? `${hrs}h` : `${Math.round(hrs / 24)}d`;
}

export function formatMs(v) {
  if (v === null || v === undefined) return "—";
  const n = Number(v);
  return Number.isFinite(n) ? `${n < 10 ? n.toFixed(2) : n.toFixed(0)} ms` : String(v);
}

export function shortId(id) {
  const t = String(id ?? "");
  return t.length > 14 ? `${t.slice(0, 6)}…${t.slice(-6)}` : t;
}

export const STATUS_KIND = {
  completed: "ok", pending: "warn", failed: "bad", canceled: "muted",
  expired: "muted", refunded: "info",
};

// ---------------------------------------------------------------- API

export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem && typeof problem === "object" ? problem : {};
    super(p.detail || p.title || `HTTP ${status}`);
    this.status = status;
    this.code = p.code || `HTTP_${status}`;
    this.title = p.title || `HTTP ${status}`;
    this.detail = p.detail || "";
    this.errors = Array.isArray(p.errors) ? p.errors : [];
  }
  /** The route itself is missing: a feature this server does not implement (yet). */
  get missingEndpoint() {
    return this.status === 405 || (this.status === 404 && /no such endpoint/i.test(this.detail));
  }
}

export function newIdempotencyKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One API call. Every POST carries a fresh Idempotency-Key, minted once per user action and
 * reused for its retries: a lost response or a 409 REQUEST_IN_PROGRESS is retried with the
 * same key, so the server applies the action at most once.
 */
export async function api(method, path, { body, token = state.token, key, text = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json, application/problem+json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "POST") headers["Idempotency-Key"] = key || newIdempotencyKey();
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) init.body = JSON.stringify(body);

  const attempts = method === "POST" ? 3 : 1;
  for (let attempt = 1; ; attempt++) {
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      if (attempt < attempts) { await sleep(500 * attempt); continue; }
      throw new ApiError(0, { code: "NETWORK_ERROR", title: "Network error",
                              detail: "the server could not be reached" });
    }
    const raw = await res.text();
    if (res.ok && text) return raw;
    let data = null;
    if (raw) {
      try { data = JSON.parse(raw); } catch { data = null; }
    }
    if (res.ok) return data;
    const error = new ApiError(res.status, data || { detail: raw.slice(0, 200) });
    if (error.code === "REQUEST_IN_PROGRESS" && attempt < attempts) {
      const wait = Number(res.headers.get("Retry-After")) || 1;
      await sleep(Math.min(wait, 5) * 1000);
      continue;
    }
    throw error;
  }
}

// ---------------------------------------------------------------- banner / notices

export function describe(err) {
  if (err instanceof ApiError) {
    let text = `${err.title} — ${err.detail || "no detail"} (${err.code})`;
    if (err.errors.length) {
      text += ": " + err.errors.map((e) => `${[].concat(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    }
    return text;
  }
  return `Error — ${err && err.message ? err.message : String(err)} (CLIENT_ERROR)`;
}

export function showError(err) {
  showBanner(describe(err), "error");
}

export function showNotice(...content) {
  showBanner(content, "ok");
}

export function showBanner(content, kind) {
  const banner = $("banner");
  banner.className = `banner ${kind}`;
  $("banner-text").replaceChildren(...[].concat(content).map((c) => (c instanceof Node ? c : String(c))));
  banner.hidden = false;
}

export function hideBanner() {
  $("banner").hidden = true;
}

export function notAvailable() {
  return h("p", { class: "muted unavailable", text: "Not available on this server." });
}

/** Run a panel loader: render its result, or "not available", or an inline failure. */
export async function fill(body, load) {
  try {
    const content = await load();
    body.replaceChildren(...[].concat(content));
  } catch (err) {
    if (err instanceof ApiError && err.missingEndpoint) {
      body.replaceChildren(notAvailable());
    } else {
      body.replaceChildren(h("p", { class: "inline-error", text: describe(err) }));
      if (err instanceof ApiError && err.status === 401) hooks.onUnauthorized(err);
    }
  }
}

/** Disable the button while the action runs; one click is one request. */
export async function act(button, busyKey, action) {
  if (state.busy.has(busyKey)) return;
  state.busy.add(busyKey);
  const label = button.textContent;
  button.disabled = true;
  button.classList.add("working");
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError && err.missingEndpoint) {
      showBanner("Not available on this server — this server does not implement that action yet.", "error");
    } else {
      showError(err);
    }
  } finally {
    state.busy.delete(busyKey);
    button.classList.remove("working");
    button.textContent = label;
    button.disabled = false;
    refresh();
  }
}

export function startTimer() {
  stopTimer();
  state.timer = setInterval(() => {
    if (!state.paused && !document.hidden) refresh();
  }, REFRESH_MS);
}

export function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

export async function refresh() {
  if (!state.token) return;
  if (state.refreshing) { state.again = true; return; }  // e.g. a new tab's panels
  state.refreshing = true;
  try {
    do {
      state.again = false;
      await Promise.allSettled(state.loaders.map((load) => load()));
    } while (state.again && state.token);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } finally {
    state.refreshing = false;
  }
}

export function addPanel(grid, title, load, options) {
  const { el, body } = card(title, options);
  grid.append(el);
  const run = () => fill(body, load);
  state.loaders.push(run);
  return { el, body, run };
}
// ---- forms

export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "label", text: label }), input,
    hint ? h("span", { class: "hint" }, hint) : null);
}

export function inputEl(name, props) {
  return h("input", { name, autocomplete: "off", spellcheck: "false", ...props });
}

/** An integer minor-units input with a live "= $12.34" preview using the form's currency. */
export function moneyInput(form, name, { required = true, signed = false, currencyName = "currency" } = {}) {
  const hint = h("span", { class: "preview" });
  const input = inputEl(name, {
    type: "text", inputmode: "numeric", required, placeholder: signed ? "e.g. 5000 or -2500" : "e.g. 1500",
    pattern: signed ? "-?[0-9]+" : "[0-9]+", title: "integer minor units (cents)",
  });
  const update = () => {
    const cur = (form.elements[currencyName]?.value || "").trim() || "USD";
    hint.textContent = /^-?\d+$/.test(input.value.trim()) ? `= ${formatMoney(Number(input.value), cur)}` : "minor units (cents)";
  };
  input.addEventListener("input", update);
  form.addEventListener("input", (e) => { if (e.target === form || e.target?.name === currencyName) update(); });
  queueMicrotask(update);
  return { input, hint };
}

export function intValue(form, name, { required = true, min = null } = {}) {
  const raw = String(form.elements[name].value || "").trim();
  if (!raw && !required) return undefined;
  if (!/^-?\d+$/.test(raw)) throw new Error(`${name} must be a whole number (minor units, no decimals)`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} is too large`);
  if (min !== null && n < min) throw new Error(`${name} must be at least ${min}`);
  return n;
}

export function textValue(form, name) {
  const v = String(form.elements[name].value || "").trim();
  return v || undefined;
}

export function linesValue(form, name) {
  return String(form.elements[name].value || "").split("\n").map((x) => x.trim()).filter(Boolean);
}

/** "Idempotency-Key …": shown under every operator action's result, so a retry with the
 * same key (curl, a script) can be matched to what the dashboard did. */
export function keyNote(key) {
  return h("p", { class: "muted small key-note" }, "Idempotency-Key ", h("code", { text: key }));
}

export function formCard(title, build, submitLabel, submit, note) {
  const { el, body } = card(title, { note });
  const form = h("form", { class: "form", novalidate: true });
  const result = h("div", { class: "result" });
  const button = h("button", { type: "submit", text: submitLabel });
  appendAll(form, [build(form), h("div", { class: "actions" }, button)]);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    act(button, `form:${title}`, async () => {
      let body;
      try {
        body = submit.body(form);
      } catch (err) {
        throw new ApiError(0, { code: "INVALID_INPUT", title: "Invalid input", detail: err.message });
      }
      const key = newIdempotencyKey();
      const r = await api("POST", submit.path(form), { body, key });
      result.replaceChildren(...[].concat(submit.render(r, form)), keyNote(key));
      if (submit.reset !== false) form.reset();
      form.dispatchEvent(new Event("input"));
    });
  });
  body.replaceChildren(form, result);
  return el;
}