// The open job's attempts as a timeline, each outcome in words, and its own log lines.

import { $, clock, el, seconds } from "./util.js";

const OUTCOMES = {
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
  worker_lost: "its worker was lost (died or stopped renewing its lease): queued again",
  preempted: "preempted: its worker was asked to stop, checkpointed and queued again",
  message_lost: "its queue message vanished: published again",
};

function handedTo(entry, job) {
  // The entry names the task it was handed to when the registry records it; a prediction without a
  // model hands itself on to the training it needs.
  const task = entry.task || entry.handed_to || (job.type === "predict" ? "stockq.auto_train" : null);
  return task ? `handed on to ${task} (the same job continues as that task)` : "handed on to another task";
}

function outcomeText(entry, next, job) {
  if (entry.outcome === "handed_off") return handedTo(entry, job);
  const text = OUTCOMES[entry.outcome] || entry.outcome;
  // A failed or cancelled attempt followed by another one: somebody asked for a retry.
  if ((entry.outcome === "failed" || entry.outcome === "cancelled") && next) {
    return `${text}; retried by request as attempt ${next}`;
  }
  return text;
}

export function renderAttempts(job) {
  const entries = job.attempts || [];
  const items = entries.map((entry, i) => {
    const later = i + 1 < entries.length ? entries[i + 1].attempt : job.attempt;
    const next = later > entry.attempt ? later : null;
    const took = entry.started_at && entry.ended_at ? ` after ${seconds(entry.ended_at - entry.started_at)}` : "";
    const worker = entry.worker ? ` on ${entry.worker}` : "";
    const li = el("li", null, { "data-outcome": entry.outcome, "data-attempt": entry.attempt });
    li.append(el("strong", `Attempt ${entry.attempt}`), ` ${outcomeText(entry, next, job)}${took}${worker}`);
    return li;
  });
  if (!entries.some((e) => e.attempt === job.attempt)) {
    const li = el("li", null, { "data-outcome": job.status, "data-attempt": job.attempt, class: "now" });
    const where = job.worker ? ` on ${job.worker}` : "";
    li.append(el("strong", `Attempt ${job.attempt}`), ` ${job.status}${where}`);
    items.push(li);
  }
  $("#attempts").replaceChildren(...items);
}

export function resetLog() {
  $("#log-lines").replaceChildren();
  $("#log-empty").hidden = false;
}

// New lines only (each carries its number n): a reconnection never shows a line twice.
export function appendLog(lines) {
  const box = $("#log-lines");
  const last = box.lastElementChild ? Number(box.lastElementChild.dataset.n) : -1;
  const fresh = lines.filter((line) => line.n > last);
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  for (const line of fresh) {
    const li = el("li", null, { "data-n": line.n, class: "level-" + String(line.level).toLowerCase() });
    li.append(el("time", clock(line.ts)), " ", el("span", line.level, { class: "small" }), " ",
      el("span", line.logger, { class: "small" }), " ", line.message);
    box.append(li);
  }
  while (box.children.length > 500) box.firstElementChild.remove();
  if (fresh.length) $("#log-empty").hidden = true;
  if (atEnd) box.scrollTop = box.scrollHeight;
}
