"""Running one delivery of a job: start it (fenced by its attempt), hold its lease, run the work, record
how it ended. Nothing escapes: a job never stays `running` because a result would not serialise or an
error was unexpected, and an outcome that Redis will not take leaves the message unacknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import current_task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from ml.errors import Cancelled, Paused, StockqError, new_error_id
from workers import logs, preemption
from workers.celery_app import JobFailed
from workers.counters import JOB_DURATION_BUCKETS, Counters
from workers.dispatch import publish_record
from workers.job_context import DEFERRED, JobContext, jsonable
from workers.jobs import Delivery, JobRecord, JobStatus, spec
from workers.jobs.model import Change, RequeueOutcome, Start
from workers.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)


def runtime() -> Runtime:
    from workers import settings

    return get_runtime(settings)


_durable = retry(
    retry=retry_if_exception_type(redis.RedisError),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(30),
    reraise=True,
)


def run_job(job_id: str, attempt: int, job_type: str, work: Callable[[JobContext], Any]) -> None:
    rt = runtime()
    delivery = Delivery(job_id, attempt)
    worker = current_task.request.hostname or "unknown"
    try:
        state, owner = _durable(rt.jobs.begin)(delivery, worker, rt.settings.lease_s)
    except (redis.RedisError, SoftTimeLimitExceeded) as exc:
        # Never acknowledged: on either broker the message comes back (Redis's visibility timeout,
        # RabbitMQ's requeue) and the job starts once Redis takes writes again. The retries can outlast a
        # short task's soft time limit (a ping's 10 s): that too is a start Redis refused.
        raise Reject(f"job {job_id} not started: Redis refused the start ({exc})", requeue=True) from exc
    if state == Start.RUNNING and _redelivered_by_amqp(rt):
        _take_over(rt, delivery)
        return
    if state == Start.FINISHED:
        # This attempt's message, after its job ended: a job cancelled while queued, or a redelivery.
        log.info("job %s attempt %s already finished: dropped", job_id, attempt)
        _end_task_as(_finished_record(rt, job_id))
        return
    if state != Start.STARTED:
        log.info("job %s attempt %s not started (%s): dropped", job_id, attempt, state)
        return
    try:
        ended = _run_started(rt, delivery, job_type, work, worker, owner)
    finally:
        # A SIGTERM that arrived during this job was for this job: the next one starts unasked to stop.
        preemption.clear_requested()
    _end_task_as(ended)


def _run_started(rt: Runtime, delivery: Delivery, job_type: str, work: Callable[[JobContext], Any],
                 worker: str, owner: str | None) -> tuple[JobStatus, Any] | None:  # fmt: skip
    """The final status and payload the FINISH script recorded, or None (paused, handed on, dropped)."""
    job_id, attempt = delivery.job_id, delivery.attempt
    started = time.monotonic()
    tags = {"job_id": job_id, "attempt": attempt, "tenant": owner or None,
            "ticker": current_task.request.kwargs.get("ticker"), "task": current_task.name}  # fmt: skip
    with logs.job_context(**tags), rt.leases.hold(delivery) as keeper:
        ctx = JobContext(rt, delivery, job_type, keeper, worker, owner or "")
        log.info("attempt %s started on %s", attempt, worker)  # the job's own log starts here
        kind, value = _outcome(ctx, work)
        if kind == "paused":
            _paused(ctx)
            return None
        if kind == "deferred":
            return None
        try:
            done = _durable(_record)(ctx, kind, value, time.monotonic() - started)
        except redis.RedisError as exc:
            # Not acknowledged: the message comes back, and the lease (no longer renewed) lets the reaper
            # requeue the job; the outcome is never silently lost.
            raise Reject(f"outcome of job {job_id} not recorded: {exc}", requeue=True) from exc
    if done == kind:
        return done, value
    # The script recorded a success as cancelled (its cancel came during the work), or refused it.
    return (done, None) if done == JobStatus.CANCELLED else None


def _finished_record(rt: Runtime, job_id: str) -> tuple[JobStatus, Any] | None:
    try:
        job: JobRecord | None = rt.jobs.get(job_id)
    except redis.RedisError:
        return None  # the record could not be read: the task just ends, as any dropped delivery does
    return None if job is None else (job.status, job.error)


def _end_task_as(ended: tuple[JobStatus, Any] | None) -> None:
    """End the Celery task the way the job's record ended, once the FINISH script recorded it, so that
    Flower (which shows task states) agrees with the registry (the source of truth): a failed job's task
    ends in FAILURE, a cancelled one's in REVOKED, anything else in SUCCESS.

    Acknowledgement stays what it was: with late acks Celery acknowledges a task that raised as it does
    one that returned (task_acks_on_failure_or_timeout, the default), and one that raises Ignore too.
    Neither is retried nor requeued: no task of ours sets autoretry_for, and Celery requeues only on a
    Reject or a lost pool process (task_reject_on_worker_lost, off).
    """
    if ended is None:
        return
    status, payload = ended
    if status == JobStatus.FAILED:
        error = payload if isinstance(payload, dict) else {}
        # The client's code and message: an internal error's message holds only its error id.
        raise JobFailed(str(error.get("code", "failed")), str(error.get("message", "")))
    if status == JobStatus.CANCELLED:
        # Celery knows no cancelled end of its own: REVOKED is the state Flower and its filters show for
        # one. The worker announces a revoke only for the tasks it revoked itself, so this process sends
        # the event, and Ignore ends the task with no success or failure event after it.
        try:
            current_task.send_event("task-revoked", terminated=False, signum=None, expired=False)
        except Exception as exc:  # only a monitor's view is lost: the record holds the outcome
            log.warning("job %s: Flower was not told of its cancel (%s)", current_task.request.id, exc)
        raise Ignore()


def _redelivered_by_amqp(rt: Runtime) -> bool:
    # RabbitMQ gives an unacknowledged message back the moment its consumer's connection closes: the
    # attempt that held it died with its host (or was cut off, and its fence stops it). Redis gives one
    # back only after the visibility timeout, long after the reaper requeued the job.
    return rt.settings.broker_is_amqp and bool(current_task.request.delivery_info.get("redelivered"))


def _take_over(rt: Runtime, delivery: Delivery) -> None:
    """Requeue a job whose running attempt lost its worker (attempt + 1) within one lease renewal, not at
    lease expiry.

    A redelivery proves only that the holder's broker connection closed. A live holder (a broker restart,
    a connection it opens again) goes on renewing its lease: then this copy is dropped and the holder
    carries on, its lease still covering its death.
    """
    key = rt.jobs.key(delivery.job_id)  # read field by field while waiting: a few bytes per look
    seen = rt.redis.hget(key, "lease_expires_at")
    # The holder renews every lease_s / 3: wait until its next renewal is due, with slack for a busy host.
    lease_s = rt.settings.lease_s
    deadline = float(seen or 0) - lease_s + lease_s / 3 + max(1.0, lease_s / 6)
    while rt.jobs.now() < deadline:  # the lease is in Redis time, not this host's
        time.sleep(0.25)
        status, attempt, lease = rt.redis.hmget(key, "status", "attempt", "lease_expires_at")
        if status != b"running" or attempt != str(delivery.attempt).encode():
            return  # finished, or requeued by someone else meanwhile
        if lease != seen:
            log.info("job %s: redelivered, but its holder renews its lease: dropped", delivery.job_id)
            return
    res = rt.jobs.requeue(
        delivery, outcome="worker_lost", lost=True, max_lost=rt.settings.max_attempts, stage="requeued"
    )
    job = rt.jobs.get(delivery.job_id)
    if res.outcome == RequeueOutcome.REQUEUED and job is not None:
        from workers import app

        log.warning("job %s: redelivered by the broker; requeued as attempt %s", delivery.job_id, res.attempt)
        rt.counters.incr("stockq_job_requeues_total", job.type)
        with contextlib.suppress(Exception):  # a failed publish stays in the outbox for the reaper
            publish_record(app, rt.jobs, job, res.attempt)


def _outcome(ctx: JobContext, work: Callable[[JobContext], Any]) -> tuple[str, Any]:
    """How the work ended: a final status and its payload (result or error), or `paused` / `deferred`."""
    try:
        result = work(ctx)
        if result is DEFERRED:
            return "deferred", None
        return JobStatus.SUCCEEDED, jsonable(result)
    except Cancelled:
        return JobStatus.CANCELLED, {"code": "cancelled", "message": "cancelled by request"}
    except Paused:
        return "paused", None
    except StockqError as exc:
        return JobStatus.FAILED, exc.to_dict()  # the client's message (and the error_id of its detail)
    except SoftTimeLimitExceeded:
        return JobStatus.FAILED, {"code": "timeout", "message": "the job ran past its time limit"}
    except redis.RedisError as exc:
        # Redis went away under the work (its caches, counters, progress): the job did not fail. Nothing is
        # recorded and the message goes back; the lease, no longer renewed, brings the job back.
        raise Reject(f"job {ctx.job_id}: Redis failed under the work ({exc})", requeue=True) from exc
    except Exception:
        # The client gets an id to quote; the exception text and traceback stay in this log.
        error_id = new_error_id()
        log.exception("job %s failed (error_id %s)", ctx.job_id, error_id)
        message = f"the job failed on an internal error (error_id {error_id})"
        return JobStatus.FAILED, {"code": "internal_error", "message": message, "error_id": error_id}


def _record(ctx: JobContext, kind: JobStatus, payload: Any, seconds: float) -> JobStatus | Change:
    """The outcome, the execution count and the counters in one script (a success whose cancel arrived
    during the work is recorded cancelled, unless the job type keeps a late result); what it recorded."""
    duration = Counters.observation(
        "stockq_job_duration_seconds", ctx.job_type, seconds, JOB_DURATION_BUCKETS
    )
    counters = {str(k): [*Counters.increment("stockq_jobs_finished_total", f"{ctx.job_type},{k}"), *duration]
                for k in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)}  # fmt: skip
    done = ctx.rt.jobs.finish(
        ctx.job_id, kind, payload, attempt=ctx.delivery.attempt,
        keeps_late_result=spec(ctx.job_type).keeps_late_result, counters=counters,
    )  # fmt: skip
    if done not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        log.info("job %s attempt %s: outcome %s dropped (%s)", ctx.job_id, ctx.delivery.attempt, kind, done)
    return done


def _paused(ctx: JobContext) -> None:
    if ctx.keeper.lost.is_set():
        log.warning(
            "job %s attempt %s stopped: another attempt owns it now", ctx.job_id, ctx.delivery.attempt
        )
        return
    job = ctx.rt.jobs.get(ctx.job_id)
    if job is None:
        return
    ctx.hand_off(job.task, stage="preempted", kwargs=job.task_kwargs, outcome="preempted")
    ctx.rt.counters.incr("stockq_job_requeues_total", ctx.job_type)
    log.info("job %s preempted: checkpointed and requeued", ctx.job_id)


def finish_ok(rt: Runtime, job_id: str, job_type: str, result: Any) -> None:
    """Finish a job this process does not run (a single-flight waiter): no fence."""
    counters = Counters.increment("stockq_jobs_finished_total", f"{job_type},succeeded")
    rt.jobs.succeed(job_id, result, counters=counters)


def finish_failed(rt: Runtime, job_id: str, job_type: str, code: str, message: str,
                  attempt: int | None = None) -> None:  # fmt: skip
    counters = Counters.increment("stockq_jobs_finished_total", f"{job_type},failed")
    rt.jobs.fail(job_id, code, message, attempt=attempt, counters=counters)
