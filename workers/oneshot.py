"""`celery -A workers.oneshot worker -Q training -c 1`: a worker that runs one task, then exits 0.

For KEDA's ScaledJob (compose/k8s/worker-training-gpu.yaml): one Job pod per queued training message, so
scaling in never touches a running training; the pod ends when its one task has. With -c 1, a prefetch
of 1 and late acks the worker holds no second message.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.signals import task_postrun

from workers import app

__all__ = ["app"]


@task_postrun.connect
def _exit_after_one(**_: Any) -> None:
    # In the pool process, after the task body: SIGTERM asks the main process for a warm shutdown, which
    # stops consuming, acks this task once its result arrives, and exits 0.
    os.kill(os.getppid(), signal.SIGTERM)
