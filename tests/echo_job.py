"""A test-only job type added the way a new one is: one row of the table (workers/jobs/specs.py) and its
task, here and nowhere else. `celery -A tests.echo_job worker ...` runs the real app with it; the process
that submits imports this module too (tests/test_job_model.py).

The row differs from the defaults wherever a default could hide a missing lookup: its queue is not
`inference` (where an unknown task would land), it cannot stop while running, its record is short-lived."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from workers import app
from workers.execution import run_job
from workers.job_context import JobContext
from workers.jobs.specs import JobSpec, register

__all__ = ["ECHO", "app", "echo"]

ECHO = register(JobSpec("echo", "stockq.test.echo", "ingest", "agent", cancellable_running=False,
                        retention="short"))  # fmt: skip


@shared_task(name=ECHO.task, acks_late=True, soft_time_limit=60, time_limit=90)
def echo(job_id: str, text: str, seconds: float = 0.0, attempt: int = 1) -> None:
    """Answers its text after `seconds`, passing a stage boundary every tenth of a second."""

    def work(ctx: JobContext) -> dict[str, Any]:
        for step in range(round(seconds * 10)):
            ctx.stage(f"step{step}")
            time.sleep(0.1)
        return {"echo": text}

    run_job(job_id, attempt, ECHO.name, work)
