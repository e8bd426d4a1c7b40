// Small helpers every view uses: DOM building (text only, never markup) and number formatting.

export const $ = (sel) => document.querySelector(sel);

export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const finite = (x) => typeof x === "number" && Number.isFinite(x);

export function fmt(x, digits = 2) {
  return finite(x) ? x.toFixed(digits) : "—";
}

export function pct(x, digits = 1) {
  return finite(x) ? (100 * x).toFixed(digits) + " %" : "—";
}

export function signedPct(x) {
  return finite(x) ? (x >= 0 ? "+" : "") + (100 * x).toFixed(1) + " %" : "—";
}

export function interval(s) {
  return s ? `${signedPct(s.skill)} (${signedPct(s.lo)} to ${signedPct(s.hi)})` : "—";
}

export function seconds(s) {
  return s < 60 ? s.toFixed(1) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}

// How long a job has run: to its end, or to now while it runs (the page ticks it every second).
export function duration(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at || Date.now() / 1000;
  return seconds(Math.max(0, end - job.started_at));
}

export function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

export function tickerOf(job) {
  const p = job.params || {};
  if (job.type === "evaluate" && !p.tickers) return "every ingested";
  return p.ticker || (p.tickers || []).join(", ");
}

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
