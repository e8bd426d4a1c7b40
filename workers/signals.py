"""Worker lifecycle: per-process init after fork, queue heartbeats from the main process."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import redis
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.signals import (
    setup_logging,
    task_failure,
    task_prerun,
    task_received,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from tenacity import retry, retry_if_exception_type, wait_exponential

from workers import job_log, logs, preemption
from workers.broker_scan import held_task_ids
from workers.celery_app import QUEUES
from workers.dispatch import publish_record
from workers.heartbeat import Heartbeat, child_ready_key
from workers.jobs import Delivery, JobRegistry
from workers.leases import Reaper
from workers.runtime import get_runtime, reset_runtime

log = logging.getLogger(__name__)
_heartbeat: Heartbeat | None = None
_reaper: Reaper | None = None


@setup_logging.connect
def _logging(loglevel: Any = None, **_: Any) -> None:
    """Our handlers instead of Celery's: text or JSON lines, each tagged with the job it belongs to, and
    each job's lines in the job's own log. Celery sends this once in the worker's main process (its forked
    pool processes inherit both handlers) and in a pool process started as a fresh interpreter."""
    from workers import settings

    logs.configure(settings.log_format, loglevel or logging.INFO)
    job_log.install(settings)


@worker_init.connect
def _refuse_placeholder_secrets(**_: Any) -> None:
    """A worker never starts while a secret is a documented placeholder (stockq/placeholders.py)."""
    from stockq.placeholders import check
    from workers import settings

    check(settings)


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    # Torch is configured only here, in the forked child: prefork children can hang forever in
    # oneDNN's LSTM when torch ran an op in the parent, and CUDA must never be touched before the fork.
    import torch

    from workers import app, settings

    torch.set_num_threads(settings.torch_threads)
    reset_runtime()
    rt = get_runtime(settings)
    # Build the feature store and the registry client now (about 5 s of imports and set-up, no torch
    # op): otherwise the first job each new process takes pays it, and a warm `?wait=` request times out.
    try:
        rt.store.apply()
        rt.registry  # noqa: B018 (built for its side effect)
        if "agent" in (app.amqp.queues.consume_from or {}):
            from agent.embeddings import embed

            rt.analyst  # noqa: B018 (opens the semantic cache)
            embed("warm-up")  # loads the embedding model (seconds) before the first question
            log.info("agent process ready: semantic cache and embedding model loaded")
    except Exception:
        log.warning("could not prepare the worker process ahead of its first job", exc_info=True)
    finally:
        # The main process advertises its queues only once a child can take a job (see Heartbeat). Said
        # until Redis takes it (a child started during an outage would otherwise never be advertised).
        threading.Thread(target=_say_ready, args=(rt, os.getppid()), name="stockq-ready", daemon=True).start()


@retry(retry=retry_if_exception_type(redis.RedisError), wait=wait_exponential(multiplier=0.5, max=10))
def _say_ready(rt: Any, main_pid: int) -> None:
    rt.redis.set(child_ready_key(main_pid), 1, ex=24 * 3600)


@task_prerun.connect
def _preemptible(**_: Any) -> None:
    """SIGTERM to this pool process during a job asks for a checkpoint and a requeue at the next epoch."""
    if threading.current_thread() is threading.main_thread():  # signal handlers: the main thread only
        from workers import settings

        rt = get_runtime(settings)
        preemption.install(lambda: rt.leases.current is not None)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat, _reaper
    from workers import settings

    app = sender.app
    queues = sorted(app.amqp.queues.consume_from.keys()) if app.amqp.queues.consume_from else []
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    with contextlib.suppress(redis.RedisError):
        preemption.clear_draining(client, sender.hostname)  # a restarted worker under the same name
    _heartbeat = Heartbeat(client, sender.hostname, queues, child_ready_key(os.getpid()))
    _heartbeat.start()
    jobs = JobRegistry(client, settings.job_retention_s)
    _reaper = Reaper(
        client,
        jobs,
        lambda job, attempt: publish_record(app, jobs, job, attempt),
        lease_s=settings.lease_s,
        max_lost=settings.max_attempts,
        name=sender.hostname,
        **_broker_checks(settings, jobs),
    )
    _reaper.start()
    log.info("consuming %s", ", ".join(queues))


def _broker_checks(settings: Any, jobs: JobRegistry) -> dict[str, Any]:
    if settings.broker_is_amqp:
        from workers.broker_amqp import DeadLetters

        return {"dead_letters": DeadLetters(settings.broker, jobs)}
    broker = redis.Redis.from_url(settings.broker, socket_connect_timeout=2, socket_timeout=5)
    return {"held": lambda: held_task_ids(broker, QUEUES)}


@task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    """Note who took the message: a worker that dies before starting it leaves the job queued, and the
    reaper republishes it once that worker's heartbeat stops."""
    if _reaper is None or request is None or not request.args:
        return
    delivery = Delivery(str(request.args[0]), int((request.kwargs or {}).get("attempt", 1)))
    with contextlib.suppress(redis.RedisError):
        _reaper.jobs.mark_received(delivery, request.hostname)


@task_failure.connect
def _lost_or_timed_out(sender: Any = None, exception: BaseException | None = None, args: Any = None,
                       kwargs: Any = None, **_: Any) -> None:  # fmt: skip
    """Runs in the worker's main process when the pool process died under a job (requeued at once, as
    a lost attempt) or was killed at its hard time limit (failed): our code in the child could record
    neither, and the job would otherwise wait for its lease to expire."""
    if not args or not isinstance(exception, (TimeLimitExceeded, WorkerLostError)):
        return
    from workers import settings
    from workers.execution import finish_failed

    delivery = Delivery(str(args[0]), int((kwargs or {}).get("attempt", 1)))
    rt = get_runtime(settings)
    if isinstance(exception, WorkerLostError):
        job = rt.jobs.get(delivery.job_id)
        if job is not None and _reaper is not None:
            _reaper.give_up(delivery, job, reaping=False)
        return
    job_type = str(getattr(sender, "name", "job")).removeprefix("stockq.")
    finish_failed(rt, delivery.job_id, job_type, "timeout", "the job was stopped at its hard time limit",
                  attempt=delivery.attempt)  # fmt: skip


@worker_shutting_down.connect
def _drain(**_: Any) -> None:
    """A warm shutdown: a running training checkpoints at its epoch's end and requeues itself."""
    if _heartbeat is not None:
        with contextlib.suppress(redis.RedisError):
            preemption.mark_draining(_heartbeat.r, _heartbeat.hostname)


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()
    if _heartbeat is not None:
        _heartbeat.stop()
