"""`stockq status | jobs | cancel | retry`: read and drive jobs by id. Any unique prefix of an id (the 8
characters the console and `stockq jobs` show) works: the API resolves it within the caller's tenant, and
answers 409 with the candidates when several jobs fit (exit 2, the candidates printed)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from stockq.cli.api import Api
from stockq.cli.follow import watch
from stockq.cli.job_view import jobs_table, log_line, short_id, summary_lines
from stockq.cli.output import EXIT_CODES_HELP, Output, exit_code_of, scripted
from stockq.settings import Settings

FOLLOW_HELP = "Print stage, epoch and loss as they change until the job ends (Ctrl-C: stop following)."


def _path(job_id: str, rest: str = "") -> str:
    return f"/jobs/{quote(job_id, safe='')}{rest}"


def _report(job: dict[str, Any], out: Output) -> None:
    """The summary (the raw record under --json), then exit by the job's status: 1 failed or cancelled."""
    for line in summary_lines(job):
        out.out.print(line, highlight=False, markup=False)
    out.emit(job)
    click.get_current_context().exit(exit_code_of(job["status"]))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@click.option("--follow", "follow_", is_flag=True, help=FOLLOW_HELP)
@click.option(
    "--logs", is_flag=True, help="Print the job's log lines too (on stderr; as they come with --follow)."
)
@scripted
def status(job_id: str, follow_: bool, logs: bool, out: Output) -> None:
    """A job's summary: type, ticker, status, progress, attempts, duration, and its error or a short
    result (--json: the raw record). Exit 0 when it succeeded or is still queued or running, 1 when it
    failed or was cancelled."""
    api = Api(Settings())
    job = api.call("GET", f"/status/{quote(job_id, safe='')}")
    if follow_:
        job = watch(api, job, out, logs=logs)
    elif logs:
        page = api.call("GET", _path(job["job_id"], "/log"))
        for entry in page["lines"]:
            out.err.print(log_line(entry, short_id(job["job_id"])), highlight=False, markup=False)
    _report(job, out)


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--status", "status_", default=None)
@click.option("--type", "type_", default=None)
@click.option("--limit", default=20, show_default=True)
@scripted
def jobs(status_: str | None, type_: str | None, limit: int, out: Output) -> None:
    """List recent jobs, newest first: short id, type, ticker, status, progress while unfinished."""
    params = {k: v for k, v in {"status": status_, "type": type_, "limit": limit}.items() if v is not None}
    body = Api(Settings()).call("GET", "/jobs", params=params)
    out.out.print(jobs_table(body["jobs"]))
    out.emit(body)


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@scripted
def cancel(job_id: str, out: Output) -> None:
    """Cancel a job: a queued one never runs; a running one stops at its next stage boundary (a training
    after its current epoch). Exit 2 with the API's message when it already finished."""
    job = Api(Settings()).call("DELETE", _path(job_id))
    short = short_id(job["job_id"])
    if job["status"] == "cancelled":
        out.out.print(f"job {short} cancelled", highlight=False)
    else:
        out.out.print(f"job {short} {job['status']}, cancel requested: it stops at its next stage boundary "
                      f"(`stockq status {short} --follow` to see it end)", highlight=False)  # fmt: skip
    out.emit(job)


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@click.option("--follow", "follow_", is_flag=True, help=FOLLOW_HELP)
@scripted
def retry(job_id: str, follow_: bool, out: Output) -> None:
    """Run a failed or cancelled job again under the same id and print its new state (exit 2 with the
    API's message for a queued, running or succeeded job). With --follow: until it ends, exit as status."""
    api = Api(Settings())
    accepted = api.call("POST", _path(job_id, "/retry"))
    job = api.call("GET", f"/status/{accepted['job_id']}")
    out.out.print(f"job {short_id(job['job_id'])} retried: {job['status']}, attempt {job['attempt']}",
                  highlight=False)  # fmt: skip
    if follow_:
        _report(watch(api, job, out), out)
    else:
        out.emit(job)


JOB_COMMANDS = (status, jobs, cancel, retry)
