"""The REST API: submit jobs, poll and cancel them, health and readiness."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from webapp.auth import current_tenant
from webapp.errors import ApiError
from webapp.jobref import api_context, shown, visible_job
from webapp.ratelimit import client_key
from webapp.schemas import (
    CURSOR_PATTERN,
    AgentRequest,
    BatchPredictRequest,
    ChartPath,
    ErrorBody,
    EvaluateRequest,
    Health,
    IngestRequest,
    JobAccepted,
    JobList,
    JobPath,
    JobRecord,
    JobsQuery,
    PredictRequest,
    Readiness,
    TrainRequest,
    WaitQuery,
)
from webapp.submit import INFLIGHT_RETRY_AFTER_S
from webapp.tickers import check_known
from workers.celery_app import QUEUES
from workers.dispatch import publish_record
from workers.heartbeat import live_workers
from workers.jobs import FINISHED, JobStatus, spec
from workers.jobs import JobRecord as StoredJob
from workers.jobs.model import CancelOutcome, RetryOutcome
from workers.results import CacheUnavailable


def _schema_once(model: type[BaseModel]) -> None:
    """flask-openapi3 rebuilds a query model's JSON schema on every request only to read its field types
    (about a third of a submission's own time): build that one, argument-less schema once. The document's
    calls, with arguments, still build theirs."""
    schema, build = model.model_json_schema(), model.model_json_schema

    def cached(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return schema if not args and not kwargs else build(*args, **kwargs)

    model.model_json_schema = staticmethod(cached)  # type: ignore[method-assign]


for _query in (WaitQuery, JobsQuery):
    _schema_once(_query)

log = logging.getLogger(__name__)
jobs_tag = Tag(name="jobs", description="Submit, poll and cancel jobs")
ops_tag = Tag(name="ops", description="Health, readiness and metrics")
api = APIBlueprint("api", __name__, abp_responses={"401": ErrorBody, "503": ErrorBody})
ops = APIBlueprint("ops", __name__)


def _accepted(job: StoredJob) -> Response:
    # What url_for("api.get_status") builds, without building a URL adapter per request.
    status_url = f"{request.script_root}/status/{job.id}"
    response = jsonify({"job_id": job.id, "status": job.status, "status_url": status_url})
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


def _submit(
    job_type: str, params: dict[str, Any], wait: float = 0.0, task_kwargs: dict[str, Any] | None = None
) -> Response:
    ctx = api_context()
    check_known(params)  # 422 unknown_ticker before any job exists
    job, _ = ctx.submitter.submit(
        job_type, params, request.headers.get("Idempotency-Key"), client_key(), current_tenant().name,
        task_kwargs,
    )  # fmt: skip
    finished = _wait(job, wait)
    if finished is not None and finished.status in FINISHED:
        return jsonify(shown(finished))
    return _accepted(job)


def _wait(job: StoredJob, seconds: float) -> StoredJob | None:
    """Block a thread for the job (its record as the submit just read it) only while this process has a
    waiting slot free: past the cap, the caller gets its 202 at once, so long polls can never take the
    threads /health and submissions need."""
    ctx = api_context()
    if seconds <= 0 or not ctx.waiting.acquire(blocking=False):
        return None
    try:
        return ctx.jobs.wait_finished(job.id, seconds, ctx.blocking_redis, known=job)
    finally:
        ctx.waiting.release()


@api.post("/train", tags=[jobs_tag], responses={202: JobAccepted, 422: ErrorBody})
def train(body: TrainRequest) -> Response:
    """Train a model: ^GSPC trains the parent, any other ticker a child (freeze | fine_tune | scratch)."""
    return _submit("train", body.model_dump())


@api.post("/evaluate", tags=[jobs_tag], responses={202: JobAccepted, 422: ErrorBody})
def evaluate(body: EvaluateRequest) -> Response:
    """Evaluate the served recipe walk-forward (a refit per origin, a decision every trading day) against
    zero+EWMA and the volatility baselines; cards and promotion quote the latest evaluation. As heavy as
    many trainings: charged like one, cancellable between origins, progress per origin."""
    return _submit("evaluate", body.model_dump())


@api.post("/predict-child", tags=[jobs_tag], responses={200: JobRecord, 202: JobAccepted, 422: ErrorBody})
def predict_child(query: WaitQuery, body: PredictRequest) -> Response:
    """Forecast the next 7 trading days; with `wait`, answer 200 with the result when it is ready."""
    return _submit("predict", body.model_dump(), query.wait)


@api.post("/predict", tags=[jobs_tag], responses={200: JobRecord, 202: JobAccepted, 422: ErrorBody})
def predict_batch(query: WaitQuery, body: BatchPredictRequest) -> Response:
    """Forecast many tickers in one job (one batched forward pass per model)."""
    return _submit("predict_batch", body.model_dump(), query.wait)


@api.post("/agent/chat", tags=[jobs_tag], responses={202: JobAccepted, 422: ErrorBody})
def agent_chat(body: AgentRequest) -> Response:
    """Ask the analyst agent about a ticker: a markdown report with a stance."""
    params = body.model_dump()
    scope = current_tenant().name if api_context().settings.agent_cache_scope == "tenant" else "global"
    return _submit("analyze", params, task_kwargs={**params, "cache_scope": scope})


@api.post("/ingest", tags=[jobs_tag], responses={202: JobAccepted, 422: ErrorBody})
def ingest(body: IngestRequest) -> Response:
    """Fetch history, compute features, write the offline store and materialize the online store."""
    return _submit("ingest", body.model_dump())


@api.post("/jobs/ping", tags=[jobs_tag], responses={200: JobRecord, 202: JobAccepted})
def ping(query: WaitQuery) -> Response:
    """A trivial job through the whole queue (round-trip checks and benchmarks)."""
    return _submit("ping", {}, query.wait)


@api.get("/status/<job_id:job_id>", tags=[jobs_tag], responses={200: JobRecord, 404: ErrorBody})
def get_status(path: JobPath) -> Response:
    """The job record: status, stage, progress, result or error. A batch forecast's result is read back
    from the cache it is kept on for minutes; once gone, `result` says `result_expired`. Here and on every
    path with a job id, a unique prefix of the id (4 or more hex digits) names the job: 409
    `ambiguous_job_id` (details.candidates) when several of the caller's jobs start with it."""
    return jsonify(shown(visible_job(path.job_id)))


@api.get("/jobs", tags=[jobs_tag], responses={200: JobList, 400: ErrorBody})
def list_jobs(query: JobsQuery) -> Response:
    """The caller's jobs, newest first, a page at a time (`next_cursor` fetches the next). Admins see
    every tenant's and may filter by `owner`. A result kept on the cache (a batch forecast) is listed as
    its descriptor (size, until when): GET /status/<id> reads it."""
    tenant = current_tenant()
    owner = query.owner if tenant.admin else tenant.name
    repeated = sorted(k for k in request.args if len(request.args.getlist(k)) > 1)
    if repeated:
        raise ApiError(400, "repeated_parameter", f"give each query parameter once: {', '.join(repeated)}")
    jobs, cursor = api_context().jobs.list(
        status=query.status, job_type=query.type, limit=query.limit, owner=owner, cursor=_cursor(query.cursor)
    )
    return jsonify({"jobs": [JobRecord.show(j) for j in jobs], "count": len(jobs), "next_cursor": cursor})


def _cursor(raw: str | None) -> float | None:
    if raw is None:
        return None
    if not re.fullmatch(CURSOR_PATTERN, raw) or not math.isfinite(cursor := float(raw)):
        raise ApiError(400, "invalid_cursor", "cursor: pass the next_cursor of the previous page")
    return cursor


@api.delete(
    "/jobs/<job_id:job_id>",
    tags=[jobs_tag],
    responses={200: JobRecord, 202: JobRecord, 404: ErrorBody, 409: ErrorBody},
)
def cancel_job(path: JobPath) -> Response:
    """Cancel: a queued job never runs (200); a running one stops at its next stage boundary (202): a
    training at its next epoch, an ingest between tickers, an analysis between agent nodes, a prediction
    or chart before its forward pass, an evaluation between origins. A running ping cannot be cancelled
    (409 not_cancellable)."""
    ctx = api_context()
    job = visible_job(path.job_id)
    outcome = ctx.jobs.cancel(job.id)  # decided and applied in one script
    if outcome == CancelOutcome.NOT_CANCELLABLE:
        raise ApiError(409, "not_cancellable", f"a running {job.type} job cannot be cancelled")
    now = ctx.jobs.get(job.id)
    if outcome == CancelOutcome.MISSING or now is None:
        raise ApiError(404, "job_not_found", f"no job {job.id}")
    if outcome == CancelOutcome.FINISHED:
        raise ApiError(409, "job_finished", f"job {job.id} already {now.status}")
    response = jsonify(JobRecord.show(now))
    response.status_code = 200 if outcome == CancelOutcome.CANCELLED else 202
    return response


@api.post(
    "/jobs/<job_id:job_id>/retry",
    tags=[jobs_tag],
    responses={202: JobAccepted, 404: ErrorBody, 409: ErrorBody},
)
def retry_job(path: JobPath) -> Response:
    """Run a failed or cancelled job again under the same id (from the dead-letter list, say): its lost-
    worker count starts again at zero. 409 for a job that is queued, running or succeeded."""
    ctx = api_context()
    job = visible_job(path.job_id)
    ctx.charge(spec(job.type).cost)  # a retry costs what its job type costs (429 past the budget)
    done = ctx.jobs.retry(job.id, ctx.settings.max_inflight)
    if done.outcome == RetryOutcome.MISSING:
        raise ApiError(404, "job_not_found", f"no job {job.id}")
    if done.outcome == RetryOutcome.BUSY:
        full = f"{job.owner} already has {ctx.settings.max_inflight} queued or running jobs"
        raise ApiError(429, "too_many_inflight", f"{full}: wait for some to finish",
                       headers={"Retry-After": str(INFLIGHT_RETRY_AFTER_S)})  # fmt: skip
    if done.outcome == RetryOutcome.NOT_RETRYABLE:
        raise ApiError(
            409, "not_retryable", f"job {job.id} is {done.status}: only failed or cancelled jobs retry"
        )
    queued = ctx.jobs.get(job.id)
    if queued is None:
        raise ApiError(404, "job_not_found", f"no job {job.id}")
    try:
        publish_record(ctx.submitter.celery, ctx.jobs, queued, done.attempt)
    except Exception:
        # The retry and its outbox entry are one script: the reaper publishes it once the broker answers.
        log.warning("job %s: retry published later (broker refused it)", job.id, exc_info=True)
    return _accepted(queued)


CHART_TYPES = ("image/png", "image/svg+xml")
# How a failed chart job answers: nothing to draw is "not found"; a bug is a 500.
CHART_ERROR_STATUS = {
    "model_not_found": 404,
    "features_missing": 404,
    "unknown_ticker": 404,
    "stale_features": 409,
    "result_budget_exceeded": 429,
    "data_unavailable": 503,
    "cache_unavailable": 503,
    "internal_error": 500,
}


@api.get(
    "/forecast/<ticker>.<fmt>",
    tags=[jobs_tag],
    responses={
        200: {
            "description": "The chart.",
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in CHART_TYPES},
        },
        202: JobAccepted,
        # A failed chart job answers its error code's status (CHART_ERROR_STATUS).
        **dict.fromkeys((404, 409, 422, 429, 500, 503), ErrorBody),
    },
)
def forecast_chart(path: ChartPath, query: WaitQuery) -> Response:
    """The forecast as a chart: last ~120 closes, the 7-day median path and the 80 % band.

    One tenant's requests for one chart share its job while it is unfinished; the first request to see it
    finished (waiting, or asking again after a 202) gets its outcome, and the next starts a new job, which
    reuses the rendering while the model version, data and forecast are the same. 429
    `result_budget_exceeded`: the tenant holds its budget of charts and batch results on the cache until
    older ones expire."""
    ctx = api_context()
    params = {"ticker": path.ticker, "fmt": path.fmt}
    job, _ = ctx.submitter.submit("chart", params, _chart_claim(path), client_key(), current_tenant().name)
    finished = job if job.finished else _wait(job, query.wait if "wait" in request.args else 10.0)
    if finished is None or finished.status not in FINISHED:
        return _accepted(job)
    _release_chart(path, finished)
    if finished.status != JobStatus.SUCCEEDED:
        error = finished.error or {}
        code = error.get("code", "chart_failed")
        raise ApiError(CHART_ERROR_STATUS.get(code, 422), code, error.get("message", "chart failed"))
    key = (finished.result or {}).get("key")  # none in a record written before charts left the job Redis
    try:
        image = api_context().results.read(key) if key else None
    except CacheUnavailable as exc:
        raise ApiError(503, exc.code, exc.message) from None
    if image is None:
        raise ApiError(404, "chart_expired", "the chart was evicted or expired: request it again")
    return Response(image, mimetype=finished.result["mimetype"])


def _chart_claim(path: ChartPath) -> str:
    # An Idempotency-Key no client can send (a header holds no newline), claimed with the job in one
    # script (webapp/submit.py): a request that finds it joins the job it names.
    return f"chart\n{path.ticker}.{path.fmt}"


def _release_chart(path: ChartPath, job: StoredJob) -> None:
    """Drop the chart's claim if it still names `job` (a claim made meanwhile for a newer job stays)."""
    api_context().submitter.release(client_key(), _chart_claim(path), job.id)


@ops.get("/health", tags=[ops_tag], responses={200: Health})
def health() -> Response:
    """The process is alive."""
    return jsonify({"status": "ok"})


@ops.get("/ready", tags=[ops_tag], responses={200: Readiness, 503: Readiness})
def ready() -> Response:
    """Redis reachable and at least one worker consuming each queue."""
    ctx = api_context()
    try:
        ctx.redis.ping()
        workers = live_workers(ctx.redis, QUEUES)
        redis_ok = True
    except Exception:
        workers, redis_ok = {q: 0 for q in QUEUES}, False
    missing = ([] if redis_ok else ["redis"]) + [f"worker:{q}" for q, n in workers.items() if n == 0]
    body = {
        "status": "ready" if not missing else "not_ready",
        "redis": redis_ok,
        "workers": workers,
        "missing": missing,
    }
    response = jsonify(body)
    response.status_code = 200 if not missing else 503
    return response
