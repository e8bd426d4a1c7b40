"""Following a job while it runs: its changes as Server-Sent Events, and its own log lines.

Every script that changes a job record publishes "job" on the job's channel, every appended log line
"log" (workers/jobs/keys.job_events): the stream reads the record or the log again on each, never polls.

gunicorn runs gthread workers here, and a stream holds one of their threads and a Redis connection (its
subscription) for its whole life, so a stream is short and bounded: it ends once the job's final record
(and the lines logged within LINGER_S of it) is sent, or after STREAM_S (EventSource reconnects after the
`retry:` hint, sending `Last-Event-ID`, the log cursor), and it takes one of the process's waiting slots,
as `?wait=` does (webapp/gunicorn_conf.py keeps a thread free beyond them). With no slot free it sends the
record and the new log lines and ends at once, with a longer `retry:`: the client polls instead of
holding a thread. The stream is counted as a read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import redis
from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint
from redis.client import PubSub

from webapp.jobref import api_context, shown, visible_job
from webapp.routes import jobs_tag
from webapp.schemas import MAX_LOG_CURSOR, ErrorBody, JobPath, LogPage, LogQuery
from workers.jobs import FINISHED, JobRegistry, keys

log = logging.getLogger(__name__)
events = APIBlueprint("events", __name__, abp_responses={"401": ErrorBody, "503": ErrorBody})

STREAM_S = 25.0  # a stream's longest life: then the client reconnects
KEEPALIVE_S = 10.0  # a comment after this long without an event, so proxies keep the connection open
POLL_S = 1.0  # the longest wait for one message: how late the deadline and keep-alives may be noticed
RETRY_MS = 1_000  # reconnect soon after a stream ends at its deadline
BUSY_RETRY_MS = 5_000  # no waiting slot was free: come back later
LINGER_S = 1.0  # after the final record: how long its last log lines may come
MAX_BURST = 100  # messages taken at once (an epoch's progress and its log line): one read answers them all


def _event_kind(kind: str, schema: str) -> dict[str, Any]:
    data = {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{schema}"}}  # fmt: skip
    return {"properties": {"event": {"const": kind}, "data": data}}


# One event of the stream, as an SSE client parses it (`retry` only on the first).
STREAM_DOC = {
    "description": "Server-Sent Events: `event: job` (data: the record, as GET /status/{job_id}) first and "
    "after each change, `event: log` (data: {lines, next}) for new log lines; `id:` is the log cursor. "
    "Ends after the final record, or within 25 s (reconnect with `Last-Event-ID`).",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["event", "id", "data"],
                "properties": {
                    "event": {"enum": ["job", "log"]},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "retry": {"type": "integer", "minimum": 0},
                    "data": {"type": "string"},
                },
                "oneOf": [_event_kind("job", "JobRecord"), _event_kind("log", "LogPage")],
            }
        }
    },
}


def log_page(jobs: JobRegistry, job_id: str, after: int) -> dict[str, Any]:
    lines, cursor = jobs.log_lines(job_id, after)
    return LogPage.model_validate({"lines": lines, "next": cursor}).model_dump(mode="json")


@events.get("/jobs/<job_id:job_id>/log", tags=[jobs_tag], responses={200: LogPage, 404: ErrorBody})
def job_log(path: JobPath, query: LogQuery) -> Response:
    """The job's own log lines (what its worker logged for it, secrets redacted; the last 500 are kept),
    from line `after` on, and the cursor of the next page."""
    job = visible_job(path.job_id)
    return jsonify(log_page(api_context().jobs, job.id, query.after))


@events.get(
    "/jobs/<job_id:job_id>/events",
    tags=[jobs_tag],
    responses={200: STREAM_DOC, 404: ErrorBody},
)
def job_events(path: JobPath, query: LogQuery) -> Response:
    """The job as it changes, as Server-Sent Events: the record first, then each change and each new log
    line, until the final record (close the stream there: EventSource would reconnect) or 25 s. The log
    resumes from `Last-Event-ID` (sent by a reconnecting EventSource) or `after`."""
    ctx = api_context()
    job = visible_job(path.job_id)
    after = _resume_cursor(query.after)
    slot = ctx.waiting.acquire(blocking=False)
    pubsub: PubSub | None = None

    def release() -> None:
        if pubsub is not None:
            pubsub.close()  # unsubscribes and hands its connection back to the pool
        if slot:
            ctx.waiting.release()

    try:
        if slot and job.status not in FINISHED:
            pubsub = ctx.jobs.r.pubsub(ignore_subscribe_messages=True)
            # Subscribed before the first read: a change made between the two is not missed.
            pubsub.subscribe(keys.job_events(job.id))
        watch = _Watch(ctx.jobs, partial(shown, results=ctx.results), job.id, after)
        opening = watch.opening(RETRY_MS if slot else BUSY_RETRY_MS)
    except BaseException:
        release()  # Redis down: a 503 (webapp/errors.py) before any byte is streamed
        raise
    body = opening if pubsub is None else _follow(watch, pubsub, opening)
    response = Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
    # Run by the server when the response is closed: at the stream's end, when the client went away (the
    # next write failed) and when the body was never read (HEAD).
    response.call_on_close(release)
    return response


def _resume_cursor(after: int) -> int:
    """`Last-Event-ID` wins over `after`: EventSource reconnects to the URL it was opened with."""
    raw = request.headers.get("Last-Event-ID", "")
    if raw.isdigit() and int(raw) <= MAX_LOG_CURSOR:
        return int(raw)
    return after  # none, or not an id this endpoint sent: the cursor the URL gives


def _event(kind: str, data: dict[str, Any], cursor: int, retry_ms: int | None = None) -> str:
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}event: {kind}\nid: {cursor}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Watch:
    """What the client was sent: the last record (an unchanged one is not sent again) and the log cursor."""

    def __init__(
        self, jobs: JobRegistry, show: Callable[[Any], dict[str, Any]], job_id: str, after: int
    ) -> None:
        self.jobs, self.show, self.job_id, self.cursor = jobs, show, job_id, after
        self.record: dict[str, Any] | None = None
        self.gone = False

    @property
    def finished(self) -> bool:
        """Nothing more will happen: the final record was sent, or the record expired."""
        return self.gone or (self.record is not None and self.record["status"] in FINISHED)

    def job(self, retry_ms: int | None = None) -> list[str]:
        job = self.jobs.get(self.job_id)
        if job is None:
            self.gone = True
            return []
        record = self.show(job)
        if record == self.record:  # a write that changed nothing the client sees
            return []
        self.record = record
        return [_event("job", record, self.cursor, retry_ms)]

    def log(self) -> list[str]:
        page = log_page(self.jobs, self.job_id, self.cursor)
        if not page["lines"]:
            return []
        self.cursor = page["next"]
        return [_event("log", page, self.cursor)]

    def opening(self, retry_ms: int) -> list[str]:
        return self.job(retry_ms) + self.log()


def _follow(watch: _Watch, pubsub: PubSub, opening: list[str]) -> Iterator[str]:
    yield from opening
    deadline = time.monotonic() + STREAM_S
    quiet_since = time.monotonic()
    try:
        while not watch.finished and (left := deadline - time.monotonic()) > 0:
            kinds = _messages(pubsub, min(POLL_S, left))
            out = (watch.job() if "job" in kinds else []) + (
                watch.log() if "log" in kinds or watch.finished else []
            )
            if out:
                yield "".join(out)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
        if watch.finished and not watch.gone:
            yield from _linger(watch, pubsub)
    except redis.RedisError as exc:
        # Headers are sent: the stream just ends, and the reconnect gets Redis's 503.
        log.warning("job %s: event stream ended early: %s", watch.job_id, exc)


def _linger(watch: _Watch, pubsub: PubSub) -> Iterator[str]:
    """The lines logged as the job ended: its worker logs the outcome just after recording it."""
    end = time.monotonic() + LINGER_S
    while (left := end - time.monotonic()) > 0:
        if "log" in _messages(pubsub, left):
            yield from watch.log()


def _messages(pubsub: PubSub, timeout_s: float) -> set[str]:
    """The kinds published ("job", "log") within `timeout_s`, with every message already waiting."""
    kinds: set[str] = set()
    message = pubsub.get_message(timeout=timeout_s)
    for taken in range(1, MAX_BURST + 1):
        if message is None:
            break
        data = message.get("data")
        kinds.add(data.decode() if isinstance(data, bytes) else str(data))
        message = pubsub.get_message(timeout=0) if taken < MAX_BURST else None
    return kinds
