"""The CLI's side of the REST API: calls mapped to exit codes, following a job, cards and charts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from tenacity import Retrying, retry_if_exception, retry_if_result, stop_after_delay, wait_exponential

from stockq.cli.output import AUTH_REFUSED, BAD_USAGE, JOB_FAILED, UNREACHABLE, CliError, Output
from stockq.settings import Settings
from workers.jobs.model import FINISHED, JobStatus

CHART_TIMEOUT_S = 120.0


def exit_code_for(status: int) -> int:
    """401/403: auth; 429 and 5xx: the API cannot serve now (retry later); any other 4xx: the request."""
    if status in (401, 403):
        return AUTH_REFUSED
    if status == 429 or status >= 500:
        return UNREACHABLE
    return BAD_USAGE


class Api:
    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.base = settings.api_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if settings.api_key.get_secret_value():
            self.session.headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.base + path, timeout=self.timeout_s, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CliError(
                UNREACHABLE, "api_unreachable", f"cannot reach the API at {self.base} ({type(exc).__name__}; "
                "is `stockq up` running?)",
            ) from None  # fmt: skip
        if response.status_code >= 400:
            try:
                error = response.json().get("error") or {}
            except ValueError:  # not ours (a proxy's page, say)
                error = {}
            code = error.get("code") or f"http_{response.status_code}"
            message = error.get("message") or response.reason
            hint = " (set STOCKQ_API_KEY)" if response.status_code == 401 else ""
            raise CliError(
                exit_code_for(response.status_code), code, f"{response.status_code} {code}: {message}{hint}",
                status=response.status_code,
            )  # fmt: skip
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else {}

    def card(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.call(
            "GET", f"/models/{quote(name, safe='')}", params={} if version is None else {"version": version}
        )

    def chart_path(self, ticker: str) -> str:
        return f"/forecast/{quote(ticker, safe='')}.png"

    def save_chart(self, ticker: str, path: Path) -> Path:
        """GET /forecast/<ticker>.png into `path`. It answers 202 while the chart job is not done (at once
        when the API has no thread free to wait): asked again after 0.5 s, doubling up to 5 s, for two
        minutes. The requests join the same chart job; a chart found expired is asked for again."""
        attempts = Retrying(
            retry=retry_if_result(lambda r: not _is_image(r)) | retry_if_exception(_expired),
            wait=wait_exponential(multiplier=0.5, max=5),
            stop=stop_after_delay(CHART_TIMEOUT_S),
            retry_error_callback=lambda _state: None,
        )
        response = attempts(self.request, "GET", self.chart_path(ticker), params={"wait": 10})
        if response is None:
            raise CliError(UNREACHABLE, "chart_timeout", f"the chart of {ticker} was not ready in time")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(response.content)
        return path


def _is_image(response: requests.Response) -> bool:
    return response.status_code == 200 and response.headers.get("content-type", "").startswith("image/")


def _expired(exc: BaseException) -> bool:
    # A chart job that finished long before this request, its bytes evicted: the next request starts anew.
    return isinstance(exc, CliError) and exc.code == "chart_expired"


def follow(api: Api, job_id: str, out: Output) -> dict[str, Any]:
    """Poll the job until it finishes, with a live progress bar on stderr (none under --json)."""
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=out.err, transient=True, disable=out.as_json) as progress:
        task = progress.add_task(job_id[:8], total=None, detail="queued")
        while True:
            job = api.call("GET", f"/status/{job_id}")
            prog = job.get("progress") or {}
            detail = job["status"] + (f" · {job['stage']}" if job.get("stage") else "")
            if "epoch" in prog:
                phase = f"{prog['phase']} " if prog.get("phase") else ""  # a training: select, then refit
                detail += f" · {phase}epoch {prog['epoch']}/{prog['epochs']} loss {prog['loss']:.4f}"
                progress.update(task, total=prog["epochs"], completed=prog["epoch"])
            elif "steps" in prog:  # an evaluation: step k of n is running (an origin, then the baselines)
                detail += f" · {prog['text']} ({prog['step']}/{prog['steps']})"
                progress.update(task, total=prog["steps"], completed=prog["step"] - 1)
            progress.update(task, detail=detail)
            if job["status"] in FINISHED:
                return job
            time.sleep(0.5)


def succeeded(job: dict[str, Any]) -> dict[str, Any]:
    """The job if it succeeded; else exit 1 with its record in the JSON document."""
    if job["status"] != JobStatus.SUCCEEDED:
        error = job.get("error") or {}
        code = error.get("code") or job["status"]
        raise CliError(
            JOB_FAILED,
            code,
            f"job {job['job_id']} {job['status']}: {code}: {error.get('message', '')}",
            job=job,
        )
    return job


def submit_and_follow(api: Api, path: str, body: dict[str, Any], out: Output) -> dict[str, Any]:
    accepted = api.call("POST", path, json=body)
    out.err.print(f"job {accepted['job_id']}", highlight=False)
    return succeeded(follow(api, accepted["job_id"], out))
