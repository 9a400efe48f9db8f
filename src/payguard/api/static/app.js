// payguard dashboard: vanilla ES module, no build step, no third-party code.
// Every API-provided string reaches the page through textContent / DOM nodes, never innerHTML.

const TOKEN_KEY = "payguard.token";
const REFRESH_MS = 5000;
const CHART_ENTRIES = 200;
const PAGE_SIZE = 10;

const state = {
  token: null,
  role: null,          // "admin" | "user"
  me: null,
  paused: false,
  timer: null,
  refreshing: false,
  loaders: [],         // functions re-run on every refresh
  busy: new Set(),     // in-flight actions ("buy:<id>", "cancel:<id>", ...): their buttons stay disabled
  entryCursor: null,   // null = newest page
  entryStack: [],      // cursors of the newer pages, for "Newer"
  purchaseFilter: "",
  stuckOlderThan: 3600,
  classRep: {},        // program id -> checkbox state, kept across re-renders
  currency: null,      // the user's wallet currency, once known
};

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

function setProps(el, props) {
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

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c)); // strings become text nodes
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  appendAll(el, children);
  return el;
}

function table(headers, rows, { empty = "Nothing here yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted empty", text: empty });
  return h("div", { class: "table-wrap" },
    h("table", null,
      h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", null, rows.map((cells) => h("tr", null, cells.map((c) =>
        h("td", { class: c instanceof HTMLButtonElement ? "act" : null }, c)))))));
}

function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}`, text });
}

function stat(label, value, extraClass) {
  return h("div", { class: `stat ${extraClass || ""}` },
    h("div", { class: "stat-value", text: value }),
    h("div", { class: "stat-label", text: label }));
}

function card(title, { wide = false, id = null, tools = null, note = null } = {}) {
  const body = h("div", { class: "card-body" }, h("p", { class: "muted", text: "Loading…" }));
  const el = h("section", { class: `card${wide ? " wide" : ""}`, id },
    h("div", { class: "card-head" }, h("h2", { text: title }), tools),
    note ? h("p", { class: "muted note", text: note }) : null,
    body);
  return { el, body };
}

// ---------------------------------------------------------------- formatting

const digitCache = new Map();
function currencyDigits(currency) {
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

function formatSigned(amount, currency) {
  const n = Number(amount);
  return (n > 0 ? "+" : "") + formatMoney(n, currency);
}

function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function formatAge(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "—";
  let sec = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (sec < 90) return `${sec}s`;
  const min = Math.round(sec / 60);
  if (min < 90) return `${min}m`;
  const hrs = Math.round(min / 60);
  return hrs < 48 ? `${hrs}h` : `${Math.round(hrs / 24)}d`;
}

function formatMs(v) {
  if (v === null || v === undefined) return "—";
  const n = Number(v);
  return Number.isFinite(n) ? `${n < 10 ? n.toFixed(2) : n.toFixed(0)} ms` : String(v);
}

function shortId(id) {
  const t = String(id ?? "");
  return t.length > 14 ? `${t.slice(0, 6)}…${t.slice(-6)}` : t;
}

const STATUS_KIND = {
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

function newIdempotencyKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One API call. Every POST carries a fresh Idempotency-Key, minted once per user action and
 * reused for its retries: a lost response or a 409 REQUEST_IN_PROGRESS is retried with the
 * same key, so the server applies the action at most once.
 */
async function api(method, path, { body, token = state.token } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "POST") headers["Idempotency-Key"] = newIdempotencyKey();
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
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (res.ok) return data;
    const error = new ApiError(res.status, data || { detail: text.slice(0, 200) });
    if (error.code === "REQUEST_IN_PROGRESS" && attempt < attempts) {
      const wait = Number(res.headers.get("Retry-After")) || 1;
      await sleep(Math.min(wait, 5) * 1000);
      continue;
    }
    throw error;
  }
}

// ---------------------------------------------------------------- banner / notices

function describe(err) {
  if (err instanceof ApiError) {
    let text = `${err.title} — ${err.detail || "no detail"} (${err.code})`;
    if (err.errors.length) {
      text += ": " + err.errors.map((e) => `${[].concat(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    }
    return text;
  }
  return `Error — ${err && err.message ? err.message : String(err)} (CLIENT_ERROR)`;
}

function showError(err) {
  showBanner(describe(err), "error");
}

function showNotice(...content) {
  showBanner(content, "ok");
}

function showBanner(content, kind) {
  const banner = $("banner");
  banner.className = `banner ${kind}`;
  $("banner-text").replaceChildren(...[].concat(content).map((c) => (c instanceof Node ? c : String(c))));
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function notAvailable() {
  return h("p", { class: "muted unavailable", text: "Not available on this server." });
}

/** Run a panel loader: render its result, or "not available", or an inline failure. */
async function fill(body, load) {
  try {
    const content = await load();
    body.replaceChildren(...[].concat(content));
  } catch (err) {
    if (err instanceof ApiError && err.missingEndpoint) {
      body.replaceChildren(notAvailable());
    } else {
      body.replaceChildren(h("p", { class: "inline-error", text: describe(err) }));
      if (err instanceof ApiError && err.status === 401) onUnauthorized(err);
    }
  }
}

/** Disable the button while the action runs; one click is one request. */
async function act(button, busyKey, action) {
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

// ---------------------------------------------------------------- session

function onUnauthorized(err) {
  logout();
  showError(err);
}

async function login(token) {
  state.token = token;
  let role;
  try {
    await api("GET", "/api/admin/audit");
    role = "admin";
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      role = "user";
    } else if (err instanceof ApiError && err.status === 401) {
      onUnauthorized(err);
      return;
    } else {
      // The audit route may be missing: fall back to the user profile.
      try {
        await api("GET", "/api/me");
        role = "user";
      } catch (err2) {
        if (err2 instanceof ApiError && err2.status === 403) role = "admin";
        else { onUnauthorized(err2); return; }
      }
    }
  }
  localStorage.setItem(TOKEN_KEY, token);
  state.role = role;
  $("login").hidden = true;
  $("session-controls").hidden = false;
  const roleBadge = $("role-badge");
  roleBadge.textContent = role;
  roleBadge.className = `role ${role}`;
  roleBadge.hidden = false;
  $("who").textContent = role === "admin" ? "admin token" : "";
  if (role === "admin") buildAdminView();
  else buildUserView();
  startTimer();
}

function logout() {
  localStorage.removeItem(TOKEN_KEY);
  stopTimer();
  Object.assign(state, {
    token: null, role: null, me: null, loaders: [], entryCursor: null, entryStack: [],
    currency: null,
  });
  $("view").replaceChildren();
  $("session-controls").hidden = true;
  $("role-badge").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("token-input").value = "";
  hideBanner();
}

function startTimer() {
  stopTimer();
  state.timer = setInterval(() => {
    if (!state.paused && !document.hidden) refresh();
  }, REFRESH_MS);
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

async function refresh() {
  if (state.refreshing || !state.token) return;
  state.refreshing = true;
  try {
    await Promise.allSettled(state.loaders.map((load) => load()));
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } finally {
    state.refreshing = false;
  }
}

function addPanel(grid, title, load, options) {
  const { el, body } = card(title, options);
  grid.append(el);
  const run = () => fill(body, load);
  state.loaders.push(run);
  return { el, body, run };
}

// ---------------------------------------------------------------- admin view

function buildAdminView() {
  const grid = h("div", { class: "grid" });
  $("view").replaceChildren(h("h1", { class: "view-title", text: "Operations" }), grid);
  state.loaders = [];

  addPanel(grid, "Audit", loadAudit);
  grid.append(reconcileCard());
  addPanel(grid, "Lock service", loadLocks, { wide: true });
  addPanel(grid, "Receipt & order sequences", loadSequences);
  addPanel(grid, "Stuck purchases", loadStuck, { tools: stuckTools() });

  const forms = h("div", { class: "grid forms" });
  $("view").append(h("h1", { class: "view-title", text: "Create" }), forms);
  forms.append(createUserForm(), createProductForm(), addItemsForm(), createProgramForm(),
    adjustmentForm(), refundForm());
  refresh();
}

async function loadAudit() {
  const a = await api("GET", "/api/admin/audit");
  const problems = Array.isArray(a.problems) ? a.problems : [];
  return [
    h("div", { class: "stats" },
      stat("status", a.ok ? "OK" : `${problems.length} problem${problems.length === 1 ? "" : "s"}`,
        a.ok ? "good" : "bad"),
      stat("wallets checked", String(a.wallets_checked ?? "—"))),
    a.ok && !problems.length
      ? h("p", { class: "muted", text: "Every balance matches its journal; no oversold seats or stock, no duplicate or missing numbers." })
      : table(["Kind", "Detail"], problems.map((p) => [badge(String(p.kind), "bad"), String(p.detail ?? "")])),
  ];
}

function renderValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object") {
    return Object.entries(v).map(([k, x]) => `${k}: ${typeof x === "object" ? JSON.stringify(x) : x}`).join(", ");
  }
  return String(v);
}

async function loadLocks() {
  const l = await api("GET", "/api/admin/locks");
  const health = renderValue(l.health);
  const healthy = /^(ok|healthy|up|true)$/i.test(health);
  const held = Array.isArray(l.held) ? l.held : [];
  return [
    h("div", { class: "stats" },
      stat("backend", renderValue(l.backend)),
      stat("health", health, healthy ? "good" : "bad"),
      stat("active", renderValue(l.active)),
      stat("acquired", renderValue(l.acquired_total)),
      stat("timeouts", renderValue(l.timeouts_total), Number(l.timeouts_total) > 0 ? "warn" : ""),
      stat("avg wait", formatMs(l.avg_wait_ms)),
      stat("max wait", formatMs(l.max_wait_ms))),
    h("h3", { text: "Held leases" }),
    table(["Key", "Fencing token", "Expires"],
      held.map((x) => [h("code", { text: String(x.key) }), String(x.fencing_token ?? "—"), formatTime(x.expires_at)]),
      { empty: "No lock is held right now." }),
  ];
}

async function loadSequences() {
  const rows = await api("GET", "/api/admin/sequences");
  return table(["Series", "Period", "Last value", "Next number"],
    (rows || []).map((r) => [String(r.series), String(r.period), String(r.last_value),
      h("code", { text: String(r.next_number ?? "—") })]),
    { empty: "No numbers issued yet." });
}

function stuckTools() {
  const input = h("input", {
    type: "number", min: "0", step: "60", value: state.stuckOlderThan, class: "small",
    "aria-label": "older than (seconds)", title: "pending for longer than (seconds)",
    onchange: () => {
      const n = Number.parseInt(input.value, 10);
      if (Number.isFinite(n) && n >= 0) { state.stuckOlderThan = n; refresh(); }
    },
  });
  return h("label", { class: "tool" }, "older than ", input, " s");
}

async function loadStuck() {
  const rows = await api("GET", `/api/admin/purchases/stuck?older_than=${encodeURIComponent(state.stuckOlderThan)}`);
  return table(["Order", "Kind", "Status", "Amount", "Created", "Age", "Id"],
    (rows || []).map((p) => [String(p.order_number ?? "—"), String(p.kind), badge(String(p.status), STATUS_KIND[p.status]),
      formatMoney(p.amount, p.currency), formatTime(p.created_at), formatAge(p.created_at),
      h("code", { text: shortId(p.id), title: String(p.id) })]),
    { empty: "No purchase is stuck in pending." });
}

function reconcileCard() {
  const { el, body } = card("Reconcile", { note: "Looks up pending payments at the provider and finishes, fails or expires them." });
  const result = h("div", { class: "result" });
  const button = h("button", { type: "button", text: "Reconcile now" });
  button.addEventListener("click", () => act(button, "reconcile", async () => {
    button.textContent = "Reconciling…";
    const r = await api("POST", "/api/admin/reconcile");
    const counts = Object.entries(r || {}).filter(([, v]) => typeof v === "number");
    result.replaceChildren(h("div", { class: "stats" }, counts.map(([k, v]) => stat(k, String(v)))),
      h("p", { class: "muted small", text: `at ${new Date().toLocaleTimeString()}` }));
  }));
  body.replaceChildren(button, result);
  return el;
}

// ---- forms

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "label", text: label }), input,
    hint ? h("span", { class: "hint" }, hint) : null);
}

function inputEl(name, props) {
  return h("input", { name, autocomplete: "off", spellcheck: "false", ...props });
}

/** An integer minor-units input with a live "= $12.34" preview using the form's currency. */
function moneyInput(form, name, { required = true, signed = false, currencyName = "currency" } = {}) {
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

function intValue(form, name, { required = true, min = null } = {}) {
  const raw = String(form.elements[name].value || "").trim();
  if (!raw && !required) return undefined;
  if (!/^-?\d+$/.test(raw)) throw new Error(`${name} must be a whole number (minor units, no decimals)`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} is too large`);
  if (min !== null && n < min) throw new Error(`${name} must be at least ${min}`);
  return n;
}

function textValue(form, name) {
  const v = String(form.elements[name].value || "").trim();
  return v || undefined;
}

function linesValue(form, name) {
  return String(form.elements[name].value || "").split("\n").map((x) => x.trim()).filter(Boolean);
}

function formCard(title, build, submitLabel, submit, note) {
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
      const r = await api("POST", submit.path(form), { body });
      result.replaceChildren(...[].concat(submit.render(r, form)));
      if (submit.reset !== false) form.reset();
      form.dispatchEvent(new Event("input"));
    });
  });
  body.replaceChildren(form, result);
  return el;
}

function createUserForm() {
  return formCard("User", (form) => [
    field("Email", inputEl("email", { type: "email", required: true, placeholder: "ada@example.com" })),
    field("Name", inputEl("name", { type: "text", placeholder: "optional" })),
  ], "Create user", {
    path: () => "/api/admin/users",
    body: (f) => ({ email: textValue(f, "email"), name: textValue(f, "name") }),
    render: (u) => {
      const tokenBox = h("input", { type: "text", readonly: true, value: u.token, class: "token", "aria-label": "user token" });
      const copy = h("button", { type: "button", class: "ghost", text: "Copy" });
      copy.addEventListener("click", async () => {
        tokenBox.select();
        try { await navigator.clipboard.writeText(u.token); copy.textContent = "Copied"; }
        catch { document.execCommand && document.execCommand("copy"); copy.textContent = "Copied"; }
      });
      const link = h("a", { href: `/#token=${encodeURIComponent(u.token)}`, target: "_blank", rel: "noopener noreferrer",
        text: "Open the dashboard as this user" });
      return [
        h("p", null, "Created ", h("strong", { text: String(u.email) }), " ", h("code", { text: String(u.id), class: "small" })),
        h("p", { class: "warn-text", text: "This token is shown once; only its hash is stored." }),
        h("div", { class: "token-row" }, tokenBox, copy),
        h("p", { class: "small" }, link),
      ];
    },
  });
}

function createProductForm() {
  let price;
  return formCard("Product", (form) => {
    price = moneyInput(form, "price");
    return [
      h("div", { class: "row" },
        field("SKU", inputEl("sku", { type: "text", required: true, placeholder: "EBOOK-1" })),
        field("Currency", inputEl("currency", { type: "text", maxlength: "3", placeholder: "default", class: "cur" }))),
      field("Name", inputEl("name", { type: "text", required: true })),
      field("Price", price.input, price.hint),
      field("Stock items (one per line)", h("textarea", { name: "items", rows: "3", placeholder: "KEY-0001\nKEY-0002" })),
    ];
  }, "Create product", {
    path: () => "/api/admin/products",
    body: (f) => ({
      sku: textValue(f, "sku"), name: textValue(f, "name"), price: intValue(f, "price", { min: 1 }),
      currency: textValue(f, "currency")?.toUpperCase(), items: linesValue(f, "items"),
    }),
    render: (p) => h("p", null, "Created ", h("strong", { text: String(p.name) }),
      ` — ${formatMoney(p.price, p.currency)}, stock ${p.stock} `, h("code", { class: "small", text: String(p.id) })),
  });
}

function addItemsForm() {
  return formCard("Stock items", (form) => [
    field("Product id", inputEl("product_id", { type: "text", required: true })),
    field("Items (one per line)", h("textarea", { name: "items", rows: "3", required: true })),
  ], "Add items", {
    path: (f) => `/api/admin/products/${encodeURIComponent(textValue(f, "product_id") || "")}/items`,
    body: (f) => ({ items: linesValue(f, "items") }),
    render: (p) => h("p", null, h("strong", { text: String(p.name) }), ` now has ${p.stock} in stock.`),
  });
}

function createProgramForm() {
  let full, rep, early;
  return formCard("Program", (form) => {
    full = moneyInput(form, "full_price");
    rep = moneyInput(form, "class_rep_discount");
    early = moneyInput(form, "early_bird_discount");
    return [
      field("Title", inputEl("title", { type: "text", required: true })),
      h("div", { class: "row" },
        field("Full price", full.input, full.hint),
        field("Currency", inputEl("currency", { type: "text", maxlength: "3", placeholder: "default", class: "cur" }))),
      h("div", { class: "row" },
        field("Class-rep seats", inputEl("class_rep_limit", { type: "number", min: "0", required: true, value: "10" })),
        field("Class-rep discount", rep.input, rep.hint)),
      field("Early-bird discount", early.input, early.hint),
      field("Early-bird deadline", inputEl("early_bird_deadline", { type: "datetime-local" }), "optional, your local time"),
    ];
  }, "Create program", {
    path: () => "/api/admin/programs",
    body: (f) => {
      const deadline = textValue(f, "early_bird_deadline");
      let iso;
      if (deadline) {
        const d = new Date(deadline);
        if (Number.isNaN(d.getTime())) throw new Error("early_bird_deadline is not a date");
        iso = d.toISOString();
      }
      return {
        title: textValue(f, "title"), full_price: intValue(f, "full_price", { min: 1 }),
        currency: textValue(f, "currency")?.toUpperCase(),
        class_rep_limit: intValue(f, "class_rep_limit", { min: 0 }),
        class_rep_discount: intValue(f, "class_rep_discount", { min: 0 }),
        early_bird_discount: intValue(f, "early_bird_discount", { min: 0 }),
        early_bird_deadline: iso,
      };
    },
    render: (p) => h("p", null, "Created ", h("strong", { text: String(p.title) }),
      ` — ${formatMoney(p.full_price, p.currency)}, ${p.class_rep_limit} class-rep seats `,
      h("code", { class: "small", text: String(p.id) })),
  });
}

function adjustmentForm() {
  let value;
  return formCard("Wallet adjustment", (form) => {
    value = moneyInput(form, "value", { signed: true });
    const mode = h("select", { name: "mode" },
      h("option", { value: "amount", text: "Add amount (signed)" }),
      h("option", { value: "set_balance", text: "Set balance to" }));
    return [
      field("User id", inputEl("user_id", { type: "text", required: true })),
      h("div", { class: "row" }, field("Mode", mode),
        field("Currency", inputEl("currency", { type: "text", maxlength: "3", placeholder: "default", class: "cur" }))),
      field("Value", value.input, value.hint),
      field("Reason", inputEl("reason", { type: "text", required: true, placeholder: "goodwill credit" })),
    ];
  }, "Apply adjustment", {
    path: (f) => `/api/admin/wallets/${encodeURIComponent(textValue(f, "user_id") || "")}/adjustments`,
    body: (f) => {
      const mode = f.elements.mode.value;
      const v = intValue(f, "value", { min: mode === "set_balance" ? 0 : null });
      if (mode === "amount" && v === 0) throw new Error("amount must not be zero");
      return { [mode]: v, reason: textValue(f, "reason"), currency: textValue(f, "currency")?.toUpperCase() };
    },
    render: (r, f) => {
      const cur = textValue(f, "currency") || r.currency || r.entry?.currency;
      return h("p", null, "New balance ", h("strong", { text: formatMoney(r.balance, cur) }),
        r.entry ? ` (entry ${formatSigned(r.entry.amount, cur)})` : "");
    },
  });
}

function refundForm() {
  return formCard("Refund", (form) => [
    field("Purchase id", inputEl("purchase_id", { type: "text", required: true })),
    field("Reason", inputEl("reason", { type: "text", required: true, placeholder: "customer request" })),
  ], "Refund purchase", {
    path: (f) => `/api/admin/purchases/${encodeURIComponent(textValue(f, "purchase_id") || "")}/refund`,
    body: (f) => ({ reason: textValue(f, "reason") }),
    render: (p) => h("p", null, `Purchase ${p.order_number ?? p.id} is now `, badge(String(p.status), STATUS_KIND[p.status]),
      ` (${formatMoney(p.amount, p.currency)}).`),
  }, "Completed purchases only; the money goes back and a seat or item is released.");
}

// ---------------------------------------------------------------- user view

function buildUserView() {
  const grid = h("div", { class: "grid" });
  $("view").replaceChildren(grid);
  state.loaders = [];

  addPanel(grid, "Wallet", loadWallet, { wide: true });
  addPanel(grid, "Products", loadProducts);
  addPanel(grid, "Programs", loadPrograms);
  addPanel(grid, "Purchases", loadPurchases, { wide: true, tools: purchaseTools() });
  addPanel(grid, "Wallet entries", loadEntries, { wide: true });
  api("GET", "/api/me").then((me) => {
    state.me = me;
    $("who").textContent = me.name ? `${me.name} · ${me.email}` : String(me.email);
  }).catch(() => {});
  refresh();
}

async function loadWallet() {
  const [wallet, recent] = await Promise.all([
    api("GET", "/api/wallet"),
    api("GET", `/api/wallet/entries?limit=${CHART_ENTRIES}`),
  ]);
  state.currency = wallet.currency;
  const entries = (recent.entries || []).slice().reverse(); // oldest first
  return h("div", { class: "wallet" },
    h("div", { class: "balance" },
      h("div", { class: "balance-label", text: "Balance" }),
      h("div", { class: "balance-value", text: formatMoney(wallet.balance, wallet.currency) }),
      h("div", { class: "muted small", text: `${wallet.currency} · ${entries.length}${recent.next_cursor ? "+" : ""} entries` })),
    h("div", { class: "chart" }, balanceChart(entries, wallet.currency, recent.next_cursor !== null && recent.next_cursor !== undefined)));
}

/** A step chart of balance_after, one step per journal entry, oldest on the left. */
function balanceChart(entries, currency, truncated) {
  const W = 640, H = 190, L = 74, R = 12, T = 12, B = 26;
  if (!entries.length) return h("p", { class: "muted", text: "No wallet activity yet." });
  const first = entries[0];
  const points = [{ v: Number(first.balance_after) - Number(first.amount), at: first.created_at, start: true }]
    .concat(entries.map((e) => ({ v: Number(e.balance_after), at: e.created_at, e })));
  const values = points.map((p) => p.v);
  let lo = Math.min(0, ...values);
  let hi = Math.max(...values);
  if (hi === lo) hi = lo + 1;
  const pad = (hi - lo) * 0.08;
  hi += pad;
  const x = (i) => L + (i * (W - L - R)) / Math.max(1, points.length - 1);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));

  let d = `M${x(0).toFixed(1)},${y(points[0].v).toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    d += ` H${x(i).toFixed(1)} V${y(points[i].v).toFixed(1)}`;
  }
  const area = `${d} V${y(lo).toFixed(1)} H${x(0).toFixed(1)} Z`;

  const grid = [];
  for (let k = 0; k <= 3; k++) {
    const v = lo + ((hi - lo) * k) / 3;
    grid.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
    grid.push(s("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end", class: "axis" }, formatMoney(Math.round(v), currency)));
  }
  const dots = points.slice(1).map((p, i) => s("circle", { cx: x(i + 1), cy: y(p.v), r: 3.5, class: Number(p.e.amount) < 0 ? "dot debit" : "dot credit" },
    s("title", null, `${formatTime(p.at)}\n${formatSigned(p.e.amount, currency)} (${p.e.kind || "entry"})\nbalance ${formatMoney(p.v, currency)}`)));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg", preserveAspectRatio: "xMidYMid meet",
      "aria-label": `Balance over the last ${entries.length} wallet entries` },
    s("title", null, "Balance over time"),
    ...grid,
    s("path", { d: area, class: "area" }),
    s("path", { d, class: "line" }),
    ...dots,
    s("text", { x: L, y: H - 6, class: "axis" }, truncated ? `… ${formatTime(first.created_at)}` : formatTime(first.created_at)),
    s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, formatTime(points[points.length - 1].at)));
  return svg;
}

async function loadProducts() {
  const rows = await api("GET", "/api/products");
  return table(["Product", "Price", "Stock", ""], (rows || []).map((p) => {
    const key = `buy:${p.id}`;
    const stock = Number(p.stock);
    const button = h("button", {
      type: "button", class: "small-btn", disabled: stock <= 0 || state.busy.has(key),
      text: stock <= 0 ? "Sold out" : state.busy.has(key) ? "Buying…" : "Buy",
    });
    button.addEventListener("click", () => act(button, key, async () => {
      button.textContent = "Buying…";
      const purchase = await api("POST", "/api/purchases", { body: { product_id: p.id, quantity: 1 } });
      const items = Array.isArray(purchase.items) ? purchase.items.join(", ") : "";
      showNotice(`Bought ${p.name} for ${formatMoney(purchase.amount, purchase.currency)} — receipt `,
        h("code", { text: String(purchase.receipt_number ?? "—") }), items ? ` · ${items}` : "");
    }));
    return [h("div", null, h("div", { class: "strong", text: String(p.name) }), h("div", { class: "muted small", text: String(p.sku) })),
      formatMoney(p.price, p.currency),
      h("span", { class: stock <= 0 ? "bad-text" : stock < 5 ? "warn-text" : "", text: String(p.stock) }),
      button];
  }), { empty: "No products yet." });
}

function safeHttpUrl(raw) {
  const u = new URL(String(raw), location.href);
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("the checkout url is not http(s)");
  return u.href;
}

async function loadPrograms() {
  const rows = await api("GET", "/api/programs");
  const now = Date.now();
  return table(["Program", "Price", "Class-rep seats", ""], (rows || []).map((p) => {
    const key = `checkout:${p.id}`;
    const deadline = p.early_bird_deadline ? new Date(p.early_bird_deadline).getTime() : NaN;
    const early = Number(p.early_bird_discount) > 0 && deadline > now;
    const seatsLeft = Number(p.class_rep_limit) - Number(p.class_rep_taken);
    const checkbox = h("input", { type: "checkbox", checked: Boolean(state.classRep[p.id]) && seatsLeft > 0, disabled: seatsLeft <= 0 });
    checkbox.addEventListener("change", () => { state.classRep[p.id] = checkbox.checked; });
    const button = h("button", { type: "button", class: "small-btn", disabled: state.busy.has(key), text: "Checkout" });
    button.addEventListener("click", () => {
      if (state.busy.has(key)) return;
      // Open the tab inside the click (popup blockers), point it at the payment page later.
      const win = window.open("about:blank", "_blank");
      act(button, key, async () => {
        button.textContent = "Opening…";
        try {
          const sess = await api("POST", "/api/checkout/sessions", { body: { program_id: p.id, class_rep: checkbox.checked } });
          const url = safeHttpUrl(sess.url);
          if (win) { win.opener = null; win.location.href = url; }
          showNotice(`${sess.existing ? "Resumed your pending checkout" : "Checkout started"} — order ${sess.order_number ?? "—"}, ${formatMoney(sess.amount, sess.currency)}. `,
            h("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: "Open the payment page" }));
        } catch (err) {
          if (win) win.close();
          throw err;
        }
      });
    });
    return [
      h("div", null, h("div", { class: "strong", text: String(p.title) }),
        early ? h("div", { class: "muted small", text: `early bird −${formatMoney(p.early_bird_discount, p.currency)} until ${formatTime(p.early_bird_deadline)}` }) : null),
      h("div", null, h("div", { text: formatMoney(early ? Number(p.full_price) - Number(p.early_bird_discount) : p.full_price, p.currency) }),
        early ? h("div", { class: "muted small strike", text: formatMoney(p.full_price, p.currency) }) : null),
      h("div", null, h("div", { text: `${p.class_rep_taken} / ${p.class_rep_limit} taken` }),
        h("label", { class: "check small" }, checkbox, ` class rep (−${formatMoney(p.class_rep_discount, p.currency)})`)),
      button,
    ];
  }), { empty: "No programs yet." });
}

function purchaseTools() {
  const select = h("select", { "aria-label": "status filter", class: "small" },
    ["", "pending", "completed", "failed", "canceled", "expired", "refunded"].map((v) =>
      h("option", { value: v, text: v || "all statuses" })));
  select.value = state.purchaseFilter;
  select.addEventListener("change", () => { state.purchaseFilter = select.value; refresh(); });
  return select;
}

async function loadPurchases() {
  const q = state.purchaseFilter ? `?status=${encodeURIComponent(state.purchaseFilter)}` : "";
  const rows = await api("GET", `/api/purchases${q}`);
  return table(["Order", "What", "Status", "Amount", "Receipt", "Items", "Created", ""], (rows || []).map((p) => {
    let action = null;
    if (p.status === "pending") {
      const key = `cancel:${p.id}`;
      action = h("button", { type: "button", class: "small-btn danger", disabled: state.busy.has(key), text: "Cancel" });
      action.addEventListener("click", () => {
        if (!window.confirm(`Cancel order ${p.order_number ?? p.id}?`)) return;
        act(action, key, async () => {
          action.textContent = "Canceling…";
          const r = await api("POST", `/api/purchases/${encodeURIComponent(p.id)}/cancel`);
          showNotice(`Order ${r.order_number ?? r.id} is now ${r.status}.`);
        });
      });
    }
    const items = Array.isArray(p.items) ? p.items : [];
    const what = [String(p.kind), p.quantity > 1 ? ` ×${p.quantity}` : "", p.payment_method ? ` · ${p.payment_method}` : "",
      p.card && p.card.last4 ? ` ${p.card.brand || "card"} •${p.card.last4}` : ""].join("");
    return [
      h("code", { text: String(p.order_number ?? shortId(p.id)), title: String(p.id) }),
      h("span", { text: what }),
      badge(String(p.status), STATUS_KIND[p.status]),
      formatMoney(p.amount, p.currency),
      p.receipt_number ? h("code", { text: String(p.receipt_number) }) : "—",
      items.length ? h("div", { class: "items" }, items.map((it) => h("code", { class: "item", text: String(it) }))) : "—",
      formatTime(p.created_at),
      action,
    ];
  }), { empty: state.purchaseFilter ? `No ${state.purchaseFilter} purchases.` : "No purchases yet." });
}

async function loadEntries() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.entryCursor) q.set("cursor", state.entryCursor);
  const page = await api("GET", `/api/wallet/entries?${q}`);
  const cur = state.currency;
  const newer = h("button", { type: "button", class: "ghost small-btn", disabled: !state.entryStack.length, text: "← Newer" });
  const older = h("button", { type: "button", class: "ghost small-btn", disabled: !page.next_cursor, text: "Older →" });
  newer.addEventListener("click", () => { state.entryCursor = state.entryStack.pop() ?? null; refresh(); });
  older.addEventListener("click", () => {
    state.entryStack.push(state.entryCursor);
    state.entryCursor = page.next_cursor;
    refresh();
  });
  return [
    table(["When", "Kind", "Amount", "Balance after", "Reason / purchase"], (page.entries || []).map((e) => [
      formatTime(e.created_at), String(e.kind ?? ""),
      h("span", { class: Number(e.amount) < 0 ? "debit" : "credit", text: formatSigned(e.amount, cur) }),
      formatMoney(e.balance_after, cur),
      e.reason ? String(e.reason) : e.purchase_id ? h("code", { text: shortId(e.purchase_id), title: String(e.purchase_id) }) : "—",
    ]), { empty: "No entries yet." }),
    h("div", { class: "pager" }, newer,
      h("span", { class: "muted small", text: `page ${state.entryStack.length + 1}` }), older),
  ];
}

// ---------------------------------------------------------------- boot

function readFragmentToken() {
  // "#token=..." logs in once (handy for links and screenshots), then leaves the address bar.
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, "", location.pathname + location.search);
  try { return decodeURIComponent(m[1]).trim() || null; } catch { return null; }
}

function boot() {
  $("banner-close").addEventListener("click", hideBanner);
  $("logout").addEventListener("click", logout);
  $("refresh-now").addEventListener("click", () => refresh());
  const toggle = $("refresh-toggle");
  toggle.addEventListener("click", () => {
    state.paused = !state.paused;
    toggle.setAttribute("aria-pressed", String(state.paused));
    toggle.textContent = state.paused ? "Resume auto-refresh" : "Pause auto-refresh";
    toggle.classList.toggle("paused", state.paused);
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (token) { hideBanner(); login(token); }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !state.paused) refresh();
  });

  const token = readFragmentToken() || localStorage.getItem(TOKEN_KEY);
  if (token) login(token);
  else $("login").hidden = false;
}

boot();
