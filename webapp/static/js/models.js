// The models view: every registered model; a model opens its card, its versions with their champion
// decisions, a candidate beside the champion (with the Diebold–Mariano test of the decision) and the
// skill of each version over time.

import { Unauthorized, getOk } from "./api.js";
import { $, el, fmt, interval, pct } from "./util.js";
import { evaluationNote, fetchCard, notEvaluated } from "./result.js";
import { skillChart } from "./svg.js";

const state = { name: null, versions: [] };

function modelRow(m, card) {
  const v = card && card.verdict;
  const ev = card && card.evaluation;
  const row = el("tr", null, { "data-model": m.name });
  const open = el("button", m.name, { type: "button", class: "link" });
  open.setAttribute("aria-label", `Open model ${m.name}`);
  open.addEventListener("click", () => openModel(m.name));
  const name = el("th", null, { scope: "row" });
  name.append(open);
  row.append(name, el("td", m.kind || ""),
    el("td", m.champion_version ? "v" + m.champion_version : "none"), el("td", m.trained_until || "—"),
    el("td", ev ? interval(v) + (v.measurable ? "" : " — no measurable skill") : card ? "not evaluated yet" : "—"),
    el("td", ev ? pct(ev.pooled.coverage_80[ev.recipe]) : "—"),
    el("td", ev ? `${ev.evaluated_at.slice(0, 10)} (${ev.period[0]} to ${ev.period[1]})` : "—"));
  return row;
}

export async function refreshModels() {
  const status = $("#models-status");
  status.textContent = "Loading…";
  try {
    const data = await getOk("/models");
    const cards = await Promise.all(data.models.map((m) =>
      m.champion_version ? fetchCard(m.name).catch(() => null) : null));
    $("#models-table tbody").replaceChildren(...data.models.map((m, i) => modelRow(m, cards[i])));
    status.textContent = data.models.length
      ? "Open a model for its versions." : "No registered models yet: train the parent first.";
  } catch (e) {
    if (!(e instanceof Unauthorized)) status.textContent = "Models unavailable: " + e.message;
  }
}

function dmText(decision) {
  // The DM test a decision saw is its recipe's evaluation against zero+EWMA (a refit version has no
  // out-of-sample period of its own to test against the champion's): say so, and which champion it faced.
  const dm = decision && decision.dm;
  if (!dm) return "—";
  const faced = dm.against_version ? `, champion then v${dm.against_version}` : "";
  return `DM ${fmt(dm.statistic, 2)}, p ${fmt(dm.p_value, 3)} vs zero+EWMA${faced}`;
}

function versionRow(v) {
  const row = el("tr", null, { "data-version": v.version, class: v.champion ? "champion" : "" });
  const compare = el("button", v.champion ? "champion" : "compare", { type: "button", class: "link" });
  compare.disabled = v.champion;
  compare.addEventListener("click", () => compareVersions(v.version));
  const cell = el("td");
  cell.append(compare);
  const decision = v.decision || {};
  row.append(el("th", "v" + v.version + (v.champion ? " ★" : ""), { scope: "row" }),
    el("td", (v.created_at || "").slice(0, 16).replace("T", " ")), el("td", v.trained_until || "—"),
    el("td", interval(v.skill)), el("td", decision.text || "—", { class: "wrap" }), el("td", dmText(decision)), cell);
  return row;
}

// One column of the comparison: a version's facts from its card and its versions entry.
function column(title, v, card) {
  const col = el("div", null, { class: "side", "data-version": v.version });
  const facts = el("dl", null, { class: "facts" });
  const sel = card.selection || {};
  const add = (name, value) => facts.append(el("dt", name), el("dd", value));
  add("Version", `v${v.version}${v.champion ? " (champion)" : ""}`);
  add("Trained until", card.trained_until || v.trained_until || "—");
  add("Strategy", card.strategy || "—");
  add("Selection", `best epoch ${sel.best_epoch ?? "—"}, val loss ${fmt(sel.best_val_loss, 4)}`);
  add("Skill", interval(v.skill));
  add("Decision", (v.decision || {}).text || "—");
  col.append(el("h4", title), facts);
  return col;
}

async function compareVersions(candidate) {
  const box = $("#compare");
  const champion = state.versions.find((v) => v.champion);
  const other = state.versions.find((v) => v.version === candidate);
  const pair = [champion, other].filter(Boolean);
  try {
    const cards = await Promise.all(pair.map((v) => fetchCard(state.name, v.version)));
    const cols = pair.map((v, i) => column(v.champion ? "Champion" : "Candidate", v, cards[i]));
    const sides = el("div", null, { class: "sides" });
    sides.append(...cols.reverse());
    box.replaceChildren(sides);
    if (other && !other.champion) {
      box.append(el("p", "The evaluation this candidate's decision saw: " + dmText(other.decision), { id: "compare-dm" }));
    }
  } catch (e) {
    if (!(e instanceof Unauthorized)) box.replaceChildren(el("p", "No comparison: " + e.message, { class: "error" }));
  }
}

export async function openModel(name) {
  state.name = name;
  const panel = $("#model");
  panel.hidden = false;
  $("#model-title").textContent = name;
  for (const id of ["#compare", "#skill-chart", "#versions-table tbody"]) $(id).replaceChildren();
  $("#versions-status").textContent = "Loading…";
  for (const row of document.querySelectorAll("#models-table tbody tr")) {
    row.classList.toggle("open", row.dataset.model === name);
  }
  panel.focus();
  try {
    const [card, data] = await Promise.all([
      fetchCard(name).catch(() => null), getOk(`/models/${encodeURIComponent(name)}/versions`)]);
    if (state.name !== name) return;
    $("#model-card").textContent = card
      ? `Champion v${card.version}, trained until ${card.trained_until}: ` +
        (card.evaluation ? `${card.verdict.text}. ${evaluationNote(card.evaluation)}` : notEvaluated())
      : "No champion.";
    state.versions = data.versions;
    $("#versions-table tbody").replaceChildren(...data.versions.map(versionRow));
    $("#skill-chart").replaceChildren(data.versions.some((v) => v.skill)
      ? skillChart([...data.versions].reverse())
      : el("p", "No version evaluated yet: skill appears once `stockq evaluate` has run.", { class: "hint" }));
    $("#versions-status").textContent = `${data.versions.length} version(s), newest first.`;
    const candidate = data.versions.find((v) => !v.champion);
    await compareVersions(candidate ? candidate.version : data.champion_version);
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("#versions-status").textContent = "Versions unavailable: " + e.message;
  }
}

export function forgetModels() {
  state.name = null;
  state.versions = [];
  $("#models-table tbody").replaceChildren();
  $("#model").hidden = true;
}
