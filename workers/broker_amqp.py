"""RabbitMQ-side bookkeeping: queue depths for the exporter, and the dead-letter queue drained into
our job records.

A message lands in the dead-letter queue when RabbitMQ delivered it `x-delivery-limit` times without an
ack (workers/celery_app.py). The job it carries is failed as `worker_lost` and listed for
`POST /jobs/<id>/retry`, as a job whose worker was lost too often is on Redis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from kombu import Connection

from workers.celery_app import DEAD_LETTER_QUEUE, dead_letter_queue
from workers.counters import Counters
from workers.jobs import JobRegistry
from workers.jobs.keys import DEAD_LETTER

log = logging.getLogger(__name__)


def queue_depths(url: str, queues: Iterable[str]) -> dict[str, int]:
    """Messages ready per queue (a passive declare: a queue not declared yet counts 0)."""
    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=2) as conn:
        for queue in queues:
            channel = conn.channel()
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).message_count
            except conn.channel_errors:
                depths[queue] = 0
            finally:
                channel.close()
    return depths


def _job_of(body: Any) -> tuple[str, int] | None:
    """(job id, attempt) of a Celery protocol-2 body `[args, kwargs, embed]`, else None."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    try:
        args, kwargs = body[0], body[1]
        return str(args[0]), int(kwargs["attempt"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


class DeadLetters:
    """Drains the dead-letter queue on one kept connection (the reaper calls it every pass)."""

    def __init__(self, url: str, jobs: JobRegistry, limit: int = 100) -> None:
        self.url, self.jobs, self.limit = url, jobs, limit
        self._conn: Connection | None = None
        self._queue: Any = None

    def __call__(self) -> int:
        """Fail the jobs of dead-lettered messages (fenced by their attempt); ack each once recorded."""
        if self._conn is None:
            self._conn = Connection(self.url, connect_timeout=2)
            self._queue = dead_letter_queue()(self._conn.default_channel)
            self._queue.declare()  # once per connection, not every pass
        try:
            return self._drain(self._queue)
        except Exception:
            self._conn.release()  # a broken connection is opened afresh on the next pass
            self._conn = None
            raise

    def _drain(self, queue: Any) -> int:
        drained = 0
        for _ in range(self.limit):
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            job = _job_of(message.body)
            if job is not None:
                _fail(self.jobs, *job)
            message.ack()
            drained += 1
        return drained


def _fail(jobs: JobRegistry, job_id: str, attempt: int) -> None:
    message = f"its message was delivered too often without an ack (the {DEAD_LETTER_QUEUE} queue)"
    before = jobs.get(job_id)
    failed = Counters.increment("stockq_jobs_finished_total", f"{before.type},failed") if before else ()
    jobs.fail(job_id, "worker_lost", message, attempt=attempt, counters=failed)
    record = jobs.get(job_id)
    # Listed even when an earlier drain failed the job but died before listing it (the message came back).
    if record is not None and (record.error or {}).get("code") == "worker_lost":
        jobs.r.zadd(DEAD_LETTER, {job_id: jobs.now()})
        log.warning("job %s attempt %s dead-lettered by the broker", job_id, attempt)
