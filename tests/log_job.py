"""A test-only job type that writes its own log (tests/test_job_logs.py): a line naming each of the worker's
secrets the way careless code would, credentials in a URL and in `key=value` text, an exception, a line
below INFO, then `lines` numbered lines. `celery -A tests.log_job worker -Q ingest` runs the real app with
it; the process that submits imports it too."""

from __future__ import annotations

import logging

from celery import shared_task

from workers import app, settings
from workers.execution import run_job
from workers.job_context import JobContext
from workers.jobs.specs import JobSpec, register

__all__ = ["LOG_JOB", "app", "chatty"]

LOG_JOB = register(JobSpec("logtest", "stockq.test.log", "ingest", "agent", cancellable_running=False,
                           retention="short"))  # fmt: skip
log = logging.getLogger(__name__)
URL_PASSWORD = "pw-in-the-url-4711"
KV_PASSWORD = "hunter2-kv"


@shared_task(name=LOG_JOB.task, acks_late=True, soft_time_limit=60, time_limit=90)
def chatty(job_id: str, lines: int, attempt: int = 1) -> None:
    def work(ctx: JobContext) -> dict[str, int]:
        ctx.stage("secrets")
        for tenant in settings.api_keys.get_secret_value().split(","):
            log.info("tenant key %s, whole entry %s", tenant.split(":", 1)[1], tenant)
        log.info("connecting to redis://:%s@cache:6379/0 with password=%s", URL_PASSWORD, KV_PASSWORD)
        try:
            raise ValueError(f"boom with {URL_PASSWORD}")
        except ValueError:
            log.warning("the step failed; going on", exc_info=True)
        log.debug("not kept: below INFO")
        ctx.stage("count")
        for i in range(lines):
            log.info("line %d", i)
        return {"lines": lines}

    run_job(job_id, attempt, LOG_JOB.name, work)
