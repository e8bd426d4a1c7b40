"""The Celery application: a Redis or RabbitMQ broker (Redis for results), safe and reliable settings."""

from __future__ import annotations

import traceback
from typing import Any

from celery import Celery, Task
from kombu import Exchange, Queue

from stockq.settings import Settings
from workers.jobs.specs import MAX_PRIORITY, task_priorities, task_routes

QUEUES = ("training", "inference", "agent", "ingest")


def queue_of(task: str) -> str:
    """The queue of a task, from the table of job types (workers/jobs/specs.py). Training and evaluation (a
    refit per origin) can run on GPU workers; the agent queue runs one process per embedded Qdrant path;
    ingest does network I/O and must not hold up predictions."""
    return task_routes().get(task, {}).get("queue", "inference")


def _router(with_priority: bool) -> object:
    """Celery's router over the table, read at each publish: a job type registered later is routed too."""

    def route(name: str, *_: object, **__: object) -> dict[str, object] | None:
        found = task_routes().get(name)
        if found is None or not with_priority:
            return found
        return {**found, "priority": task_priorities().get(name, 0)}

    return route


# RabbitMQ only: a message delivered this many times without an ack (its consumer died or rejected it
# each time) is dead-lettered here instead of looping; the reaper fails its job as `worker_lost`.
DEAD_LETTER_EXCHANGE = "stockq.dlx"
DEAD_LETTER_QUEUE = "stockq.deadletter"


def amqp_queues(settings: Settings) -> list[Queue]:
    """Quorum queues (replicated, and they count deliveries), each dead-lettering past the limit;
    inference is the exception (`_amqp_args`).

    A worker's own crash is counted by our job records (a lost pool process or host is an attempt); the
    broker's limit catches a message that never reaches that bookkeeping, such as one whose outcome Redis
    kept refusing, so it sits just above the attempts a job may use.
    """
    return [Queue(q, Exchange(q, type="direct"), routing_key=q, queue_arguments=_amqp_args(settings, q))
            for q in QUEUES]  # fmt: skip


def _amqp_args(settings: Settings, queue: str) -> dict[str, object]:
    if queue == "inference":
        # A classic queue, for priorities: quorum queues take none before RabbitMQ 4.0 (the declare is
        # refused). Inference jobs are short, and a pool or host lost mid-job is still counted per attempt
        # by our records, so the delivery limit is not missed.
        return {"x-max-priority": MAX_PRIORITY}
    return {
        "x-queue-type": "quorum",
        # RabbitMQ closes the channel of a consumer that holds a message unacked longer than this (30 min
        # by default, less than a training may take). Honoured per queue from RabbitMQ 3.12; older servers
        # need `consumer_timeout` in rabbitmq.conf.
        "x-consumer-timeout": (settings.longest_task_s + 300) * 1000,
        "x-delivery-limit": settings.max_attempts + 1,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
    }


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_LETTER_QUEUE,
        Exchange(DEAD_LETTER_EXCHANGE, type="direct"),
        routing_key=DEAD_LETTER_QUEUE,
        queue_arguments={"x-queue-type": "quorum"},
    )


def _amqp_options(settings: Settings) -> dict[str, object]:
    return {
        "task_queues": amqp_queues(settings),
        # RabbitMQ only (not on Redis: kombu keeps each priority in a list of its own, and the exporter and
        # KEDA read one): someone waits on a prediction; a batch or a chart may wait behind it.
        "task_routes": (_router(with_priority=True),),
        "broker_transport_options": {
            # A publish returns once RabbitMQ has the message (on disk, in the quorum), else it raises:
            # the API never answers 202 for a job the broker did not take.
            "confirm_publish": True,
        },
        # RabbitMQ notices a vanished host (no FIN, no RST: a pulled cable) by missed heartbeats, and only
        # then redelivers its messages: 10 s beats bring that to ~20-30 s, under the job lease.
        "broker_heartbeat": 10,
        # Quorum queues have no global QoS; Celery then applies the prefetch limit per consumer.
        "worker_detect_quorum_queues": True,
    }


def _redis_options(hard_limit: int) -> dict[str, object]:
    return {
        "task_queues": [Queue(q) for q in QUEUES],
        "broker_transport_options": {
            # A message unacked for longer than this is redelivered, so it must outlast the longest
            # hard time limit. Only a backstop: job leases bring a dead worker's job back within
            # `lease_s`, and the late redelivery of a replaced attempt is dropped by its fence.
            "visibility_timeout": hard_limit + 300,
            # How often the surviving workers look for such expired messages (default: every 10 s,
            # slowed further by the throttle); checked often, a lost task is requeued soon after expiry.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 0.5,
            # kombu's own Redis sockets default to no timeout: a hung Redis would hang a publish.
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
        },
    }


def celery_config(settings: Settings) -> dict[str, object]:
    hard_limit = settings.longest_task_s
    broker = _amqp_options(settings) if settings.broker_is_amqp else _redis_options(hard_limit)
    return {
        "broker_url": settings.broker,
        "result_backend": settings.redis_url,
        # JSON only: a pickle payload lets anyone who can write to Redis run code on the workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task ran. A pool process that dies mid-task is not requeued by Celery (that
        # would loop forever on a job that kills its process): the main process requeues the job as a
        # counted attempt, and the reaper does the same for a whole dead worker (workers/leases.py).
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        # One message at a time per process: long trainings must not hoard queued jobs.
        "worker_prefetch_multiplier": 1,
        # Defaults; each task sets its own limits (training and evaluation get the longest).
        "task_soft_time_limit": 300,
        "task_time_limit": 330,
        "result_backend_transport_options": {"visibility_timeout": hard_limit + 300},
        # Flower needs the workers' task events. Not the publisher's task-sent event: nothing reads it (our
        # queue figures come from Redis), and the API would publish it under one lock per process, a second
        # round trip on every submission (about a fifth of its CPU, bench/submit.py).
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        # Workers started before Redis keep retrying instead of exiting.
        "broker_connection_retry_on_startup": True,
        # Our own job registry holds results for clients; Celery's copies need not outlive it, and
        # tasks store none (the API never reads them).
        "result_expires": settings.job_retention_s,
        "task_ignore_result": True,
        # A child that imports torch on a cold disk can take longer than Celery's default 4 s to
        # report in; it would be killed and restarted in a loop.
        "worker_proc_alive_timeout": 60,
        "task_default_queue": "inference",
        "task_routes": (_router(with_priority=False),),
        # Fail fast instead of hanging when Redis is unreachable while publishing: the API answers 503
        # within 2 s rather than retrying for minutes.
        "task_publish_retry": False,
        "broker_connection_timeout": 2,
        "redis_socket_connect_timeout": 2,
        "redis_socket_timeout": 10,
        "worker_hijack_root_logger": False,
        **broker,
    }


class JobFailed(Exception):
    """A job recorded `failed` (workers/execution.py raises it once the record says so): its Celery task
    ends in FAILURE, and Flower shows the job's error code and client message as the exception.

    Its arguments are two strings, so pickle (pool process -> main process) and the JSON result
    serializer (`exc_message`, rebuilt as `JobFailed(code, message)`) both carry it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class JobTask(Task):
    """The base of every task of ours (shared_task picks the app's Task class)."""

    # An expected end, not a crash: Celery logs it on one INFO line, with no traceback.
    throws = (JobFailed,)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Celery formats the traceback from where its tracer caught the exception: our task function and
        run_job. The work's own frames never reach it (JobFailed is raised anew, outside the except
        block, so nothing chains to the original error), but Flower needs none of ours either: the
        task-failed event carries `einfo.traceback`, which the main process sends as this returns, so
        it is cut to the exception line here. (The result backend, were results kept, gets Celery's
        text before this runs; task_ignore_result keeps them out.)"""
        if isinstance(exc, JobFailed):
            einfo.traceback = "".join(traceback.format_exception_only(type(exc), exc))


def create_celery(settings: Settings) -> Celery:
    tasks = ["workers.tasks", "workers.result_tasks", "workers.evaluation", "workers.scheduled"]
    app = Celery("stockq", include=tasks, task_cls=JobTask)
    # The settings stay out of app.conf: `celery inspect conf` and Flower print the whole config, and
    # Celery masks values only by key name. Tasks read them from `workers.settings`.
    app.conf.update(celery_config(settings))
    return app
