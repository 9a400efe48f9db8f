// payguard dashboard: the signed-in user's view (wallet, buy, checkout, purchases, entries).
// It calls user endpoints only: never an admin one.

import {
  $, STATUS_KIND, act, addPanel, api, badge, formatMoney, formatSigned, formatTime, h,
  refresh, s, shortId, showNotice, state, table,
} from "/static/ui.js";

const CHART_ENTRIES = 200;
const PAGE_SIZE = 10;

export function buildUserView() {
  const grid = h("div", { class: "grid" });
  $("view").replaceChildren(grid);
  state.loaders = [];

  addPanel(grid, "Wallet", loadWallet, { wide: true });
  addPanel(grid, "Products", loadProducts);
  addPanel(grid, "Programs", loadPrograms);
  addPanel(grid, "Purchases", loadPurchases, { wide: true, tools: purchaseTools() });
  addPanel(grid, "Wallet entries", loadEntries, { wide: true });
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
