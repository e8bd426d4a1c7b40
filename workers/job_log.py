"""Each job's own log: a logging handler, in every worker process, that keeps the lines written while a
job runs (inside workers.logs.job_context, INFO and above) in the job's capped list in Redis, its secrets
masked (workers/redaction.py), and announces each on the job's channel (JobRegistry.append_log). The API
serves them to the job's tenant (JobRegistry.log_lines) and streams them as they come.

A line must never fail or stall the job that logs it: it is one round trip under a short socket timeout,
any error drops the line, and after a Redis error the lines of the next seconds are dropped at once rather
than each waiting out a timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stockq.settings import Settings
from workers import logs
from workers.jobs import JobRegistry
from workers.redaction import Redactor

TIMEOUT_S = 0.25  # a line waits at most this for Redis (connect, then answer)
PAUSE_S = 5.0  # lines dropped unsent after a Redis error
MAX_MESSAGE = 1000  # characters of one line's message kept (500 lines of a job stay under about 0.5 MB)
# Lines that tell a job's reader nothing about the job: Python's warnings (deprecations of libraries) and
# Feast's registry-cache chatter at INFO (a training's log was mostly these).
NOISE_LOGGERS = ("py.warnings",)
QUIET_BELOW_WARNING = ("feast",)


def is_noise(record: logging.LogRecord) -> bool:
    root = record.name.split(".", 1)[0]
    return record.name in NOISE_LOGGERS or (root in QUIET_BELOW_WARNING and record.levelno < logging.WARNING)


class JobLogHandler(logging.Handler):
    def __init__(self, redis_url: str, redact: Redactor) -> None:
        super().__init__(logging.INFO)
        self.redis_url = redis_url
        self.redact = redact
        self._jobs: JobRegistry | None = None
        self._pid = 0
        self._paused_until = 0.0
        # Set while this thread appends a line: a line that Redis's client (or anything it calls) logs
        # meanwhile is not appended in turn.
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        job = logs.current_job()
        if not job or not job.get("job_id") or getattr(self._busy, "on", False) or is_noise(record):
            return
        if time.monotonic() < self._paused_until:
            return
        self._busy.on = True
        try:
            self._registry().append_log(job["job_id"], self.line(record))
        except redis.RedisError:
            self._paused_until = time.monotonic() + PAUSE_S
        except Exception:
            self.handleError(record)  # a message that will not format: reported on stderr, never raised
        finally:
            self._busy.on = False

    def line(self, record: logging.LogRecord) -> dict[str, Any]:
        """The stored line (JobRegistry.append_log stamps it): the message masked and cut, an exception
        named by its type only (its text and traceback stay in the worker's own log)."""
        out: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage())[:MAX_MESSAGE],
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = record.exc_info[0].__name__
        return out

    def _registry(self) -> JobRegistry:
        # One client per process: a pool process forked from the main one opens its own connection.
        if self._jobs is None or self._pid != os.getpid():
            client = redis.Redis.from_url(
                self.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )  # fmt: skip
            self._jobs, self._pid = JobRegistry(client, 0), os.getpid()
        return self._jobs


def install(settings: Settings) -> None:
    """Add the handler to this process's root logger (after logs.configure, which replaces the root's
    handlers). Celery sets up a worker's logging once in its main process, whose pool processes inherit the
    handler, and again in each pool process that starts as a fresh interpreter (workers/signals.py)."""
    logging.getLogger().addHandler(JobLogHandler(settings.redis_url, Redactor.from_settings(settings)))
