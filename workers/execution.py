"""Running one delivery of a job: start it (fenced by its attempt), hold its lease, run the work, record
how it ended. Nothing escapes: a job never stays `running` because a result would not serialise or an
error was unexpected, and an outcome that Redis will not take leaves the message unacknowledged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import redis
from celery import current_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from ml.errors import Cancelled, Paused, StockqError, new_error_id
from workers import logs, preemption
from workers.counters import JOB_DURATION_BUCKETS, Counters
from workers.dispatch import publish, publish_record
from workers.jobs import Delivery, JobStatus, spec
from workers.jobs.model import RequeueOutcome, Start
from workers.leases import LeaseKeeper
from workers.runtime import Runtime, get_runtime
from workers.singleflight import SingleFlight

log = logging.getLogger(__name__)

# Work returns DEFERRED when the job was handed on (to another task, or to wait for a training).
DEFERRED = object()


def jsonable(value: Any) -> Any:
    """kombu and our records take plain JSON: numpy scalars, arrays and dates are converted."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (date, datetime)):
            return obj.isoformat()
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    return _finite(json.loads(json.dumps(value, default=default)))


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null (a diverged loss must not break the record)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def runtime() -> Runtime:
    from workers import settings

    return get_runtime(settings)


@dataclass
class JobContext:
    rt: Runtime
    delivery: Delivery
    job_type: str
    keeper: LeaseKeeper
    worker: str
    owner: str  # whose job it is (budgets are charged to it)
    _epoch_started: float = field(default_factory=time.monotonic)
    # The training phase the epochs belong to (ml.training.train: `select`, then `refit`), each counting
    # its own epochs from 1: the progress names it, so a client sees why the epoch count starts again.
    _phase: str | None = None

    @property
    def job_id(self) -> str:
        return self.delivery.job_id

    def stage(self, stage: str) -> None:
        """A stage boundary: a requested cancel stops the job here (checked and set in one round trip)."""
        if not self.rt.jobs.enter_stage(self.delivery, stage):
            raise Cancelled(f"cancelled before stage {stage}")
        self._epoch_started = time.monotonic()

    def should_stop(self) -> bool:
        return self.rt.jobs.cancel_requested(self.job_id)

    def should_pause(self) -> bool:
        """Stop at this epoch boundary and hand the job on: the lease or a lock was lost, or the worker
        is being shut down."""
        return self.keeper.lost.is_set() or preemption.requested(self.rt.redis, self.worker)

    def on_epoch(self, epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
        now = time.monotonic()
        # Wall time since the previous epoch (or since the training stage began): what an operator waits.
        seconds, self._epoch_started = now - self._epoch_started, now
        progress = {"epoch": epoch, "epochs": epochs, "loss": train_loss, "val_loss": val_loss,
                    "epoch_seconds": seconds, "phase": self._phase}  # fmt: skip
        self.rt.jobs.set_fields(self.delivery, progress=jsonable(progress))

    def on_phase(self, phase: str) -> None:
        self._phase = phase

    def on_resume(self, epoch: int) -> None:
        self.rt.jobs.set_fields(self.delivery, resumed_from_epoch=epoch)

    def hold_lock(self, lock: SingleFlight) -> None:
        """Keep `lock` refreshed with the lease; losing it stops the job at its next epoch."""
        self.keeper.also_refresh(lock, self.job_id)

    def release_lock(self, lock: SingleFlight) -> None:
        self.keeper.stop_refreshing(lock)
        lock.release(self.job_id)

    def champion_lock(self, name: str) -> AbstractContextManager[Any]:
        return self.rt.redis.lock(f"stockq:lock:champion:{name}", timeout=300, blocking_timeout=600)

    def hand_off(self, task: str, *, stage: str, kwargs: dict[str, Any], countdown: float | None = None,
                 outcome: str = "handed_off") -> object:  # fmt: skip
        """Requeue this job as `task` (attempt + 1): another task, or the same one elsewhere."""
        res = self.rt.jobs.requeue(
            self.delivery, outcome=outcome, lost=False, max_lost=self.rt.settings.max_attempts, stage=stage,
            task=task, task_args=[], task_kwargs=kwargs,
        )  # fmt: skip
        if res.outcome == RequeueOutcome.REQUEUED:
            from workers import app

            try:
                publish(app, self.rt.jobs, self.job_id, task, res.attempt, kwargs=kwargs, countdown=countdown)
            except Exception:
                # The requeue wrote its outbox entry: the reaper publishes it once the broker answers.
                log.warning("job %s: publish of attempt %s failed; left to the outbox", self.job_id,
                            res.attempt, exc_info=True)  # fmt: skip
        return DEFERRED


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
    if state != Start.STARTED:
        log.info("job %s attempt %s not started (%s): dropped", job_id, attempt, state)
        return
    try:
        _run_started(rt, delivery, job_type, work, worker, owner)
    finally:
        # A SIGTERM that arrived during this job was for this job: the next one starts unasked to stop.
        preemption.clear_requested()


def _run_started(rt: Runtime, delivery: Delivery, job_type: str, work: Callable[[JobContext], Any],
                 worker: str, owner: str | None) -> None:  # fmt: skip
    job_id, attempt = delivery.job_id, delivery.attempt
    started = time.monotonic()
    tags = {"job_id": job_id, "attempt": attempt, "tenant": owner or None,
            "ticker": current_task.request.kwargs.get("ticker"), "task": current_task.name}  # fmt: skip
    with logs.job_context(**tags), rt.leases.hold(delivery) as keeper:
        ctx = JobContext(rt, delivery, job_type, keeper, worker, owner or "")
        kind, value = _outcome(ctx, work)
        if kind == "paused":
            _paused(ctx)
            return
        if kind == "deferred":
            return
        try:
            _durable(_record)(ctx, kind, value, time.monotonic() - started)
        except redis.RedisError as exc:
            # Not acknowledged: the message comes back, and the lease (no longer renewed) lets the reaper
            # requeue the job; the outcome is never silently lost.
            raise Reject(f"outcome of job {job_id} not recorded: {exc}", requeue=True) from exc


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


def _record(ctx: JobContext, kind: JobStatus, payload: Any, seconds: float) -> None:
    """The outcome, the execution count and the counters in one script (a success whose cancel arrived
    during the work is recorded cancelled, unless the job type keeps a late result)."""
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
