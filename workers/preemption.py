"""Preemption (scale-in, rollout, spot reclaim): a training asked to stop checkpoints at the end of its
epoch and requeues itself, so a worker's grace period has to cover one epoch, not a whole training.

Two ways the ask arrives: SIGTERM to the pool process itself (a process-group kill), or SIGTERM to the
worker's main process only (Kubernetes, compose), which marks the worker as draining in Redis.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import redis

_requested = threading.Event()
DRAIN_TTL_S = 3600


def draining_key(worker: str) -> str:
    return f"stockq:draining:{worker}"


def mark_draining(client: redis.Redis, worker: str) -> None:
    client.set(draining_key(worker), 1, ex=DRAIN_TTL_S)


def clear_draining(client: redis.Redis, worker: str) -> None:
    client.delete(draining_key(worker))


def install(is_busy: Callable[[], bool]) -> None:
    """In a pool process, before each task: SIGTERM during a job means 'stop at the next epoch'; when idle,
    billiard's own handler ends the process as before. Not at worker_process_init: billiard sets its
    handler in a new pool process right after that signal (Worker.after_fork: reset_signals), over ours."""
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "preempts", False):
        return
    fallback = signal.SIG_DFL if previous is None else previous

    def on_term(signum: int, frame: Any) -> None:
        if is_busy():
            _requested.set()
            return
        signal.signal(signum, fallback)
        if callable(fallback):
            fallback(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    on_term.preempts = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, on_term)


def clear_requested() -> None:
    """The job the SIGTERM was for has ended (handed on, or finished first): a later job in this process
    runs unasked (Flower's Terminate sends one SIGTERM to a busy pool process, which then lives on)."""
    _requested.clear()


def requested(client: redis.Redis, worker: str) -> bool:
    return _requested.is_set() or bool(client.exists(draining_key(worker)))
