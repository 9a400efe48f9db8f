// payguard dashboard: the operator's (admin) view. Tabs, each backed by admin endpoints:
// overview with live charts, purchases (filters, search, cursor paging) and a purchase's
// detail, users and their journals, the webhook inbox, the outbox, programs and products,
// and the forms that create things. Every action is a POST with an Idempotency-Key.

import { CHARTS, MetricsHistory, genericChart } from "/static/charts.js";
import {
  $, STATUS_KIND, act, addPanel, api, badge, card, field, formCard, formatAge,
  formatMoney, formatMs, formatSigned, formatTime, h, inputEl, intValue, keyNote, linesValue,
  moneyInput, newIdempotencyKey, refresh, shortId, showNotice, stat, state, table, textValue,
} from "/static/ui.js";

const TABS = [
  ["overview", "Overview"], ["purchases", "Purchases"], ["users", "Users"],
  ["webhooks", "Webhooks"], ["outbox", "Outbox"], ["catalog", "Catalog"],
  ["metrics", "All metrics"], ["create", "Create"],
];
const PAGE = 20;

const admin = {
  history: new MetricsHistory(),
  purchaseFilter: { status: "", kind: "", user_id: "", since: "", until: "", q: "" },
  pages: {},           // list name -> { cursor, stack }
  webhookState: "",
  outboxState: "",
  userQuery: "",
  listening: false,
  sampling: Promise.resolve(),
  detail: null,
};

function pageOf(name) {
  if (!admin.pages[name]) admin.pages[name] = { cursor: null, stack: [] };
  return admin.pages[name];
}

function resetPage(name) { admin.pages[name] = { cursor: null, stack: [] }; }

function pager(name, nextCursor) {
  const p = pageOf(name);
  const newer = h("button", { type: "button", class: "ghost small-btn", disabled: !p.stack.length, text: "← Newer" });
  const older = h("button", { type: "button", class: "ghost small-btn", disabled: !nextCursor, text: "Older →" });
  newer.addEventListener("click", () => { p.cursor = p.stack.pop() ?? null; refresh(); });
  older.addEventListener("click", () => { p.stack.push(p.cursor); p.cursor = nextCursor; refresh(); });
  return h("div", { class: "pager" }, newer, h("span", { class: "muted small", text: `page ${p.stack.length + 1}` }), older);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : "";
}

const link = (href, text, extra = {}) => h("a", { href, text: String(text), ...extra });
const purchaseLink = (p) => link(`#/purchase/${encodeURIComponent(p.id)}`, p.order_number ?? shortId(p.id), { class: "mono", title: String(p.id) });
const userLink = (id, text) => link(`#/user/${encodeURIComponent(id)}`, text ?? shortId(id), { title: String(id) });

// ---------------------------------------------------------------- routing

function route() {
  const m = /^#\/([a-z]+)(?:\/(.+))?$/.exec(location.hash);
  if (!m) return { tab: "overview" };
  const arg = m[2] ? decodeURIComponent(m[2]) : null;
  if (m[1] === "purchase" && arg) return { tab: "purchases", purchase: arg };
  if (m[1] === "user" && arg) return { tab: "users", user: arg };
  return { tab: TABS.some(([id]) => id === m[1]) ? m[1] : "overview" };
}

function onHashChange() {
  if (state.role === "admin") buildAdminView();
}

export function stopAdminView() {
  if (admin.listening) window.removeEventListener("hashchange", onHashChange);
  admin.listening = false;
  admin.history = new MetricsHistory();
}

export function buildAdminView() {
  if (!admin.listening) {
    window.addEventListener("hashchange", onHashChange);
    admin.listening = true;
  }
  const r = route();
  const nav = h("nav", { class: "tabs", "aria-label": "Admin views" },
    TABS.map(([id, label]) => link(`#/${id}`, label, { class: id === r.tab ? "tab active" : "tab", "aria-current": id === r.tab ? "page" : null })));
  const grid = h("div", { class: "grid" });
  $("view").replaceChildren(nav, grid);
  // The metrics sampler runs on every tab, so the charts have history when opened.
  state.loaders = [sampleMetrics];
  if (r.purchase) buildPurchaseDetail(grid, r.purchase);
  else if (r.user) buildUserDetail(grid, r.user);
  else ({
    overview: buildOverview, purchases: buildPurchases, users: buildUsers,
    webhooks: buildWebhooks, outbox: buildOutbox, catalog: buildCatalog,
    metrics: buildAllMetrics, create: buildCreate,
  })[r.tab](grid);
  refresh();
}

// ---------------------------------------------------------------- metrics

function sampleMetrics() {
  // Started first on every refresh; the chart panels wait for it, so they draw this sample.
  admin.sampling = api("GET", "/metrics", { text: true })
    .then((text) => admin.history.add(text))
    .catch(() => { /* metrics disabled: the charts say so */ });
  return admin.sampling;
}

async function sampled() {
  await admin.sampling;
  return admin.history;
}

function chartPanel(grid, spec) {
  addPanel(grid, spec.title, async () => spec.render(await sampled()), { note: spec.note, id: `chart-${spec.id}` });
}

function buildOverview(grid) {
  for (const spec of CHARTS) chartPanel(grid, spec);
  addPanel(grid, "Audit", loadAudit);
  grid.append(reconcileCard());
  addPanel(grid, "Lock service", loadLocks, { wide: true });
  addPanel(grid, "Receipt & order sequences", loadSequences);
  addPanel(grid, "Stuck purchases", loadStuck, { tools: stuckTools() });
}

function buildAllMetrics(grid) {
  addPanel(grid, "Every metric family", async () => {
    await sampled();
    const names = admin.history.familyNames().sort();
    if (!names.length) return h("p", { class: "muted", text: "No sample yet (or /metrics is disabled)." });
    return h("div", { class: "metric-grid" }, names.map((name) => {
      const f = admin.history.family(name);
      return h("div", { class: "metric" },
        h("div", { class: "metric-head" }, h("code", { text: name }), badge(f.type, "muted")),
        h("div", { class: "muted small", text: f.help }),
        genericChart(admin.history, name));
    }));
  }, { wide: true, note: "Counters as a rate, gauges as values, histograms as the mean per interval; one sample per refresh." });
}

// ---------------------------------------------------------------- purchases

function purchaseFilterForm() {
  const f = admin.purchaseFilter;
  const form = h("form", { class: "filters", role: "search" });
  const sel = (name, values, label) => h("select", { name, "aria-label": label },
    values.map((v) => h("option", { value: v, text: v || `any ${label}`, selected: f[name] === v })));
  const q = inputEl("q", { type: "search", placeholder: "order, receipt or session id", value: f.q, "aria-label": "search", class: "search" });
  const user = inputEl("user_id", { type: "text", placeholder: "user id", value: f.user_id, "aria-label": "user id" });
  const since = inputEl("since", { type: "date", value: f.since, "aria-label": "from date" });
  const until = inputEl("until", { type: "date", value: f.until, "aria-label": "to date" });
  appendAll(form, q, sel("status", ["", "pending", "completed", "failed", "canceled", "expired", "refunded"], "status"),
    sel("kind", ["", "product", "program", "topup"], "kind"), user, since, until,
    h("button", { type: "submit", text: "Search" }),
    h("button", { type: "reset", class: "ghost", text: "Clear" }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    for (const k of Object.keys(f)) f[k] = String(form.elements[k].value || "").trim();
    resetPage("purchases");
    refresh();
  });
  form.addEventListener("reset", () => {
    for (const k of Object.keys(f)) f[k] = "";
    resetPage("purchases");
    setTimeout(refresh, 0);
  });
  return form;
}

function appendAll(el, ...children) { for (const c of children) el.append(c); }

function dayStart(date, plusDays = 0) {
  // A date input is a local calendar day: its start, as an RFC 3339 instant.
  const d = new Date(`${date}T00:00:00`);
  d.setDate(d.getDate() + plusDays);
  return d.toISOString();
}

function buildPurchases(grid) {
  const { el } = card("Find purchases", { wide: true });
  el.querySelector(".card-body").replaceChildren(purchaseFilterForm());
  grid.append(el);
  addPanel(grid, "Purchases (newest first)", loadAdminPurchases, { wide: true, id: "admin-purchases" });
}

async function loadAdminPurchases() {
  const f = admin.purchaseFilter;
  const p = pageOf("purchases");
  const page = await api("GET", `/api/admin/purchases${query({
    status: f.status, kind: f.kind, user_id: f.user_id, q: f.q,
    since: f.since ? dayStart(f.since) : "", until: f.until ? dayStart(f.until, 1) : "",
    limit: PAGE, cursor: p.cursor,
  })}`);
  return [
    table(["Order", "User", "What", "Status", "Amount", "Receipt", "Created"], page.purchases.map((x) => [
      purchaseLink(x),
      userLink(x.user_id, x.user_name ? `${x.user_name} · ${x.user_email}` : x.user_email),
      `${x.kind}${x.quantity > 1 ? ` ×${x.quantity}` : ""} · ${x.payment_method}`,
      badge(String(x.status), STATUS_KIND[x.status]),
      formatMoney(x.amount, x.currency),
      x.receipt_number ? h("code", { text: String(x.receipt_number) }) : "—",
      formatTime(x.created_at),
    ]), { empty: "No purchase matches." }),
    pager("purchases", page.next_cursor),
  ];
}

function buildPurchaseDetail(grid, id) {
  grid.append(h("p", { class: "crumbs" }, link("#/purchases", "← Purchases")));
  addPanel(grid, "Purchase", async () => {
    // One request per refresh; the panels below (started after this one) wait for it.
    admin.detail = api("GET", `/api/admin/purchases/${encodeURIComponent(id)}/detail`);
    const p = (await admin.detail).purchase;
    return [
      h("div", { class: "stats" },
        stat("order", String(p.order_number)),
        stat("status", String(p.status), p.status === "completed" ? "good" : p.status === "refunded" ? "" : "warn"),
        stat("amount", formatMoney(p.amount, p.currency)),
        stat("method", p.card?.last4 ? `card ${p.card.brand || ""} •${p.card.last4}` : String(p.payment_method)),
        stat("receipt", p.receipt_number ? String(p.receipt_number) : "—")),
      h("dl", { class: "facts" },
        fact("Purchase id", h("code", { text: String(p.id) })),
        fact("User", userLink(p.user_id, p.user_name ? `${p.user_name} · ${p.user_email}` : p.user_email)),
        fact("What", `${p.kind} ×${p.quantity}${p.product_id ? ` · ${p.product_id}` : ""}${p.program_id ? ` · ${p.program_id}` : ""}${p.is_class_rep ? " · class rep" : ""}`),
        fact("Pricing", `full ${formatMoney(p.pricing.full_price, p.currency)} − class rep ${formatMoney(p.pricing.class_rep_discount, p.currency)} − early bird ${formatMoney(p.pricing.early_bird_discount, p.currency)} = ${formatMoney(p.pricing.final_price, p.currency)}`),
        fact("Created", formatTime(p.created_at)),
        fact("Completed", formatTime(p.completed_at)),
        fact("Refunded", p.refunded_at ? `${formatTime(p.refunded_at)}${p.refund_status ? ` (provider: ${p.refund_status})` : ""}` : "—"),
        fact("Failure / refund reason", p.failure_reason ? String(p.failure_reason) : "—")),
    ];
  }, { wide: true, id: "purchase-summary" });
  grid.append(refundCard(id));
  addPanel(grid, "Ledger entries", async () => table(["#", "Account", "Kind", "Amount", "Balance after", "Reason", "When"],
    ((await admin.detail).ledger).map((e) => [String(e.id),
      h("span", null, h("code", { text: String(e.account_id) }), " ", badge(String(e.account_kind), "muted")),
      String(e.kind), h("span", { class: e.amount < 0 ? "debit" : "credit", text: formatSigned(e.amount, e.currency) }),
      formatMoney(e.balance_after, e.currency), e.reason ? String(e.reason) : "—", formatTime(e.created_at)]),
    { empty: "No money moved for this purchase." }), { wide: true, id: "purchase-ledger" });
  addPanel(grid, "Receipt and items", async () => {
    const d = await admin.detail;
    return [
      d.receipt ? h("p", null, "Receipt ", h("code", { text: String(d.receipt.number) }), ` · ${formatMoney(d.receipt.amount, d.receipt.currency)} · issued ${formatTime(d.receipt.issued_at)}`)
        : h("p", { class: "muted", text: "No receipt (not paid)." }),
      table(["Item", "State", "Assigned"], (d.items || []).map((i) => [h("code", { text: String(i.value) }), String(i.state), formatTime(i.assigned_at)]), { empty: "No stock items." }),
    ];
  }, { id: "purchase-receipt" });
  addPanel(grid, "Provider session", async () => {
    const ps = (await admin.detail).provider_session;
    return h("dl", { class: "facts" },
      fact("Session", ps.session_id ? h("code", { text: String(ps.session_id) }) : "— (wallet)"),
      fact("Payment intent", ps.payment_intent ? h("code", { text: String(ps.payment_intent) }) : "—"),
      fact("Expires", formatTime(ps.expires_at)),
      fact("Refund", ps.refund_status ? `${ps.refund_status}${ps.refund_id ? ` · ${ps.refund_id}` : ""}` : "—"),
      fact("Reconciler checks", `${ps.check_attempts ?? 0}${ps.next_check_at ? `, next ${formatTime(ps.next_check_at)}` : ""}`));
  }, { id: "purchase-session" });
  addPanel(grid, "Webhook events", async () => webhookTable((await admin.detail).webhook_events), { wide: true, id: "purchase-webhooks" });
  addPanel(grid, "Emails", async () => emailTable((await admin.detail).emails), { wide: true, id: "purchase-emails" });
  addPanel(grid, "Idempotency keys", async () => table(["Principal", "Key", "Request", "State", "Answer", "Created"],
    ((await admin.detail).idempotency_keys).map((k) => [String(k.principal), h("code", { text: String(k.key) }),
      h("code", { text: `${k.method} ${k.path}` }), `${k.state} (${k.recovery_point})`,
      k.status_code === null ? "—" : String(k.status_code), formatTime(k.created_at)]),
    { empty: "No keyed request names this purchase (keys expire after PAYGUARD_IDEMPOTENCY_TTL)." }), { wide: true, id: "purchase-keys" });
}

function fact(label, value) {
  return h("div", { class: "fact" }, h("dt", { text: label }), h("dd", null, value));
}

function refundCard(id) {
  const { el, body } = card("Refund", { note: "Completed purchases only: the money goes back (to the wallet, or to the card through the provider) and a seat is released." });
  const form = h("form", { class: "form inline-form" });
  const reason = inputEl("reason", { type: "text", required: true, maxlength: "500", placeholder: "reason, e.g. charged twice", "aria-label": "refund reason" });
  const button = h("button", { type: "submit", class: "danger", text: "Refund purchase" });
  const result = h("div", { class: "result" });
  appendAll(form, reason, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    act(button, `refund:${id}`, async () => {
      const key = newIdempotencyKey();
      const p = await api("POST", `/api/admin/purchases/${encodeURIComponent(id)}/refund`, { body: { reason: reason.value.trim() }, key });
      result.replaceChildren(h("p", null, `Order ${p.order_number} is now `, badge(String(p.status), STATUS_KIND[p.status]),
        ` (${formatMoney(p.amount, p.currency)} back).`), keyNote(key));
      showNotice(`Refunded order ${p.order_number}.`);
      form.reset();
    });
  });
  body.replaceChildren(form, result);
  el.id = "refund-card";
  return el;
}

// ---------------------------------------------------------------- users

function buildUsers(grid) {
  const form = h("form", { class: "filters", role: "search" });
  const q = inputEl("q", { type: "search", placeholder: "email, name or user id", value: admin.userQuery, "aria-label": "search users", class: "search" });
  appendAll(form, q, h("button", { type: "submit", text: "Search" }));
  form.addEventListener("submit", (e) => { e.preventDefault(); admin.userQuery = q.value.trim(); resetPage("users"); refresh(); });
  addPanel(grid, "Users and balances", async () => {
    const page = await api("GET", `/api/admin/users${query({ q: admin.userQuery, limit: PAGE, cursor: pageOf("users").cursor })}`);
    return [
      table(["Name", "Email", "Balance", "Purchases", "Created", "Id"], page.users.map((u) => [
        userLink(u.id, u.name || "—"), String(u.email), formatMoney(u.balance, u.currency), String(u.purchases ?? 0),
        formatTime(u.created_at), h("code", { text: shortId(u.id), title: String(u.id) })]), { empty: "No user matches." }),
      pager("users", page.next_cursor),
    ];
  }, { wide: true, tools: form, id: "admin-users" });
}

function buildUserDetail(grid, userId) {
  grid.append(h("p", { class: "crumbs" }, link("#/users", "← Users")));
  const name = `journal:${userId}`;
  addPanel(grid, "Wallet journal", async () => {
    const page = await api("GET", `/api/admin/users/${encodeURIComponent(userId)}/journal${query({ limit: PAGE, cursor: pageOf(name).cursor })}`);
    const u = page.user;
    const cur = u.currency;
    const toPurchases = h("button", { type: "button", class: "ghost small-btn", text: "Their purchases" });
    toPurchases.addEventListener("click", () => {
      Object.assign(admin.purchaseFilter, { status: "", kind: "", user_id: u.id, since: "", until: "", q: "" });
      resetPage("purchases");
      location.hash = "#/purchases";
    });
    return [
      h("div", { class: "stats" }, stat("user", u.name ? String(u.name) : "—"), stat("email", String(u.email)),
        stat("balance", formatMoney(u.balance, cur), "good"), stat("account", String(page.account_id))),
      h("p", null, toPurchases),
      table(["#", "When", "Kind", "Amount", "Balance after", "Reason / purchase"], page.entries.map((e) => [
        String(e.id), formatTime(e.created_at), String(e.kind),
        h("span", { class: e.amount < 0 ? "debit" : "credit", text: formatSigned(e.amount, cur) }),
        formatMoney(e.balance_after, cur),
        h("span", null, e.reason ? String(e.reason) : "", e.reason && e.purchase_id ? " · " : "",
          e.purchase_id ? link(`#/purchase/${encodeURIComponent(e.purchase_id)}`, shortId(e.purchase_id)) : "")]),
        { empty: "No entries." }),
      pager(name, page.next_cursor),
    ];
  }, { wide: true, id: "user-journal" });
  grid.append(adjustmentForm(userId));
}

// ---------------------------------------------------------------- webhooks and outbox

function stateSelect(values, current, label, onChange) {
  const select = h("select", { class: "small", "aria-label": label },
    values.map((v) => h("option", { value: v, text: v || "all", selected: v === current })));
  select.addEventListener("change", () => onChange(select.value));
  return select;
}

function webhookTable(events) {
  return table(["Received", "Type", "Event", "Session", "Outcome", "Deliveries"], events.map((e) => [
    formatTime(e.received_at), String(e.type), h("code", { text: String(e.event_id) }),
    e.object_id ? h("code", { text: shortId(e.object_id), title: String(e.object_id) }) : "—",
    h("span", null, badge(String(e.category), e.category === "applied" ? "ok" : e.category === "failed" ? "bad" : "muted"), ` ${e.outcome}`),
    h("span", null, String(e.deliveries), e.duplicate ? badge("duplicate", "warn") : ""),
  ]), { empty: "No webhook events." });
}

function buildWebhooks(grid) {
  const tools = stateSelect(["", "applied", "received", "duplicate", "failed"], admin.webhookState, "state",
    (v) => { admin.webhookState = v; resetPage("webhooks"); refresh(); });
  addPanel(grid, "Webhook inbox", async () => {
    const page = await api("GET", `/api/admin/webhooks${query({ state: admin.webhookState, limit: PAGE, cursor: pageOf("webhooks").cursor })}`);
    const c = page.counts;
    return [
      h("div", { class: "stats" }, stat("events", String(c.events)), stat("deliveries", String(c.deliveries)),
        stat("applied", String(c.applied), "good"), stat("received", String(c.received)),
        stat("duplicate", String(c.duplicate), c.duplicate ? "warn" : ""), stat("failed", String(c.failed), c.failed ? "bad" : "")),
      webhookTable(page.events),
      pager("webhooks", page.next_cursor),
    ];
  }, { wide: true, tools, id: "admin-webhooks",
    note: "Each event id once. Deliveries counts every arrival; a delivery whose handling failed is not recorded (the provider sends it again) and shows as a 5xx in /metrics." });
}

function emailTable(messages) {
  return table(["#", "Created", "To", "Subject", "State", "Attempts", "Last error", "Sent", ""], messages.map((m) => {
    let retry = null;
    if (m.state === "dead") {
      retry = h("button", { type: "button", class: "small-btn", text: "Retry" });
      retry.addEventListener("click", () => act(retry, `retry:${m.id}`, async () => {
        const key = newIdempotencyKey();
        const r = await api("POST", `/api/admin/outbox/${encodeURIComponent(m.id)}/retry`, { key });
        showNotice(`Email #${r.id} to ${r.recipient} is ${r.state} again (attempts reset). Idempotency-Key `, h("code", { text: key }));
      }));
    }
    return [String(m.id), formatTime(m.created_at), String(m.recipient), String(m.subject),
      badge(String(m.state), m.state === "sent" ? "ok" : m.state === "dead" ? "bad" : "warn"),
      String(m.attempts), m.last_error ? h("span", { class: "small", text: String(m.last_error) }) : "—",
      formatTime(m.sent_at), retry];
  }), { empty: "No emails." });
}

function buildOutbox(grid) {
  const tools = stateSelect(["", "pending", "retrying", "sent", "dead"], admin.outboxState, "state",
    (v) => { admin.outboxState = v; resetPage("outbox"); refresh(); });
  addPanel(grid, "Outbox", async () => {
    const page = await api("GET", `/api/admin/outbox${query({ state: admin.outboxState, limit: PAGE, cursor: pageOf("outbox").cursor })}`);
    const c = page.counts;
    return [
      h("div", { class: "stats" }, stat("pending", String(c.pending), c.pending ? "warn" : ""), stat("retrying", String(c.retrying), c.retrying ? "warn" : ""),
        stat("sent", String(c.sent), "good"), stat("dead", String(c.dead), c.dead ? "bad" : "")),
      emailTable(page.messages),
      pager("outbox", page.next_cursor),
    ];
  }, { wide: true, tools, id: "admin-outbox" });
}

// ---------------------------------------------------------------- catalog

function usageBar(used, held, limit) {
  const pct = (n) => (limit > 0 ? Math.min(100, (n * 100) / limit) : 0);
  return h("div", { class: "usage", title: `${used} sold, ${held} held, ${limit} in all` },
    h("meter", { min: "0", max: String(Math.max(limit, 1)), value: String(used + held), "aria-label": "seats taken" }),
    h("span", { class: "small muted", text: `${pct(used + held).toFixed(0)}%` }));
}

function buildCatalog(grid) {
  addPanel(grid, "Programs and class-rep seats", async () => {
    const rows = await api("GET", "/api/admin/programs");
    return table(["Program", "Price", "Sold", "Held", "Left", "Limit", "Usage"], rows.map((p) => [
      h("div", null, h("div", { class: "strong", text: String(p.title) }), h("code", { class: "small muted", text: String(p.id) })),
      formatMoney(p.full_price, p.currency), String(p.seats_sold), String(p.seats_held), String(p.seats_left),
      String(p.class_rep_limit), usageBar(p.seats_sold, p.seats_held, p.class_rep_limit)]), { empty: "No programs." });
  }, { wide: true, id: "admin-programs" });
  addPanel(grid, "Products and stock", async () => {
    const rows = await api("GET", "/api/admin/products");
    return table(["Product", "Price", "In stock", "Reserved", "Delivered", "Items"], rows.map((p) => [
      h("div", null, h("div", { class: "strong", text: String(p.name) }), h("span", { class: "small muted", text: `${p.sku} · ${p.id}` })),
      formatMoney(p.price, p.currency), h("span", { class: p.stock <= 0 ? "bad-text" : p.stock < 5 ? "warn-text" : "", text: String(p.stock) }),
      String(p.items_reserved), String(p.items_assigned), String(p.items_total)]), { empty: "No products." });
  }, { wide: true, id: "admin-products" });
}

function buildCreate(grid) {
  grid.classList.add("forms");
  grid.append(createUserForm(), createProductForm(), addItemsForm(), createProgramForm(),
    adjustmentForm(), refundForm());
}

// ---------------------------------------------------------------- operations (overview)

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
    ...(l.batches ? [
      h("h3", { text: "Group commit (the process that answered)" }),
      h("div", { class: "stats" },
        stat("batches", renderValue(l.batches.batches)),
        stat("commands", renderValue(l.batches.commands)),
        stat("mean size", renderValue(l.batches.mean_size)),
        stat("max size", renderValue(l.batches.max_size)),
        stat("queue depth", renderValue(l.batches.queue_depth)),
        stat("max queue", renderValue(l.batches.max_queue_depth)),
        stat("avg commit", formatMs(l.batches.avg_commit_ms)),
        stat("overloaded", renderValue(l.batches.overloaded),
          Number(l.batches.overloaded) > 0 ? "warn" : "")),
    ] : []),
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
    const key = newIdempotencyKey();
    const r = await api("POST", "/api/admin/reconcile", { key });
    const counts = Object.entries(r || {}).filter(([, v]) => typeof v === "number");
    result.replaceChildren(h("div", { class: "stats" }, counts.map(([k, v]) => stat(k, String(v)))),
      h("p", { class: "muted small", text: `at ${new Date().toLocaleTimeString()}` }), keyNote(key));
  }));
  body.replaceChildren(button, result);
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

function adjustmentForm(userId = null) {
  let value;
  return formCard("Wallet adjustment", (form) => {
    value = moneyInput(form, "value", { signed: true });
    const mode = h("select", { name: "mode" },
      h("option", { value: "amount", text: "Add amount (signed)" }),
      h("option", { value: "set_balance", text: "Set balance to" }));
    const user = inputEl("user_id", { type: "text", required: true, readonly: Boolean(userId) });
    if (userId) user.defaultValue = userId;  // survives the form's reset after each action
    return [
      field("User id", user),
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
