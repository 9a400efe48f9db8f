// payguard dashboard: live charts from the service's own /metrics (Prometheus text).
// Plain SVG, no chart library. Every refresh takes one sample; a chart point is the
// change between two samples (rates, window p99 from histogram buckets, averages).
// Generic over what /metrics exposes: the named charts use the families they know, and
// every other family (a batcher's, say) is charted by its type in "All metrics".

import { h, s } from "/static/ui.js";

const MAX_SAMPLES = 90;        // 7.5 minutes at one sample per 5 s
const TOP_ROUTES = 6;
const COLORS = ["#2456d6", "#d6452a", "#1a7f4b", "#b54708", "#7a3fd1", "#0e8a9e", "#c11574", "#5f6b7a"];

// ---------------------------------------------------------------- parsing

function parseLabels(text) {
  const labels = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }
  return labels;
}

/** Prometheus text -> Map(family name -> {type, help, samples: [{name, labels, value}]}). */
export function parseMetrics(text) {
  const families = new Map();
  let current = null;
  const family = (name, type) => {
    if (!families.has(name)) families.set(name, { name, type: type || "untyped", help: "", samples: [] });
    return families.get(name);
  };
  for (const line of String(text).split("\n")) {
    if (!line.trim()) continue;
    if (line.startsWith("#")) {
      const m = /^# (TYPE|HELP) (\S+) ?(.*)$/.exec(line);
      if (!m) continue;
      // prometheus_client names a counter family "x_total" in its TYPE line, or "x" (in
      // multi-process mode): one family "x" either way, whose samples are "x_total".
      const type = m[1] === "TYPE" ? m[3].trim() : null;
      let name = m[2];
      if (name.endsWith("_total") && (type === "counter" || families.get(name.slice(0, -6))?.type === "counter")) name = name.slice(0, -6);
      if (name.endsWith("_total") && m[1] === "HELP") name = name.slice(0, -6);
      const f = family(name);
      if (type) { f.type = type; current = f; } else { f.help = m[3]; }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[4]);
    if (!Number.isFinite(value) && m[4] !== "+Inf") continue;
    const name = m[1];
    const owner = current && name.startsWith(current.name) ? current : family(name);
    owner.samples.push({ name, labels: m[3] ? parseLabels(m[3]) : {}, value });
  }
  // "x_created" gauges are the creation times of "x"'s children: not worth a chart.
  for (const name of [...families.keys()]) if (name.endsWith("_created")) families.delete(name);
  for (const [name, f] of families) if (!f.samples.length) families.delete(name);
  return families;
}

// ---------------------------------------------------------------- history

export class MetricsHistory {
  constructor() { this.samples = []; }

  add(text, at = Date.now()) {
    this.samples.push({ at, families: parseMetrics(text) });
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
  }

  get latest() { return this.samples[this.samples.length - 1] || null; }

  familyNames() { return this.latest ? [...this.latest.families.keys()] : []; }

  family(name) { return this.latest?.families.get(name) || null; }

  /** One point per pair of samples: fn(prevFamilies, curFamilies, seconds) -> {series: value}. */
  windows(fn) {
    const out = [];
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1], b = this.samples[i];
      const dt = (b.at - a.at) / 1000;
      if (dt > 0) out.push({ at: b.at, values: fn(a.families, b.families, dt) });
    }
    return out;
  }

  /** One point per sample: fn(families) -> {series: value} (gauges). */
  points(fn) {
    return this.samples.map((x) => ({ at: x.at, values: fn(x.families) }));
  }
}

// ---------------------------------------------------------------- derived values

function sum(families, family, suffix, match = () => true, key = () => "total") {
  const out = {};
  const f = families.get(family);
  if (!f) return out;
  for (const x of f.samples) {
    if (x.name !== family + suffix || !match(x.labels)) continue;
    const k = key(x.labels);
    out[k] = (out[k] || 0) + x.value;
  }
  return out;
}

function deltas(a, b, family, suffix, match, key) {
  const before = sum(a, family, suffix, match, key);
  const after = sum(b, family, suffix, match, key);
  const out = {};
  for (const [k, v] of Object.entries(after)) out[k] = Math.max(0, v - (before[k] || 0));
  return out;
}

export function rate(family, { match, key } = {}) {
  return (a, b, dt) => {
    const d = deltas(a, b, family, "_total", match, key);
    return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v / dt]));
  };
}

/** The q-quantile of the observations made between two samples, per group, from the
 * change of each cumulative bucket (linear inside a bucket, as Prometheus does). */
export function windowQuantile(family, q, { match, key } = {}) {
  return (a, b) => {
    const grouped = {};
    const collect = (fams, sign) => {
      const f = fams.get(family);
      if (!f) return;
      for (const x of f.samples) {
        if (x.name !== `${family}_bucket` || (match && !match(x.labels))) continue;
        const g = key ? key(x.labels) : "total";
        const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
        grouped[g] = grouped[g] || new Map();
        grouped[g].set(le, (grouped[g].get(le) || 0) + sign * x.value);
      }
    };
    collect(b, 1);
    collect(a, -1);
    const out = {};
    for (const [g, buckets] of Object.entries(grouped)) {
      const bounds = [...buckets.keys()].sort((x, y) => x - y);
      const total = buckets.get(Infinity) || 0;
      if (total <= 0) continue;
      const rank = q * total;
      let prevBound = 0, prevCount = 0;
      for (const le of bounds) {
        const c = buckets.get(le);
        if (c >= rank) {
          if (le === Infinity) { out[g] = prevBound; break; }
          const inBucket = c - prevCount;
          out[g] = inBucket > 0 ? prevBound + ((le - prevBound) * (rank - prevCount)) / inBucket : le;
          break;
        }
        prevBound = le; prevCount = c;
      }
    }
    return out;
  };
}

/** Mean observation between two samples (histograms and summaries: delta sum / delta count). */
export function windowMean(family, { key } = {}) {
  return (a, b) => {
    const s1 = deltas(a, b, family, "_sum", undefined, key);
    const c1 = deltas(a, b, family, "_count", undefined, key);
    const out = {};
    for (const [k, c] of Object.entries(c1)) if (c > 0) out[k] = (s1[k] || 0) / c;
    return out;
  };
}

export function gauge(family, { key } = {}) {
  return (fams) => sum(fams, family, "", undefined, key);
}

function mergeInto(target, values, rename) {
  for (const [k, v] of Object.entries(values)) {
    const name = rename(k);
    target[name] = (target[name] || 0) + v;
  }
  return target;
}

// ---------------------------------------------------------------- SVG

function formatValue(v, unit) {
  if (!Number.isFinite(v)) return "—";
  if (unit === "ms") return v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`;
  const abs = Math.abs(v);
  const text = abs >= 100 ? v.toFixed(0) : abs >= 10 ? v.toFixed(1) : v.toFixed(2);
  return unit ? `${text} ${unit}` : text;
}

/** A multi-series line chart of points [{at, values: {series: number}}]. */
export function lineChart(points, { unit = "", seriesOrder = null, height = 170, empty = "Collecting samples…" } = {}) {
  const names = seriesOrder || [...new Set(points.flatMap((p) => Object.keys(p.values)))];
  if (points.length < 2 || !names.length) return h("p", { class: "muted small", text: empty });
  const W = 560, H = height, L = 58, R = 10, T = 10, B = 22;
  let hi = 0;
  for (const p of points) for (const n of names) hi = Math.max(hi, p.values[n] || 0);
  if (hi <= 0) hi = 1;
  hi *= 1.1;
  const t0 = points[0].at, t1 = points[points.length - 1].at;
  const x = (t) => L + ((t - t0) * (W - L - R)) / Math.max(1, t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - v / hi);
  const grid = [];
  for (let k = 0; k <= 3; k++) {
    const v = (hi * k) / 3;
    grid.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
    grid.push(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, formatValue(v, unit)));
  }
  const lines = names.map((n, i) => {
    let d = "";
    for (const p of points) {
      const v = p.values[n];
      if (v === undefined) continue;
      d += `${d ? " L" : "M"}${x(p.at).toFixed(1)},${y(v).toFixed(1)}`;
    }
    return d ? s("path", { d, class: "series", stroke: COLORS[i % COLORS.length] },
      s("title", null, n)) : null;
  });
  const span = Math.round((t1 - t0) / 1000);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img",
      "aria-label": `${names.join(", ")} over the last ${span} s` },
    ...grid, ...lines,
    s("text", { x: L, y: H - 6, class: "axis" }, `−${span}s`),
    s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, "now"));
  const last = points[points.length - 1].values;
  const legend = h("ul", { class: "legend" }, names.map((n, i) => h("li", null,
    h("span", { class: "swatch", "data-color": i % COLORS.length }),
    h("span", { class: "legend-name", text: n }),
    h("span", { class: "legend-value", text: formatValue(last[n] ?? NaN, unit) }))));
  return h("div", { class: "line-chart" }, svg, legend);
}

// ---------------------------------------------------------------- the charts

const REQUESTS = "payguard_http_requests";
const LATENCY = "payguard_http_request_duration_seconds";
const routeKey = (l) => `${l.method} ${l.route}`;

function topRoutes(history) {
  const w = history.windows(rate(REQUESTS, { key: routeKey }));
  const totals = {};
  for (const p of w.slice(-12)) for (const [k, v] of Object.entries(p.values)) totals[k] = (totals[k] || 0) + v;
  return Object.entries(totals).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])
    .slice(0, TOP_ROUTES).map(([k]) => k);
}

function only(names, fn) {
  return (...args) => {
    const all = fn(...args);
    return Object.fromEntries(names.filter((n) => n in all).map((n) => [n, all[n]]));
  };
}

/** The named charts: [{title, note, render(history) -> Node}]. */
export const CHARTS = [
  {
    id: "rps", title: "Requests per second by route",
    render(history) {
      const routes = topRoutes(history);
      return lineChart(history.windows(only(routes, rate(REQUESTS, { key: routeKey }))),
        { unit: "/s", seriesOrder: routes, empty: "No requests yet." });
    },
  },
  {
    id: "p99", title: "p99 latency by route",
    render(history) {
      const routes = topRoutes(history);
      const p99 = only(routes, windowQuantile(LATENCY, 0.99, { key: routeKey }));
      return lineChart(history.windows((a, b) => mapValues(p99(a, b), (v) => v * 1000)),
        { unit: "ms", seriesOrder: routes, empty: "No requests yet." });
    },
  },
  {
    id: "purchases", title: "Purchases completed per second",
    note: "wallet: POST /api/purchases answered 201 (replays included); card: completed by a webhook or by the reconciler",
    render(history) {
      return lineChart(history.windows((a, b, dt) => {
        const out = {};
        mergeInto(out, rate(REQUESTS, { match: (l) => l.route === "/api/purchases" && l.method === "POST" && l.status === "201" })(a, b, dt), () => "wallet");
        mergeInto(out, rate("payguard_webhook_events", { match: (l) => l.outcome === "completed" })(a, b, dt), () => "card (webhook)");
        mergeInto(out, rate("payguard_reconciler_actions", { match: (l) => l.action === "completed" })(a, b, dt), () => "card (reconciler)");
        return out;
      }), { unit: "/s", seriesOrder: ["wallet", "card (webhook)", "card (reconciler)"] });
    },
  },
  {
    id: "batches", title: "Batch sizes",
    note: "every metric family with \"batch\" in its name",
    render(history) {
      const families = history.familyNames().filter((n) => /batch/i.test(n));
      if (!families.length) return h("p", { class: "muted small", text: "This server exposes no batch metrics (no batching)." });
      return lineChart(history.windows((a, b, dt) => {
        const out = {};
        for (const name of families) {
          const f = b.get(name);
          if (!f) continue;
          if (f.type === "histogram" || f.type === "summary") mergeInto(out, windowMean(name)(a, b), () => `${name} (mean)`);
          else if (f.type === "gauge") mergeInto(out, gauge(name)(b), () => name);
          else if (f.type === "counter") mergeInto(out, rate(name)(a, b, dt), () => `${name} /s`);
        }
        return out;
      }));
    },
  },
  {
    id: "locks", title: "Lock waits",
    note: "average wait of the leases granted in each interval; timeouts per second; leases held",
    render(history) {
      const wait = history.windows((a, b, dt) => {
        const acquired = deltas(a, b, "payguard_lock_acquired", "_total").total || 0;
        const waited = deltas(a, b, "payguard_lock_wait_seconds", "_total").total || 0;
        const out = { "timeouts /s": (deltas(a, b, "payguard_lock_timeouts", "_total").total || 0) / dt };
        out["avg wait ms"] = acquired > 0 ? (waited / acquired) * 1000 : 0;
        out.held = sum(b, "payguard_locks_held", "").total || 0;
        return out;
      });
      return lineChart(wait, { seriesOrder: ["avg wait ms", "timeouts /s", "held"] });
    },
  },
  {
    id: "provider", title: "Provider calls in flight and queued",
    render(history) {
      return lineChart(history.points((f) => ({
        "in flight": sum(f, "payguard_provider_in_flight", "").total || 0,
        queued: sum(f, "payguard_provider_queue_depth", "").total || 0,
      })), { seriesOrder: ["in flight", "queued"] });
    },
  },
  {
    id: "webhooks", title: "Webhook events per second",
    render(history) {
      return lineChart(history.windows(rate("payguard_webhook_events", { key: (l) => l.outcome })),
        { unit: "/s", empty: "No webhook events yet." });
    },
  },
];

function mapValues(obj, fn) {
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, fn(v)]));
}

/** Every family by its type: counters as a rate, gauges as values, histograms as mean. */
export function genericChart(history, name) {
  const f = history.family(name);
  if (!f) return h("p", { class: "muted small", text: "gone" });
  let points, unit = "";
  if (f.type === "counter") { points = history.windows(rate(name)); unit = "/s"; }
  else if (f.type === "gauge") points = history.points(gauge(name));
  else if (f.type === "histogram" || f.type === "summary") points = history.windows(windowMean(name));
  else points = history.points((fams) => sum(fams, name, ""));
  return lineChart(points, { unit, height: 120 });
}
