// The stockq console: every call goes to the API with the key from sessionStorage; a 401 asks for it again.
// Data is put on the page as text (textContent), never as markup, except the report the server sanitised.
"use strict";

const KEY = "stockq.apiKey";
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const state = { pages: 1, openJob: null, poll: null, chartUrl: null, generation: 0 };
const $ = (sel) => document.querySelector(sel);

class Unauthorized extends Error {}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function fmt(x, digits = 2) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "—";
}

function pct(x, digits = 1) {
  return typeof x === "number" && Number.isFinite(x) ? (100 * x).toFixed(digits) + " %" : "—";
}

function signedPct(x) {
  return typeof x === "number" ? (x >= 0 ? "+" : "") + (100 * x).toFixed(1) + " %" : "—";
}

// --- the key ------------------------------------------------------------------------------------------

function askKey(message) {
  const dialog = $("#key-dialog");
  const error = $("#key-error");
  error.hidden = !message;
  error.textContent = message || "";
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

function forgetData() {
  // A key change (or a refused key) leaves nothing of the previous tenant's on the page.
  state.generation += 1;
  state.openJob = null;
  $("#submit-status").textContent = "";
  delete $("#submit-status").dataset.jobId;
  $("#jobs-table tbody").replaceChildren();
  $("#models-table tbody").replaceChildren();
  $("#detail").hidden = true;
  clearDetail();
}

async function api(method, path, body) {
  const generation = state.generation;
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (generation !== state.generation) throw new Unauthorized("stale");  // the key changed meanwhile
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    forgetData();
    askKey(key ? "The API refused that key (401): enter a valid one." : "This API needs a key.");
    throw new Unauthorized("401");
  }
  return response;
}

async function json(method, path, body) {
  const response = await api(method, path, body);
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

function errorText(data, status) {
  const error = data && data.error;
  return error ? `${error.code}: ${error.message}` : `HTTP ${status}`;
}

// --- submitting -----------------------------------------------------------------------------------------

function kind() {
  return document.querySelector('input[name="kind"]:checked').value;
}

function showFields() {
  const k = kind();
  for (const node of document.querySelectorAll("[data-for]")) {
    const on = node.dataset.for === k;
    node.hidden = !on;
    if ("disabled" in node && node.tagName !== "LABEL") node.disabled = !on;
  }
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("#submit-status");
  const ticker = form.ticker.value.trim();
  if (!form.ticker.checkValidity() || !ticker) {
    status.textContent = "Enter a ticker: 1-12 of A-Z a-z 0-9 ^ . = -";
    form.ticker.focus();
    return;
  }
  const k = kind();
  let path, body;
  if (k === "train") {
    path = "/train";
    body = { ticker, strategy: form.strategy.value };
    if (form.epochs.value) body.epochs = Number(form.epochs.value);
  } else if (k === "predict") {
    path = "/predict-child";
    body = { ticker, model: form.model.value };
  } else {
    path = "/agent/chat";
    body = { ticker };
    if (form.question.value.trim()) body.question = form.question.value.trim();
  }
  try {
    const { status: code, data } = await json("POST", path, body);
    if (code === 202 || code === 200) {
      status.textContent = `Submitted ${k} ${ticker}: job ${data.job_id}`;
      status.dataset.jobId = data.job_id;
      refreshJobs();
    } else {
      status.textContent = "Refused: " + errorText(data, code);
    }
  } catch (e) {
    if (!(e instanceof Unauthorized)) status.textContent = "The API is unreachable: " + e.message;
  }
}

// --- the job table --------------------------------------------------------------------------------------

function tickerOf(job) {
  const p = job.params || {};
  if (job.type === "evaluate" && !p.tickers) return "every ingested";
  return p.ticker || (p.tickers || []).join(", ");
}

function duration(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at || Date.now() / 1000;
  const s = Math.max(0, end - job.started_at);
  return s < 60 ? s.toFixed(1) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}

function progressCell(job) {
  const cell = el("td");
  const p = job.progress || {};
  if (p.epochs) {
    const bar = el("progress", null, { max: p.epochs, value: p.epoch || 0 });
    bar.setAttribute("aria-label", `epoch ${p.epoch} of ${p.epochs}`);
    // a training counts the epochs of each phase (select, then refit) from 1
    const phase = p.phase ? p.phase + " " : "";
    cell.append(bar, el("span", `${phase}epoch ${p.epoch}/${p.epochs} · loss ${fmt(p.loss, 4)}`, { class: "small" }));
  } else if (p.steps) {  // an evaluation: step k of n is running (an origin, then the baselines)
    cell.append(el("progress", null, { max: p.steps, value: p.step - 1 }),
      el("span", `${p.text} (${p.step}/${p.steps})`, { class: "small" }));
  } else if (p.total) {
    cell.append(el("progress", null, { max: p.total, value: p.done || 0 }),
      el("span", `${p.done}/${p.total}`, { class: "small" }));
  } else {
    cell.textContent = job.status === "running" ? "…" : "";
  }
  return cell;
}

function jobRow(job) {
  const row = el("tr", null, { "data-job-id": job.job_id, "data-status": job.status });
  if (job.job_id === state.openJob) row.classList.add("open");
  const open = el("button", job.job_id.slice(0, 8), { type: "button", class: "link" });
  open.setAttribute("aria-label", `Open ${job.type} job ${job.job_id}`);
  open.addEventListener("click", () => openJob(job.job_id));
  const first = el("td");
  first.append(open);
  row.append(first, el("td", job.type), el("td", tickerOf(job)),
    el("td", job.status, { class: "status " + job.status }), el("td", job.stage || ""), progressCell(job),
    el("td", job.attempt), el("td", duration(job)));
  return row;
}

async function refreshJobs() {
  const params = new URLSearchParams({ limit: "25" });
  if ($("#filter-status").value) params.set("status", $("#filter-status").value);
  if ($("#filter-type").value) params.set("type", $("#filter-type").value);
  const jobs = [];
  let cursor = null;
  for (let page = 0; page < state.pages; page += 1) {
    if (cursor !== null) params.set("cursor", cursor);
    const { status, data } = await json("GET", "/jobs?" + params);
    if (status !== 200) throw new Error(errorText(data, status));
    jobs.push(...data.jobs);
    cursor = data.next_cursor;
    if (cursor === null) break;
  }
  $("#jobs-table tbody").replaceChildren(...jobs.map(jobRow));
  $("#jobs-empty").hidden = jobs.length > 0;
  $("#older").hidden = cursor === null;
  return jobs;
}

function schedule(ms) {
  clearTimeout(state.poll);
  state.poll = setTimeout(poll, ms);
}

async function poll() {
  if (document.hidden || $("#key-dialog").open) return schedule(2000);
  try {
    const jobs = await refreshJobs();
    const active = jobs.some((j) => !FINISHED.has(j.status));
    if (state.openJob && jobs.some((j) => j.job_id === state.openJob && j.status !== $("#detail").dataset.status)) {
      openJob(state.openJob, false);
    }
    schedule(active ? 400 : 4000);  // a running training reports every epoch
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("#submit-status").textContent = "Jobs unavailable: " + e.message;
    schedule(4000);
  }
}

// --- a job's detail ------------------------------------------------------------------------------------

function clearDetail() {
  for (const id of ["#chart", "#forecast", "#report", "#card", "#evaluation", "#detail-error"]) $(id).hidden = true;
  for (const id of ["#detail-facts", "#detail-links", "#forecast-table tbody", "#evaluation-table tbody",
    "#report-body"]) $(id).replaceChildren();
  for (const id of ["#chart-status", "#forecast-note", "#card-verdict", "#card-note", "#detail-json"]) {
    $(id).textContent = "";
  }
  if (state.chartUrl) URL.revokeObjectURL(state.chartUrl);
  state.chartUrl = null;
  $("#chart-img").removeAttribute("src");
}

function fact(name, value) {
  $("#detail-facts").append(el("dt", name), el("dd", value));
}

async function openJob(jobId, focus = true) {
  const first = state.openJob !== jobId;
  state.openJob = jobId;
  const detail = $("#detail");
  try {
    const { status, data: job } = await json("GET", "/status/" + encodeURIComponent(jobId));
    if (status !== 200) throw new Error(errorText(job, status));
    if (!first && job.status === detail.dataset.status) return;
    clearDetail();
    detail.dataset.status = job.status;
    detail.dataset.jobId = jobId;
    detail.hidden = false;
    $("#detail-title").textContent = `${job.type} ${tickerOf(job)} · ${job.status}`;
    fact("Job", job.job_id);
    fact("Owner", job.owner || "—");
    fact("Stage", job.stage || "—");
    fact("Attempt", job.attempt);
    fact("Duration", duration(job));
    $("#detail-json").textContent = JSON.stringify(job, null, 2);
    for (const row of document.querySelectorAll("#jobs-table tbody tr")) {
      row.classList.toggle("open", row.dataset.jobId === jobId);
    }
    if (focus) detail.focus();
    if (job.error) {
      $("#detail-error").hidden = false;
      $("#detail-error").textContent = errorText(job, "");
    }
    showLinks(jobId);
    if (job.status === "succeeded") await showResult(job);
  } catch (e) {
    if (!(e instanceof Unauthorized)) {
      detail.hidden = false;
      $("#detail-error").hidden = false;
      $("#detail-error").textContent = "Could not load the job: " + e.message;
    }
  }
}

async function showLinks(jobId) {
  const { status, data } = await json("GET", "/console/jobs/" + encodeURIComponent(jobId));
  if (status !== 200) return;
  const links = $("#detail-links");
  if (data.flower_url) links.append(el("a", "Task in Flower", { href: data.flower_url, id: "flower-link", rel: "noopener" }));
  if (data.mlflow_url) links.append(el("a", "In MLflow", { href: data.mlflow_url, id: "mlflow-link", rel: "noopener" }));
  if (data.report_html) {
    $("#report").hidden = false;
    $("#report-body").innerHTML = data.report_html;  // rendered and sanitised by the server (nh3)
  }
}

async function showResult(job) {
  const r = job.result || {};
  const ticker = (job.params || {}).ticker;
  const tasks = [];
  if (ticker) tasks.push(showChart(ticker));
  if (job.type === "predict") showForecast(r);
  else if (job.type === "train" || job.type === "analyze") tasks.push(forecastFor(ticker));
  const model = job.type === "train" ? { name: r.name, version: r.version } : r.model || (r.forecast || {}).model;
  if (model && model.name) tasks.push(showCard(model.name, model.version));
  if (job.type === "analyze") fact("Stance", `${r.stance} (confidence ${fmt(r.confidence)})`);
  if (job.type === "evaluate") {
    $("#card").hidden = false;
    $("#card-verdict").textContent = r.verdict.text;
    $("#card-note").textContent = evaluationNote(r) + ` ${fmt(r.seconds / 60, 1)} min on ${r.device}.`;
    showEvaluation(r);
  }
  await Promise.all(tasks);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function showChart(ticker) {
  const generation = state.generation;
  const status = $("#chart-status");
  status.textContent = "Drawing the chart…";
  // The chart waits up to 10 s for its job; a busy inference queue answers 202, so ask again.
  for (let tries = 0; tries < 8; tries += 1) {
    const response = await api("GET", `/forecast/${encodeURIComponent(ticker)}.png`);
    if (generation !== state.generation) return;
    if (response.status === 200) {
      state.chartUrl = URL.createObjectURL(await response.blob());
      const img = $("#chart-img");
      img.alt = `${ticker}: last closes, 7-day median forecast and 80 % band`;
      img.src = state.chartUrl;
      $("#chart").hidden = false;
      status.textContent = "";
      return;
    }
    if (response.status !== 202) {
      status.textContent = "No chart: " + errorText(await response.json().catch(() => ({})), response.status);
      return;
    }
    await sleep(1500);
  }
  status.textContent = "The chart is still queued: open the job again later.";
}

async function forecastFor(ticker) {
  // A training or an analysis holds no table: ask the serving model for one (a predict job of this tenant).
  let { status, data } = await json("POST", "/predict-child?wait=10", { ticker, model: "auto" });
  for (let tries = 0; status === 202 && tries < 20; tries += 1) {
    await sleep(1000);
    ({ status, data } = await json("GET", "/status/" + encodeURIComponent(data.job_id)));
    if (status === 200 && !FINISHED.has(data.status)) status = 202;
  }
  if (status === 200 && data.status === "succeeded") showForecast(data.result);
  else $("#forecast-note").textContent = "No forecast: " + errorText(data, status);
  $("#forecast").hidden = false;
}

function showForecast(result) {
  const rows = (result.forecast || []).map((d) => {
    const row = el("tr");
    row.append(el("td", d.date), el("td", fmt(d.p10)), el("td", fmt(d.p50)), el("td", fmt(d.p90)),
      el("td", signedPct(Math.expm1(d.log_return_p50))));
    return row;
  });
  $("#forecast-table tbody").replaceChildren(...rows);
  const m = result.model || {};
  $("#forecast-note").textContent = `${m.name} v${m.version}, from the close of ${result.as_of} ` +
    `(${fmt(result.last_close)}; data: ${result.data_source || "?"}). p10–p90 is the 80 % band` +
    `${result.fallback ? "; fallback: " + result.fallback : ""}.`;
  $("#forecast").hidden = false;
}

async function fetchCard(name, version) {
  const query = version ? "?version=" + encodeURIComponent(version) : "";
  const { status, data } = await json("GET", "/models/" + encodeURIComponent(name) + query);
  if (status !== 200) throw new Error(errorText(data, status));
  return data;
}

function interval(s) {
  return s ? `${signedPct(s.skill)} (${signedPct(s.lo)} to ${signedPct(s.hi)})` : "—";
}

function valueCell(value, detail) {
  // The figure, and its interval on a line of its own (narrow screens).
  const cell = el("td", value);
  if (detail) cell.append(el("span", detail, { class: "small" }));
  return cell;
}

function notEvaluated() {
  // The server renders the benchmark's figure into the page (webapp/evaluation_cost.py).
  return document.body.dataset.notEvaluated;
}

function evaluationNote(ev) {
  const c = ev.counts;
  return `Evaluation of ${ev.evaluated_at.slice(0, 10)}: decisions ${ev.period[0]} to ${ev.period[1]}, ` +
    `${ev.tickers.length} tickers, ${ev.origins} refits (${ev.universe} universe). ` +
    `${c.skill_over_reference} of ${c.tickers} tickers show skill over zero+EWMA on their own; ` +
    `${c.coverage_80_in_75_85} keep 80 % coverage within 75–85 %.`;
}

async function showCard(name, version) {
  let card;
  try {
    card = await fetchCard(name, version);
  } catch (e) {
    if (e instanceof Unauthorized) return;
    $("#card-note").textContent = "No model card: " + e.message;
    $("#card").hidden = false;
    return;
  }
  $("#card").hidden = false;
  $("#card-verdict").textContent = `${card.name} v${card.version}${card.champion ? " (champion)" : ""}: ` +
    (card.evaluation ? card.verdict.text : notEvaluated());
  const ev = card.evaluation;
  const decision = `Trained until ${card.trained_until}. ` +
    `Decision: ${(card.decision || {}).text || card.champion_decision || "—"}`;
  $("#card-note").textContent = ev ? evaluationNote(ev) + " " + decision : decision;
  if (ev) showEvaluation(ev);
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

// --- models ----------------------------------------------------------------------------------------------

async function refreshModels() {
  const status = $("#models-status");
  status.textContent = "Loading…";
  try {
    const { status: code, data } = await json("GET", "/models");
    if (code !== 200) throw new Error(errorText(data, code));
    const cards = await Promise.all(data.models.map((m) =>
      m.champion_version ? fetchCard(m.name).catch(() => null) : null));
    const rows = data.models.map((m, i) => {
      const card = cards[i] || {};
      const v = card.verdict;
      const ev = card.evaluation;
      const row = el("tr", null, { "data-model": m.name });
      row.append(el("th", m.name, { scope: "row" }), el("td", m.kind || ""),
        el("td", m.champion_version ? "v" + m.champion_version : "none"), el("td", m.trained_until || "—"),
        el("td", ev ? `${interval(v)}${v.measurable ? "" : " — no measurable skill"}`
          : cards[i] ? "not evaluated yet" : "—"),
        el("td", ev ? pct(ev.pooled.coverage_80[ev.recipe]) : "—"),
        el("td", ev ? `${ev.evaluated_at.slice(0, 10)} (${ev.period[0]} to ${ev.period[1]})` : "—"));
      return row;
    });
    $("#models-table tbody").replaceChildren(...rows);
    status.textContent = rows.length ? "" : "No registered models yet: train ^GSPC first.";
  } catch (e) {
    if (!(e instanceof Unauthorized)) status.textContent = "Models unavailable: " + e.message;
  }
}

function showView(name) {
  const jobs = name === "jobs";
  $("#jobs-view").hidden = !jobs;
  $("#models-view").hidden = jobs;
  $("#tab-jobs").setAttribute("aria-pressed", String(jobs));
  $("#tab-models").setAttribute("aria-pressed", String(!jobs));
  if (!jobs) refreshModels();
}

// --- start -----------------------------------------------------------------------------------------------

function start() {
  $("#key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, $("#key-input").value.trim());
    $("#key-input").value = "";
    forgetData();
    state.pages = 1;
    schedule(0);
    if (!$("#models-view").hidden) refreshModels();
  });
  $("#change-key").addEventListener("click", () => askKey(""));
  $("#submit-form").addEventListener("submit", submitJob);
  for (const radio of document.querySelectorAll('input[name="kind"]')) radio.addEventListener("change", showFields);
  for (const id of ["#filter-status", "#filter-type"]) $(id).addEventListener("change", () => schedule(0));
  $("#older").addEventListener("click", () => { state.pages += 1; schedule(0); });
  $("#tab-jobs").addEventListener("click", () => showView("jobs"));
  $("#tab-models").addEventListener("click", () => showView("models"));
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(0); });
  showFields();
  // No key yet: the first call tells whether one is needed (auth off needs none; auth on answers 401).
  schedule(0);
}

document.addEventListener("DOMContentLoaded", start);
