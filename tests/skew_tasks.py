"""Test-only Celery task for the clock tests: `celery -A tests.skew_tasks worker ...` runs the real app
with it added. A job that holds its lease for a while and reports how far its worker's clock is off."""

from __future__ import annotations

import time

from celery import shared_task

from workers import app
from workers.execution import run_job
from workers.job_context import JobContext

__all__ = ["HOLD", "app"]
# Not in the table of job types: Celery routes it to the default queue (inference) unless told otherwise.
HOLD = "stockq.test.hold"


@shared_task(name=HOLD, acks_late=True, soft_time_limit=120, time_limit=150)
def hold(job_id: str, seconds: float = 10.0, attempt: int = 1) -> None:
    def work(ctx: JobContext) -> dict:
        ctx.stage("holding")
        time.sleep(seconds)  # the lease is renewed from its own thread meanwhile
        redis_s, redis_us = ctx.rt.redis.time()
        # This host's clock against Redis's: proof that the skew the test asked for is real.
        ahead_s = round(time.time() - redis_s - redis_us / 1e6)
        return {"attempt": ctx.delivery.attempt, "clock_ahead_s": ahead_s}

    run_job(job_id, attempt, "ping", work)
