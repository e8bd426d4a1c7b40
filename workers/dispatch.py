"""Publishing a job's task: the one place that turns a job record and an attempt into a Celery message.

The API, a requeue (reaper, preemption, hand-off), a retry and the outbox's republish all publish through
here, so every delivery carries its attempt number as the `attempt` keyword (the fencing token the task
checks), and a message the broker took clears its outbox entry (workers/jobs/registry.py).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr

from workers.jobs import JobRecord, JobRegistry


def task_id(job_id: str, attempt: int) -> str:
    # Each attempt its own Celery id: Flower and revokes then see one task per delivery.
    return job_id if attempt == 1 else f"{job_id}-{attempt}"


def publish(
    app: Celery,
    jobs: JobRegistry,
    job_id: str,
    task: str,
    attempt: int,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    countdown: float | None = None,
) -> None:
    """Send the attempt's message; once the broker has it, its outbox entry is done. A publish that raises
    leaves the entry, and the reaper publishes it again."""
    # ignore_result: clients read our job records; a Celery result subscription per job would only pile
    # up in the publishing process.
    kwargs = {**(kwargs or {}), "attempt": attempt}
    app.send_task(
        task,
        args=[job_id, *(args or [])],
        kwargs=kwargs,
        task_id=task_id(job_id, attempt),
        ignore_result=True,
        countdown=countdown,
        kwargsrepr=_kwargs_shown(kwargs),
    )
    jobs.published(job_id, attempt)


def _kwargs_shown(kwargs: dict[str, Any]) -> str:
    """The keywords as Flower's task list shows them (its kwargs column is this text, which the task
    events carry instead of the arguments): the ticker(s) and the attempt first, so that the job's subject
    survives Celery's cut at 1024 characters (an agent question can be long). The args column already
    starts with the job id."""
    first = ("ticker", "tickers", "attempt")
    ordered = sorted(kwargs.items(), key=lambda kv: first.index(kv[0]) if kv[0] in first else len(first))
    return saferepr(dict(ordered), 1024)


def publish_record(app: Celery, jobs: JobRegistry, job: JobRecord, attempt: int) -> None:
    """Publish the task a job record names (its latest hand-off) for `attempt`."""
    publish(app, jobs, job.id, job.task, attempt, job.task_args, job.task_kwargs)
