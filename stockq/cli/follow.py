"""Following a job: the API's event stream (GET /jobs/<id>/events, server-sent events) read as it arrives,
one line on stderr whenever what the job does changes, until its final status. The server ends a stream
after 25 s; the follower connects again, resuming the log cursor. Ctrl-C stops following, never the job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from stockq.cli.api import Api
from stockq.cli.job_view import follow_line, log_line, short_id
from stockq.cli.output import INTERRUPTED, UNREACHABLE, CliError, Output, exit_code_of

# workers.jobs.model.FINISHED as the API spells it; not imported: `import workers` builds the Celery app,
# a second of every CLI start.
FINAL = ("succeeded", "failed", "cancelled")
# Connect; read: the server sends a keep-alive comment every 10 s, so 35 s of silence is a dead stream.
STREAM_TIMEOUT_S = (10.0, 35.0)
MAX_BROKEN_STREAMS = 5  # in a row; a stream that delivered an event resets the count
DEFAULT_RETRY_S = 1.0  # before the server's first `retry:` hint


@dataclass(frozen=True)
class Event:
    name: str
    data: str
    id: str | None = None  # the last `id:` seen (it carries over, as in EventSource)
    retry_ms: int | None = None  # the last `retry:` seen: how long to wait before connecting again


def parse_sse(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Server-sent events from the raw bytes as they arrive (the WHATWG format: `event:`, `data:`, `id:`
    and `retry:` fields, a blank line ends an event, a line starting with `:` is a comment). Split on
    bytes, so a line separator inside the JSON text (U+2028) never cuts a line."""
    buffer = b""
    name, data, last_id, retry_ms = "message", [], None, None
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode()
            if not line:
                if data:
                    yield Event(name, "\n".join(data), last_id, retry_ms)
                name, data = "message", []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    last_id = value
                elif field == "retry" and value.isdigit():
                    retry_ms = int(value)


@dataclass
class Update:
    """A changed record (`job`) or new log lines (`lines`)."""

    job: dict[str, Any] | None = None
    lines: list[dict[str, Any]] | None = None


def job_updates(api: Api, job_id: str) -> Iterator[Update]:
    """Every change of the job until it is final (that record last), across reconnects: the server ends
    a stream after 25 s, or at once when it has no thread to spare (then its `retry:` hint is longer)."""
    after, retry_s, broken = 0, DEFAULT_RETRY_S, 0
    while True:
        delivered = False
        try:
            response = api.request(
                "GET", f"/jobs/{job_id}/events", params={"after": after}, stream=True,
                timeout=STREAM_TIMEOUT_S, headers={"Accept": "text/event-stream"},
            )  # fmt: skip
            with response:
                for event in parse_sse(response.iter_content(chunk_size=None)):
                    delivered = True
                    if event.retry_ms is not None:
                        retry_s = event.retry_ms / 1000
                    if event.id is not None and event.id.isdigit():
                        after = int(event.id)  # the log cursor: a reconnect resumes the log there
                    if event.name == "job":
                        record = json.loads(event.data)
                        yield Update(job=record)
                        if record["status"] in FINAL:
                            return
                    elif event.name == "log":
                        yield Update(lines=json.loads(event.data).get("lines") or [])
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
            pass  # the stream broke: connect again, as after a stream the server ended
        broken = 0 if delivered else broken + 1
        if broken > MAX_BROKEN_STREAMS:
            raise CliError(UNREACHABLE, "stream_broken", f"the event stream of job {job_id} keeps breaking")
        time.sleep(retry_s * (1 + broken))


def watch(api: Api, job: dict[str, Any], out: Output, logs: bool = False) -> dict[str, Any]:
    """Print a line whenever what the job does changes (status, phase, epoch, loss) and, with `logs`, its
    log lines, until the job is final; its final record. Ctrl-C: exit 130, the job goes on."""
    short = short_id(job["job_id"])
    shown = ""

    def show(record: dict[str, Any]) -> None:
        nonlocal shown
        line = follow_line(record)
        if line != shown:
            out.err.print(f"{time.strftime('%H:%M:%S')} {short} {line}", highlight=False, markup=False)
            shown = line

    show(job)
    try:
        if job["status"] not in FINAL:
            for update in job_updates(api, job["job_id"]):
                if update.job is not None:
                    job = update.job
                    show(job)
                for entry in (update.lines or []) if logs else ():
                    out.err.print(log_line(entry, short), highlight=False, markup=False)
    except KeyboardInterrupt:
        raise CliError(
            INTERRUPTED, "interrupted",
            f"stopped following; job {short} is still {job['status']} and goes on (`stockq status {short} "
            f"--follow` to follow it again, `stockq cancel {short}` to stop it)",
            job=job,
        ) from None  # fmt: skip
    return job


def succeeded(job: dict[str, Any]) -> dict[str, Any]:
    """The job if it succeeded; else exit 1 with its record in the JSON document."""
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        code = error.get("code") or job["status"]
        raise CliError(
            exit_code_of(job["status"]), code,
            f"job {job['job_id']} {job['status']}: {code}: {error.get('message', '')}", job=job,
        )  # fmt: skip
    return job


def submit_and_follow(api: Api, path: str, body: dict[str, Any], out: Output) -> dict[str, Any]:
    """Submit, say the job's id on stderr, follow it; its record once it succeeded (else exit 1)."""
    accepted = api.call("POST", path, json=body)
    out.err.print(f"job {accepted['job_id']}", highlight=False)
    return succeeded(watch(api, accepted, out))  # {job_id, status} is enough for its first line
