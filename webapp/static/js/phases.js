// The open job's phases, each with its own bar: "phase 2 of 3 · refit epoch 2/4 (...)". A phase the job
// has left is shown done; a new attempt (a retry) starts the list again.

import { $, el } from "./util.js";

const state = { attempt: null, phases: new Map() };

export function resetPhases() {
  state.attempt = null;
  state.phases = new Map();
  $("#phases").replaceChildren();
}

function remember(record) {
  if (record.attempt !== state.attempt) {
    state.attempt = record.attempt;
    state.phases = new Map();
  }
  const p = record.progress || {};
  // Training phases already run (a job opened half-way) are known from its loss log.
  const epochs = new Map();
  for (const entry of p.losses || []) epochs.set(entry.phase, (epochs.get(entry.phase) || 0) + 1);
  for (const [phase, count] of epochs) {
    if (!state.phases.has(phase)) state.phases.set(phase, { phase, label: `${phase}: ${count} epoch(s)` });
  }
  if (p.phase) {
    const known = state.phases.get(p.phase) || {};
    state.phases.delete(p.phase);  // kept in the order the phases ran: the current one last
    state.phases.set(p.phase, { ...known, ...p });
  }
}

function item(phase, current, record) {
  const finished = !current || record.status === "succeeded";
  const steps = phase.steps || 1;
  const step = finished ? steps : phase.step || 0;
  const where = phase.phase_index && phase.phases ? `phase ${phase.phase_index} of ${phase.phases} · ` : "";
  const row = el("li", null, { "data-phase": phase.phase, class: current ? "current" : "done" });
  const bar = el("progress", null, { max: steps, value: step });
  bar.setAttribute("aria-label", phase.label || phase.phase);
  const suffix = current ? "" : " · done";
  row.append(el("span", where + (phase.label || phase.phase) + suffix, { class: "phase-label" }), bar);
  return row;
}

export function renderPhases(record) {
  remember(record);
  const current = (record.progress || {}).phase;
  const rows = [...state.phases.values()].map((phase) => item(phase, phase.phase === current, record));
  if (!rows.length && record.stage) rows.push(el("li", "stage: " + record.stage, { class: "current" }));
  $("#phases").replaceChildren(...rows);
}
