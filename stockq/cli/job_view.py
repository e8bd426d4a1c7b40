"""What `stockq` prints about jobs: the record as a summary a person reads, one line per change while
following, and the jobs table. Records are the API's JSON (webapp.schemas.JobRecord); progress follows the
record's shape (label, phase, step/steps, epoch, loss)."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

SHORT_ID = 8  # what the console shows; the API resolves any unique prefix of four or more


def short_id(job_id: str) -> str:
    return job_id[:SHORT_ID]


def ticker_of(job: dict[str, Any]) -> str:
    """The ticker a job is about (params.ticker), or its tickers (an ingest, a batch, an evaluation)."""
    params = job.get("params") or {}
    if params.get("ticker"):
        return str(params["ticker"])
    return ", ".join(params.get("tickers") or [])


def duration_s(job: dict[str, Any], now: float | None = None) -> float | None:
    """Running time: start to end, or to now while it runs; None while it never started."""
    start = job.get("started_at")
    if start is None:
        return None
    end = job.get("finished_at") or (time.time() if now is None else now)
    return max(0.0, end - start)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def progress_text(job: dict[str, Any]) -> str:
    """The current phase as a person reads it: its label (or the stage), the epoch when the label does not
    say it, and the losses of the latest epoch."""
    progress = job.get("progress") or {}
    parts = []
    if (progress.get("phases") or 0) > 1:
        parts.append(f"phase {progress['phase_index']}/{progress['phases']}")
    label = progress.get("label") or job.get("stage") or ""
    if label:
        parts.append(str(label))
    if progress.get("epoch") is not None and "epoch" not in label:
        parts.append(f"epoch {progress['epoch']}/{progress.get('epochs', '?')}")
    if progress.get("loss") is not None:
        loss = f"loss {progress['loss']:.4f}"
        if progress.get("val_loss") is not None:
            loss += f" (val {progress['val_loss']:.4f})"
        parts.append(loss)
    return " · ".join(parts)


def error_text(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    code = error.get("code") or job["status"]
    return f"{code}: {error['message']}" if error.get("message") else str(code)


def result_summary(job: dict[str, Any]) -> str:
    """One line on what a succeeded job produced; the whole result is in `stockq status <id> --json`."""
    result = job.get("result")
    if not isinstance(result, dict):
        return "" if result is None else str(result)[:120]
    if "version" in result and "name" in result:  # a training
        champion = {True: " (the champion)", False: " (not the champion)"}.get(result.get("champion"), "")
        line = f"{result['name']} v{result['version']}{champion}"
        return line + (f"; {result['decision']}" if result.get("decision") else "")
    if isinstance(result.get("model"), dict) and result.get("forecast"):  # a prediction
        model, last = result["model"], result["forecast"][-1]
        return (f"{len(result['forecast'])}-day forecast of {result.get('ticker', '')} from {model['name']} "
                f"v{model['version']}: median {last['p50']:.2f} on {last['date']} "
                f"(80 % band {last['p10']:.2f} to {last['p90']:.2f})")  # fmt: skip
    if isinstance(result.get("verdict"), dict):  # an evaluation
        return str(result["verdict"].get("text", ""))
    if "report_markdown" in result:  # an analysis
        stance = result.get("stance")
        return f"report ready{f', stance {stance}' if stance else ''} (stockq status <id> --json)"
    if job.get("type") == "ingest":
        return ", ".join(f"{t} {i.get('rows', '?')} days to {i.get('as_of', '?')}" for t, i in result.items())
    return ", ".join(sorted(result))[:120]


# How an earlier attempt ended (workers/jobs/model.AttemptOutcome), as a person asks about it.
OUTCOME_WORDS = {
    "worker_lost": "its worker was lost",
    "preempted": "its worker stopped; resumed from its checkpoint",
    "handed_off": "handed off: the job went on as its next task (not a retry)",
    "message_lost": "its queue message was lost; published again",
}


def attempt_text(job: dict[str, Any]) -> str:
    """The attempt now owning the job and how each earlier one ended."""
    earlier = [f"#{a.get('attempt', '?')} {OUTCOME_WORDS.get(a.get('outcome'), a.get('outcome', '?'))}"
               for a in job.get("attempts") or []]  # fmt: skip
    return f"{job.get('attempt', 1)}" + (f" (earlier: {'; '.join(earlier)})" if earlier else "")


def summary_lines(job: dict[str, Any], now: float | None = None) -> list[str]:
    """`stockq status`: the record in the order a person asks about it."""
    status = job["status"]
    what = job["type"] + (f" · {ticker_of(job)}" if ticker_of(job) else "")
    rows = [("job", f"{short_id(job['job_id'])}  ({job['job_id']})"), ("type", what), ("status", status)]
    if job.get("cancel_requested") and status == "running":
        rows[-1] = ("status", "running, cancel requested: it stops at its next stage boundary")
    shown = progress_text(job)
    if shown and status in ("queued", "running"):
        rows.append(("progress", shown))
    rows.append(("attempt", attempt_text(job)))
    took = duration_s(job, now)
    if took is not None:
        rows.append(("duration", format_seconds(took) + ("" if job.get("finished_at") else " so far")))
    elif job.get("submitted_at") is not None:
        waited = (time.time() if now is None else now) - job["submitted_at"]
        rows.append(("duration", f"queued for {format_seconds(max(0.0, waited))}"))
    if status in ("failed", "cancelled") and job.get("error"):
        rows.append(("error", error_text(job)))
    elif status == "succeeded":
        rows.append(("result", result_summary(job)))
    return [f"{name:<9} {value}" for name, value in rows]


def follow_line(job: dict[str, Any]) -> str:
    """One line of `--follow`: the status and, while it runs, what it is doing; at the end, how it ended."""
    status = job["status"]
    if status == "succeeded":
        took = duration_s(job)
        return "succeeded" + (f" in {format_seconds(took)}" if took is not None else "")
    if status in ("failed", "cancelled"):
        return f"{status}: {error_text(job)}" if job.get("error") else status
    shown = progress_text(job)
    return status + (f" · {shown}" if shown else "")


def log_line(entry: dict[str, Any], short: str) -> str:
    """One of the job's own log lines (GET /jobs/<id>/log), stamped with the time it was written."""
    stamp = time.strftime("%H:%M:%S", time.localtime(entry.get("ts") or time.time()))
    return f"{stamp} {short} log {entry.get('message', '')}"


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("id", "type", "ticker", "status", "progress", "submitted")
    for job in jobs:
        submitted = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["submitted_at"]))
        running = job["status"] in ("queued", "running")
        table.add_row(
            short_id(job["job_id"]), job["type"], ticker_of(job) or "—", job["status"],
            progress_text(job) if running else "", submitted,
        )  # fmt: skip
    return table
