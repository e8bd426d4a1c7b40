// A finished job's result, drawn from what the record stores: never a new job. A prediction's or a
// training's forecast (a training's is its own version's) as a fan chart and a table, and the model card.

import { Unauthorized, errorText, json } from "./api.js";
import { $, el, fmt, pct, signedPct } from "./util.js";
import { fanChart } from "./svg.js";

// Where a result keeps its forecast: at its top (a prediction) or under `forecast` (a training).
function forecastOf(result) {
  if (Array.isArray(result.forecast)) return result;
  const inner = result.forecast;
  if (inner && Array.isArray(inner.forecast)) return { recent_closes: result.recent_closes, ...inner };
  return null;
}

function showChart(f, ticker) {
  if (!(f.recent_closes || []).length || !f.forecast.length) return;
  const title = `${ticker}: last closes, 7-day median forecast and 80 % band`;
  $("#chart-svg").replaceChildren(fanChart(f.recent_closes, f.forecast, title));
  $("#chart").hidden = false;
}

function showForecast(f) {
  const rows = f.forecast.map((d) => {
    const row = el("tr");
    row.append(el("td", d.date), el("td", fmt(d.p10)), el("td", fmt(d.p50)), el("td", fmt(d.p90)),
      el("td", signedPct(Math.expm1(d.log_return_p50))));
    return row;
  });
  $("#forecast-table tbody").replaceChildren(...rows);
  const m = f.model || {};
  $("#forecast-note").textContent = `${m.name} v${m.version}, from the close of ${f.as_of} ` +
    `(${fmt(f.last_close)}; data: ${f.data_source || "?"}). p10–p90 is the 80 % band` +
    `${f.fallback ? "; fallback: " + f.fallback : ""}.`;
  $("#forecast").hidden = false;
}

export async function fetchCard(name, version) {
  const query = version ? "?version=" + encodeURIComponent(version) : "";
  const { status, data } = await json("GET", "/models/" + encodeURIComponent(name) + query);
  if (status !== 200) throw new Error(errorText(data, status));
  return data;
}

export function evaluationNote(ev) {
  const c = ev.counts;
  return `Evaluation of ${ev.evaluated_at.slice(0, 10)}: decisions ${ev.period[0]} to ${ev.period[1]}, ` +
    `${ev.tickers.length} tickers, ${ev.origins} refits (${ev.universe} universe). ` +
    `${c.skill_over_reference} of ${c.tickers} tickers show skill over zero+EWMA on their own; ` +
    `${c.coverage_80_in_75_85} keep 80 % coverage within 75–85 %.`;
}

function valueCell(value, detail) {
  const cell = el("td", value);
  if (detail) cell.append(el("span", detail, { class: "small" }));  // its interval on a line of its own
  return cell;
}

function showEvaluation(ev) {
  // Pooled over every ticker: each forecaster's loss and coverage, the recipe's skill over it and DM p.
  const rows = [ev.recipe, ev.reference, ...ev.baselines].map((label) => {
    const s = ev.pooled.skill[label];
    const row = el("tr", null, { "data-forecaster": label });
    row.append(el("th", label, { scope: "row" }), el("td", fmt(ev.pooled.pinball[label], 5)),
      s ? valueCell(signedPct(s.skill), `${signedPct(s.lo)} to ${signedPct(s.hi)}`) : el("td"),
      el("td", s ? fmt(s.dm_p_value, 3) : ""), el("td", pct(ev.pooled.coverage_80[label])));
    return row;
  });
  $("#evaluation-table tbody").replaceChildren(...rows);
  $("#evaluation").hidden = false;
}

// The server renders the benchmark's cost of an evaluation into the page (webapp/evaluation_cost.py).
export const notEvaluated = () => document.body.dataset.notEvaluated;

async function showCard(name, version) {
  let card;
  try {
    card = await fetchCard(name, version);
  } catch (e) {
    if (e instanceof Unauthorized) return null;
    $("#card-note").textContent = "No model card: " + e.message;
    $("#card").hidden = false;
    return null;
  }
  $("#card").hidden = false;
  $("#card-verdict").textContent = `${card.name} v${card.version}${card.champion ? " (champion)" : ""}: ` +
    (card.evaluation ? card.verdict.text : notEvaluated());
  const ev = card.evaluation;
  const decision = `Trained until ${card.trained_until}. ` +
    `Decision: ${(card.decision || {}).text || card.champion_decision || "—"}`;
  $("#card-note").textContent = ev ? evaluationNote(ev) + " " + decision : decision;
  if (ev) showEvaluation(ev);
  return card;
}

// A training says whether its version serves now (the card's alias) and what was decided when it finished.
function championNote(r, card) {
  const now = card ? card.champion : r.champion;
  const when = r.champion ? "promoted when it finished" : `not promoted when it finished: ${r.decision}`;
  const note = $("#champion-note");
  note.textContent = `${r.name} v${r.version} ${now ? "is the champion" : "is not the champion"} (${when}).`;
  note.dataset.champion = String(now);
  note.hidden = false;
}

export async function showResult(job) {
  const r = job.result || {};
  const f = forecastOf(r);
  if (f) {
    showChart(f, (job.params || {}).ticker || "");
    showForecast(f);
  } else if (r.forecast_error) {
    $("#forecast-note").textContent = "No forecast: " + errorText({ error: r.forecast_error }, "");
    $("#forecast").hidden = false;
  }
  const model = job.type === "train" ? { name: r.name, version: r.version } : (f && f.model) || r.model;
  const card = model && model.name ? await showCard(model.name, model.version) : null;
  if (job.type === "train" && r.version) championNote(r, card);
  if (job.type === "analyze") {
    $("#detail-facts").append(el("dt", "Stance"), el("dd", `${r.stance} (confidence ${fmt(r.confidence)})`));
  }
  if (job.type === "evaluate") {
    $("#card").hidden = false;
    $("#card-verdict").textContent = r.verdict.text;
    $("#card-note").textContent = evaluationNote(r) + ` ${fmt(r.seconds / 60, 1)} min on ${r.device}.`;
    showEvaluation(r);
  }
}

export function clearResult() {
  for (const id of ["#chart", "#forecast", "#report", "#card", "#evaluation", "#champion-note"]) $(id).hidden = true;
  for (const id of ["#chart-svg", "#forecast-table tbody", "#evaluation-table tbody", "#report-body"]) {
    $(id).replaceChildren();
  }
  for (const id of ["#forecast-note", "#card-verdict", "#card-note", "#champion-note"]) $(id).textContent = "";
}
