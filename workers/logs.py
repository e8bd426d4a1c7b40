"""Structured logs: every line written while a job runs carries its job id, attempt, tenant, ticker and
task, in JSON lines (python-json-logger) or in text. `STOCKQ_LOG_FORMAT=json|text`, for the API and the
workers alike (`stockq up --log-format`).

The job's fields live in a context variable set for the duration of one delivery, and a filter copies
them onto each record, so library code that logs (MLflow, Feast) is tagged too; a worker also keeps the
lines of each job in the job's own log (workers/job_log.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

JOB_FIELDS = ("job_id", "attempt", "tenant", "ticker", "task")
_job: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("stockq_job", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job_suffix)s: %(message)s"


class JobFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        job = _job.get() or {}
        for field in JOB_FIELDS:
            setattr(record, field, job.get(field))
        record.job_suffix = f" [job {job['job_id']} #{job['attempt']}]" if job else ""
        return True


@contextlib.contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    token = _job.set({k: fields.get(k) for k in JOB_FIELDS})
    try:
        yield
    finally:
        _job.reset(token)


def current_job() -> dict[str, Any] | None:
    """The fields of the job whose delivery this context runs (job_context), None outside any job."""
    return _job.get()


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        # JSON escapes whatever a client sent (a newline in a question or ticker never starts a line).
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*JsonFormatter().reserved_attrs, "job_suffix"],
        )
    return logging.Formatter(TEXT_FORMAT)


def configure(fmt: str, level: int = logging.INFO) -> None:
    """One handler on the root logger, to stderr, in the chosen format, with the job fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(JobFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
