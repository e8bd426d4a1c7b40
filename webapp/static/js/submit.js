// The "New job" form: tickers offered as you type (GET /tickers), an unknown one refused by the API with
// close matches to pick from, and no Strategy for the parent (it trains on every ticker, no strategy).

import { Unauthorized, errorText, getOk, json } from "./api.js";
import { $, el } from "./util.js";

let onSubmitted = () => {};

function kind() {
  return document.querySelector('input[name="kind"]:checked').value;
}

function isParent(ticker) {
  return ticker.trim().toUpperCase() === document.body.dataset.parentTicker;
}

export function showFields() {
  const k = kind();
  const parent = isParent($("#f-ticker").value);
  for (const node of document.querySelectorAll("[data-for]")) {
    const on = node.dataset.for === k && !("child" in node.dataset && parent);
    node.hidden = !on;
    if ("disabled" in node && node.tagName !== "LABEL") node.disabled = !on;
  }
}

export async function loadTickers() {
  try {
    const data = await getOk("/tickers");
    $("#tickers").replaceChildren(...data.tickers.map((t) => el("option", null, { value: t })));
  } catch (e) {
    if (!(e instanceof Unauthorized)) $("#tickers").replaceChildren();  // typing still works
  }
}

function suggest(suggestions) {
  const box = $("#submit-suggestions");
  box.replaceChildren();
  box.hidden = !suggestions.length;
  if (!suggestions.length) return;
  box.append("Did you mean ");
  for (const ticker of suggestions) {
    const pick = el("button", ticker, { type: "button", class: "chip", "data-ticker": ticker });
    pick.addEventListener("click", () => {
      $("#f-ticker").value = ticker;
      box.hidden = true;
      showFields();
      $("#f-ticker").focus();
    });
    box.append(pick, " ");
  }
}

function request(form, k, ticker) {
  if (k === "train") {
    const body = { ticker };
    if (!isParent(ticker)) body.strategy = form.strategy.value;
    if (form.epochs.value) body.epochs = Number(form.epochs.value);
    return ["/train", body];
  }
  if (k === "predict") return ["/predict-child", { ticker, model: form.model.value }];
  const body = { ticker };
  if (form.question.value.trim()) body.question = form.question.value.trim();
  return ["/agent/chat", body];
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("#submit-status");
  const ticker = form.ticker.value.trim();
  suggest([]);
  delete status.dataset.jobId;
  delete status.dataset.error;
  if (!form.ticker.checkValidity() || !ticker) {
    status.textContent = "Enter a ticker: 1-12 of A-Z a-z 0-9 ^ . = -";
    form.ticker.focus();
    return;
  }
  const k = kind();
  const [path, body] = request(form, k, ticker);
  try {
    const { status: code, data } = await json("POST", path, body);
    if (code === 202 || code === 200) {
      status.textContent = `Submitted ${k} ${ticker}: job ${data.job_id}`;
      status.dataset.jobId = data.job_id;
      onSubmitted(data.job_id);
    } else {
      status.textContent = "Refused: " + errorText(data, code);
      status.dataset.error = (data.error || {}).code || "";
      suggest(((data.error || {}).details || {}).suggestions || []);
    }
  } catch (e) {
    if (!(e instanceof Unauthorized)) status.textContent = "The API is unreachable: " + e.message;
  }
}

export function forgetSubmit() {
  $("#submit-status").textContent = "";
  delete $("#submit-status").dataset.jobId;
  suggest([]);
  $("#tickers").replaceChildren();
}

export function initSubmit(submitted) {
  onSubmitted = submitted;
  $("#submit-form").addEventListener("submit", submitJob);
  for (const radio of document.querySelectorAll('input[name="kind"]')) radio.addEventListener("change", showFields);
  $("#f-ticker").addEventListener("input", showFields);
  showFields();
}
