// Charts as inline SVG built in the page (no library, no CDN): the forecast fan, the loss per epoch and
// skill across versions. Each scales to its box (viewBox), so it stays readable at 390 px.

import { fmt, signedPct } from "./util.js";

const NS = "http://www.w3.org/2000/svg";
const W = 400;
const H = 210;
const PAD = { left: 46, right: 10, top: 18, bottom: 30 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function linear([d0, d1], [r0, r1]) {
  const span = d1 - d0 || 1;
  return (x) => r0 + ((x - d0) / span) * (r1 - r0);
}

function extent(values, padding = 0.06) {
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
  const pad = (hi - lo) * padding;
  return [lo - pad, hi + pad];
}

// A chart's frame: the root <svg>, its title, y gridlines with labels; returns the root and scales.
function frame(label, xDomain, yDomain, yLabel) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" });
  root.append(svg("title", {}, label));
  const x = linear(xDomain, [PAD.left, W - PAD.right]);
  const y = linear(yDomain, [H - PAD.bottom, PAD.top]);
  for (let i = 0; i <= 3; i += 1) {
    const v = yDomain[0] + ((yDomain[1] - yDomain[0]) * i) / 3;
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: PAD.left - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, yLabel(v)));
  }
  return { root, x, y };
}

function path(points) {
  return points.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
}

function xLabel(root, x, text, anchor) {
  root.append(svg("text", { x, y: H - 8, class: "axis", "text-anchor": anchor }, text));
}

// The last closes, then the forecast's median and its p10–p90 band from the last close on. The forecast's
// few days get the right quarter of the width, so its band is not a sliver beside 60 closes.
export function fanChart(closes, forecast, title) {
  const n = closes.length;
  const last = closes[n - 1];
  const values = [...closes.map((c) => c.close), ...forecast.flatMap((d) => [d.p10, d.p90])];
  const { root, y } = frame(title, [0, 1], extent(values), (v) => fmt(v, v >= 1000 ? 0 : 1));
  const split = PAD.left + 0.75 * (W - PAD.left - PAD.right);
  const past = linear([0, n - 1], [PAD.left, split]);
  const ahead = linear([0, forecast.length], [split, W - PAD.right]);
  const start = [split, y(last.close)];
  const at = (field) => [start, ...forecast.map((d, i) => [ahead(i + 1), y(d[field])])];
  const band = path(at("p10")) + path(at("p90").reverse()).replace("M", "L") + "Z";
  root.append(svg("path", { d: band, class: "band" }),
    svg("path", { d: path(closes.map((c, i) => [past(i), y(c.close)])), class: "closes" }),
    svg("path", { d: path(at("p50")), class: "median" }),
    svg("line", { x1: split, x2: split, y1: PAD.top, y2: H - PAD.bottom, class: "divider" }));
  xLabel(root, PAD.left, closes[0].date, "start");
  xLabel(root, split - 4, last.date, "end");
  xLabel(root, W - PAD.right, forecast[forecast.length - 1].date, "end");
  return root;
}

// Train and validation loss, one point per epoch, the phases side by side with a line between them.
export function lossChart(losses) {
  const values = losses.flatMap((e) => [e.loss, e.val_loss]);
  // Half an epoch of margin each side: the first and last points stay clear of the frame.
  const { root, x, y } = frame("Training and validation loss per epoch", [-0.5, losses.length - 0.5],
    extent(values), (v) => fmt(v, 3));
  const series = [["loss", "pt-loss", "line-loss"], ["val_loss", "pt-val", "line-val"]];
  let start = 0;
  for (let i = 1; i <= losses.length; i += 1) {
    if (i < losses.length && losses[i].phase === losses[start].phase) continue;
    const phase = losses.slice(start, i);  // one phase's epochs: its own line segments
    for (const [field, dot, line] of series) {
      const points = phase.map((e, k) => [x(start + k), e[field]]).filter(([, v]) => typeof v === "number");
      root.append(svg("path", { d: path(points.map(([px, v]) => [px, y(v)])), class: line }));
      for (const [px, v] of points) root.append(svg("circle", { cx: px, cy: y(v), r: 3, class: dot }));
    }
    const middle = Math.min(W - PAD.right - 24, Math.max(PAD.left + 24, (x(start) + x(i - 1)) / 2));
    const name = losses[start].phase;
    root.append(svg("text", { x: middle, y: PAD.top - 5, class: "axis", "text-anchor": "middle" }, name));
    if (start > 0) {
      const at = (x(start - 1) + x(start)) / 2;
      root.append(svg("line", { x1: at, x2: at, y1: PAD.top, y2: H - PAD.bottom, class: "divider" }));
    }
    start = i;
  }
  xLabel(root, W - PAD.right, `${losses.length} epochs`, "end");
  legend(root, [["line-loss", "train"], ["line-val", "validation"]]);
  return root;
}

function legend(root, entries) {
  entries.forEach(([cls, text], i) => {
    const lx = PAD.left + 8 + i * 90;
    root.append(svg("line", { x1: lx, x2: lx + 16, y1: H - 22, y2: H - 22, class: cls }),
      svg("text", { x: lx + 20, y: H - 18, class: "axis" }, text));
  });
}

// Each evaluated version's skill over the reference with its 90 % interval; zero is "no skill".
export function skillChart(versions) {
  const shown = versions.filter((v) => v.skill);
  const values = [0, ...shown.flatMap((v) => [v.skill.lo, v.skill.hi])];
  const { root, x, y } = frame("Skill over zero+EWMA per version (90 % interval)",
    [-0.5, Math.max(0.5, shown.length - 0.5)], extent(values, 0.1), signedPct);
  root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), class: "divider" }));
  shown.forEach((v, i) => {
    const cls = v.champion ? "skill champion" : "skill";
    root.append(svg("line", { x1: x(i), x2: x(i), y1: y(v.skill.lo), y2: y(v.skill.hi), class: "whisker" }),
      svg("circle", { cx: x(i), cy: y(v.skill.skill), r: 4, class: cls, "data-version": v.version }),
      svg("text", { x: x(i), y: H - 8, class: "axis", "text-anchor": "middle" }, "v" + v.version));
  });
  return root;
}
