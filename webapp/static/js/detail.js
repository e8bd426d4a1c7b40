// The open job, live: its record over server-sent events (no polling), the duration ticking, its phases
// with their bars, Cancel and Retry where they apply, the loss per epoch, attempts and log lines. The
// stream is closed on leaving the job and once the job reaches a final status.

import { Unauthorized, errorText, getOk, json } from "./api.js";
import { $, FINISHED, duration, el, tickerOf } from "./util.js";
import { follow } from "./stream.js";
import { renderPhases, resetPhases } from "./phases.js";
import { appendLog, renderAttempts, resetLog } from "./timeline.js";
import { clearResult, showResult } from "./result.js";
import { lossChart } from "./svg.js";
import { markOpen } from "./jobs.js";

const RUNNING = new Set(["queued", "running"]);
const state = { jobId: null, record: null, stream: null, tick: null, logNext: 0, shown: null };

function stopLive() {
  if (state.stream) state.stream.close();
  state.stream = null;
  clearInterval(state.tick);
  state.tick = null;
}

export function closeJob() {
  stopLive();
  Object.assign(state, { jobId: null, record: null, logNext: 0, shown: null });
  const detail = $("#detail");
  detail.hidden = true;
  delete detail.dataset.jobId;
  delete detail.dataset.status;
  clearDetail();
}

function clearDetail() {
  clearResult();
  resetPhases();
  resetLog();
  for (const id of ["#detail-facts", "#detail-links", "#attempts", "#loss-chart"]) $(id).replaceChildren();
  for (const id of ["#detail-json", "#action-status", "#detail-live", "#detail-status"]) $(id).textContent = "";
  $("#detail-title").textContent = "Job";
  $("#detail-duration").textContent = "—";
  $("#detail-error").hidden = true;
  $("#losses").hidden = true;
}

function fact(name, value) {
  $("#detail-facts").append(el("dt", name), el("dd", value));
}

function renderLosses(record) {
  const losses = (record.progress || {}).losses || [];
  $("#losses").hidden = !losses.length;
  if (losses.length) $("#loss-chart").replaceChildren(lossChart(losses));
}

function render(record) {
  state.record = record;
  const detail = $("#detail");
  detail.dataset.status = record.status;
  $("#detail-title").textContent = `${record.type} ${tickerOf(record)}`;
  const status = $("#detail-status");
  const cancelling = record.cancel_requested && RUNNING.has(record.status);
  status.textContent = record.status + (cancelling ? " (cancelling)" : "");
  status.className = "status " + record.status;
  $("#detail-duration").textContent = duration(record);
  $("#cancel-job").hidden = !RUNNING.has(record.status);
  $("#retry-job").hidden = !(record.status === "failed" || record.status === "cancelled");
  renderPhases(record);
  renderLosses(record);
  renderAttempts(record);
  $("#detail-error").hidden = !record.error;
  $("#detail-error").textContent = record.error ? errorText(record, "") : "";
  $("#detail-facts").replaceChildren();
  fact("Job", record.job_id);
  fact("Owner", record.owner || "—");
  fact("Stage", record.stage || "—");
  fact("Attempt", record.attempt);
  $("#detail-json").textContent = JSON.stringify(record, null, 2);
  if (FINISHED.has(record.status)) {
    stopLive();
    $("#detail-live").textContent = "";
    finished(record);
  }
}

async function finished(record) {
  const key = `${record.job_id}:${record.attempt}:${record.status}`;
  if (state.shown === key) return;
  state.shown = key;
  // The stream ends with the final record; the worker may log a line or two just after it.
  for (const ms of [0, 1500, 5000]) setTimeout(() => catchUpLog(record.job_id, key), ms);
  showLinks(record.job_id);
  if (record.status === "succeeded") await showResult(record);
}

// Lines logged after the stream closed, while the job's final state (`key`) is still the one shown.
async function catchUpLog(jobId, key) {
  if (state.shown !== key) return;
  try {
    const page = await getOk(`/jobs/${encodeURIComponent(jobId)}/log?after=${state.logNext}`);
    if (state.shown !== key) return;
    appendLog(page.lines);
    state.logNext = Math.max(state.logNext, page.next);
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("#detail-live").textContent = "log unavailable: " + e.message;
  }
}

async function showLinks(jobId) {
  const { status, data } = await json("GET", "/console/jobs/" + encodeURIComponent(jobId));
  if (status !== 200 || state.jobId !== jobId) return;
  const links = $("#detail-links");
  links.replaceChildren();
  const link = (text, href, id) => links.append(el("a", text, { href, id, rel: "noopener" }));
  if (data.flower_url) link("Task in Flower", data.flower_url, "flower-link");
  if (data.mlflow_url) link("In MLflow", data.mlflow_url, "mlflow-link");
  if (data.report_html) {
    $("#report").hidden = false;
    $("#report-body").innerHTML = data.report_html;  // rendered and sanitised by the server (nh3)
  }
}

function goLive(jobId) {
  stopLive();
  $("#detail-live").textContent = "live";
  const tick = () => { if (state.record) $("#detail-duration").textContent = duration(state.record); };
  state.tick = setInterval(tick, 1000);
  state.stream = follow(jobId, () => state.logNext, {
    job: (record) => { if (state.jobId === jobId) render(record); },
    log: (data) => {
      if (state.jobId !== jobId) return;
      appendLog(data.lines);
      state.logNext = Math.max(state.logNext, data.next);
    },
    error: (data, code) => { $("#detail-live").textContent = "updates unavailable: " + errorText(data, code); },
  });
}

// Another view is shown: the open job's stream waits until its detail is shown again (the stream's first
// event is the record as it is then).
export function pauseJob() {
  stopLive();
}

export function resumeJob() {
  if (state.jobId && state.record && !FINISHED.has(state.record.status) && !state.stream) goLive(state.jobId);
}

export async function openJob(jobId) {
  if (state.jobId === jobId) return;
  stopLive();
  clearDetail();
  Object.assign(state, { jobId, record: null, logNext: 0, shown: null });
  markOpen(jobId);
  const detail = $("#detail");
  detail.hidden = false;
  detail.dataset.jobId = jobId;
  detail.focus();
  try {
    const path = encodeURIComponent(jobId);
    const [record, log] = await Promise.all([getOk("/status/" + path), getOk(`/jobs/${path}/log`)]);
    if (state.jobId !== jobId) return;
    appendLog(log.lines);
    state.logNext = log.next;
    render(record);
    if (!FINISHED.has(record.status)) goLive(jobId);
  } catch (e) {
    if (e instanceof Unauthorized || state.jobId !== jobId) return;
    $("#detail-error").hidden = false;
    $("#detail-error").textContent = "Could not load the job: " + e.message;
  }
}

async function act(method, suffix, verb) {
  const jobId = state.jobId;
  const out = $("#action-status");
  try {
    const { status, data } = await json(method, `/jobs/${encodeURIComponent(jobId)}${suffix}`);
    if (status >= 400) {
      out.textContent = `${verb} refused: ${errorText(data, status)}`;
      return;
    }
    out.textContent = `${verb} requested.`;
    if (state.jobId === jobId && !state.stream) goLive(jobId);  // a retry runs again: follow it
  } catch (e) {
    if (!(e instanceof Unauthorized)) out.textContent = `${verb} failed: ${e.message}`;
  }
}

export function initDetail() {
  $("#cancel-job").addEventListener("click", () => act("DELETE", "", "Cancel"));
  $("#retry-job").addEventListener("click", () => act("POST", "/retry", "Retry"));
}
