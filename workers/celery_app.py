"""The Celery application: Redis broker and result backend, safe and reliable settings."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from ml.settings import Settings

QUEUES = ("training", "inference", "agent", "ingest")

# Task name -> queue. Training can run on GPU workers; the agent queue runs one process per embedded
# Qdrant path; ingest does network I/O and must not hold up predictions.
TASK_ROUTES = {
    "stockq.train": {"queue": "training"},
    "stockq.auto_train": {"queue": "training"},
    "stockq.predict": {"queue": "inference"},
    "stockq.predict_batch": {"queue": "inference"},
    "stockq.ping": {"queue": "inference"},
    "stockq.chart": {"queue": "inference"},
    "stockq.analyze": {"queue": "agent"},
    "stockq.ingest": {"queue": "ingest"},
}


def queue_of(task: str) -> str:
    return TASK_ROUTES.get(task, {}).get("queue", "inference")


def celery_config(settings: Settings) -> dict[str, object]:
    hard_limit = settings.train_time_limit_s + 60
    return {
        "broker_url": settings.redis_url,
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
        # Defaults; each task sets its own limits (training gets the longest).
        "task_soft_time_limit": 300,
        "task_time_limit": 330,
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
        "result_backend_transport_options": {"visibility_timeout": hard_limit + 300},
        # Flower and our metrics need task events.
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Workers started before Redis keep retrying instead of exiting.
        "broker_connection_retry_on_startup": True,
        # Our own job registry holds results for clients; Celery's copies need not outlive it, and
        # tasks store none (the API never reads them).
        "result_expires": settings.job_retention_s,
        "task_ignore_result": True,
        # A child that imports torch on a cold disk can take longer than Celery's default 4 s to
        # report in; it would be killed and restarted in a loop.
        "worker_proc_alive_timeout": 60,
        "task_queues": [Queue(q) for q in QUEUES],
        "task_default_queue": "inference",
        "task_routes": TASK_ROUTES,
        # Fail fast instead of hanging when Redis is unreachable while publishing: the API answers 503
        # within 2 s rather than retrying for minutes.
        "task_publish_retry": False,
        "broker_connection_timeout": 2,
        "redis_socket_connect_timeout": 2,
        "redis_socket_timeout": 10,
        "worker_hijack_root_logger": False,
    }


def create_celery(settings: Settings) -> Celery:
    app = Celery("stockq", include=["workers.tasks", "workers.scheduled"])
    # The settings stay out of app.conf: `celery inspect conf` and Flower print the whole config, and
    # Celery masks values only by key name. Tasks read them from `workers.settings`.
    app.conf.update(celery_config(settings))
    return app
