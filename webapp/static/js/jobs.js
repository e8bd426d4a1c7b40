// The jobs table: the tenant's jobs, newest first, refreshed every few seconds (more often while one is
// unfinished). The open job follows its own event stream (detail.js); this list only reads GET /jobs.

import { Unauthorized, errorText, json } from "./api.js";
import { $, FINISHED, duration, el, tickerOf } from "./util.js";

const state = { pages: 1, timer: null, open: null, shown: null, onOpen: () => {} };
const DURATION = 7;  // the duration's column

function progressCell(job) {
  const cell = el("td");
  const p = job.progress || {};
  if (p.steps) {
    const bar = el("progress", null, { max: p.steps, value: p.step || 0 });
    bar.setAttribute("aria-label", p.label || `${p.step} of ${p.steps}`);
    const phase = p.phases > 1 ? `${p.phase_index}/${p.phases} · ` : "";
    cell.append(bar, el("span", phase + (p.label || `${p.step}/${p.steps}`), { class: "small" }));
  } else {
    cell.textContent = job.status === "running" ? "…" : "";
  }
  return cell;
}

function jobRow(job) {
  const row = el("tr", null, { "data-job-id": job.job_id, "data-status": job.status });
  if (job.job_id === state.open) row.classList.add("open");
  const open = el("button", job.job_id.slice(0, 8), { type: "button", class: "link" });
  open.setAttribute("aria-label", `Open ${job.type} job ${job.job_id}`);
  open.addEventListener("click", () => state.onOpen(job.job_id));
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
  // Rows are made again only when a record changed (a row being clicked is not swapped under the pointer);
  // otherwise only the durations of running jobs move on.
  const shown = JSON.stringify(jobs);
  if (shown !== state.shown) {
    $("#jobs-table tbody").replaceChildren(...jobs.map(jobRow));
  } else {
    const rows = $("#jobs-table tbody").rows;
    jobs.forEach((job, i) => { rows[i].cells[DURATION].textContent = duration(job); });
  }
  state.shown = shown;
  $("#jobs-empty").hidden = jobs.length > 0;
  $("#older").hidden = cursor === null;
  return jobs;
}

export function markOpen(jobId) {
  state.open = jobId;
  for (const row of document.querySelectorAll("#jobs-table tbody tr")) {
    row.classList.toggle("open", row.dataset.jobId === jobId);
  }
}

export function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, ms);
}

async function poll() {
  if (document.hidden || $("#key-dialog").open) return schedule(2000);
  try {
    const jobs = await refreshJobs();
    schedule(jobs.some((j) => !FINISHED.has(j.status)) ? 1500 : 5000);
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("#submit-status").textContent = "Jobs unavailable: " + e.message;
    schedule(5000);
  }
}

export function forgetJobs() {
  state.pages = 1;
  state.open = null;
  state.shown = null;
  $("#jobs-table tbody").replaceChildren();
}

export function initJobs(onOpen) {
  state.onOpen = onOpen;
  for (const id of ["#filter-status", "#filter-type"]) $(id).addEventListener("change", () => schedule(0));
  $("#older").addEventListener("click", () => { state.pages += 1; schedule(0); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(0); });
}
