"""Test-only Celery tasks for fault tests: `celery -A tests.fault_tasks worker ...` runs the real app with
these added. A slow job for every queue (to kill its worker mid-run) and a job that kills its own
process (a poison job) while a Redis flag is set."""

from __future__ import annotations

import os
import signal
import time

from celery import shared_task
from celery.exceptions import Reject

from workers import app
from workers.celery_app import QUEUES
from workers.execution import run_job
from workers.job_context import JobContext

__all__ = ["POISON_FLAG", "app", "slow_task"]
POISON_FLAG = "stockq:test:poison"


def slow_task(queue: str) -> str:
    return f"stockq.test.slow.{queue}"


# Celery asks each router in turn: the job table's router knows none of these, so this map answers them.
app.conf.task_routes = (*app.conf.task_routes, {**{slow_task(q): {"queue": q} for q in QUEUES},
                                               "stockq.test.poison": {"queue": "inference"},
                                               "stockq.test.refused": {"queue": "ingest"}})  # fmt: skip


def _slow(job_id: str, seconds: float, attempt: int) -> None:
    def work(ctx: JobContext) -> dict:
        for step in range(int(seconds * 10)):
            time.sleep(0.1)
            if step % 10 == 0:
                ctx.stage(f"step{step // 10}")
        return {"slept": seconds, "attempt": ctx.delivery.attempt}

    run_job(job_id, attempt, "ping", work)


def _register_slow(queue: str) -> None:
    def slow(job_id: str, seconds: float = 5.0, attempt: int = 1) -> None:
        _slow(job_id, seconds, attempt)

    shared_task(name=slow_task(queue), acks_late=True, soft_time_limit=300, time_limit=330)(slow)


for _queue in QUEUES:
    _register_slow(_queue)


@shared_task(name="stockq.test.poison", acks_late=True, soft_time_limit=30, time_limit=40)
def poison(job_id: str, attempt: int = 1) -> None:
    def work(ctx: JobContext) -> dict:
        if ctx.rt.redis.exists(POISON_FLAG):
            os.kill(os.getpid(), signal.SIGKILL)  # what an OOM kill looks like to the worker
        return {"survived": True}

    run_job(job_id, attempt, "ping", work)


@shared_task(name="stockq.test.refused", acks_late=True, soft_time_limit=10, time_limit=20)
def refused(job_id: str, attempt: int = 1) -> None:
    """Handed back to the broker before our bookkeeping sees it, every time (what a worker that crashes
    on receipt looks like to RabbitMQ): only the broker's delivery limit ends the loop."""
    raise Reject(f"job {job_id} refused", requeue=True)
