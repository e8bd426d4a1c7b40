"""Worker lifecycle: per-process init after fork, queue heartbeats from the main process."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import redis
from billiard.exceptions import TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_ready, worker_shutdown

from workers.heartbeat import Heartbeat, child_ready_key
from workers.runtime import get_runtime, reset_runtime

log = logging.getLogger(__name__)
_heartbeat: Heartbeat | None = None


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    # Torch is configured only here, in the forked child: prefork children can hang forever in
    # oneDNN's LSTM when torch ran an op in the parent, and CUDA must never be touched before the fork.
    import torch

    from workers import app

    torch.set_num_threads(app.conf.stockq_settings.torch_threads)
    reset_runtime()
    # Build the feature store and the registry client now (about 5 s of imports and set-up, no torch
    # op): otherwise the first job each new process takes pays it, and a warm `?wait=` request times out.
    rt = get_runtime(app.conf.stockq_settings)
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
        # The main process advertises its queues only once a child can take a job (see Heartbeat).
        with contextlib.suppress(redis.RedisError):
            rt.redis.set(child_ready_key(os.getppid()), 1, ex=24 * 3600)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    app = sender.app
    queues = sorted(app.amqp.queues.consume_from.keys()) if app.amqp.queues.consume_from else []
    client = redis.Redis.from_url(
        app.conf.stockq_settings.redis_url, socket_connect_timeout=2, socket_timeout=5
    )
    _heartbeat = Heartbeat(client, sender.hostname, queues, child_ready_key(os.getpid()))
    _heartbeat.start()
    log.info("consuming %s", ", ".join(queues))


@task_failure.connect
def _hard_time_limit(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                     args: Any = None, **_: Any) -> None:  # fmt: skip
    """A hard time limit kills the child before our code can record anything: do it from here (the
    worker's main process), or the job would show `running` forever."""
    if not isinstance(exception, TimeLimitExceeded) or not args:
        return
    from workers import app
    from workers.runtime import get_runtime
    from workers.tasks import finish_failed

    job_type = str(getattr(sender, "name", "job")).removeprefix("stockq.")
    finish_failed(get_runtime(app.conf.stockq_settings), str(args[0]), job_type, "timeout",
                  "the job was stopped at its hard time limit")  # fmt: skip


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
