// The stockq console's entry point: the key prompt, the two views and their wiring. Data is put on the
// page as text (textContent), never as markup, except the report the server sanitised.

import { askKey, onForget, setKey } from "./api.js";
import { $ } from "./util.js";
import { forgetJobs, initJobs, schedule } from "./jobs.js";
import { closeJob, initDetail, openJob, pauseJob, resumeJob } from "./detail.js";
import { forgetModels, refreshModels } from "./models.js";
import { forgetSubmit, initSubmit, loadTickers } from "./submit.js";

function showView(name) {
  const jobs = name === "jobs";
  $("#jobs-view").hidden = !jobs;
  $("#models-view").hidden = jobs;
  $("#tab-jobs").setAttribute("aria-pressed", String(jobs));
  $("#tab-models").setAttribute("aria-pressed", String(!jobs));
  if (jobs) resumeJob();
  else {
    pauseJob();
    refreshModels();
  }
}

function start() {
  // A key change (or a refused key) leaves nothing of the previous tenant's on the page.
  onForget(() => { closeJob(); forgetJobs(); forgetModels(); forgetSubmit(); });
  $("#key-form").addEventListener("submit", () => {
    setKey($("#key-input").value.trim());
    $("#key-input").value = "";
    schedule(0);
    loadTickers();
    if (!$("#models-view").hidden) refreshModels();
  });
  $("#change-key").addEventListener("click", () => askKey(""));
  initSubmit((jobId) => { schedule(0); openJob(jobId); });
  initJobs(openJob);
  initDetail();
  $("#tab-jobs").addEventListener("click", () => showView("jobs"));
  $("#tab-models").addEventListener("click", () => showView("models"));
  // No key yet: the first call tells whether one is needed (auth off needs none; auth on answers 401).
  schedule(0);
  loadTickers();
}

start();  // a module runs after the document is parsed
