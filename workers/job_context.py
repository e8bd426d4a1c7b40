"""What a job's work sees of its delivery: stages, progress, cancel and pause checks, locks, hand-offs.

workers/execution.py runs each delivery and builds one JobContext for its work (the tasks in
workers/tasks.py, workers/evaluation.py, workers/result_tasks.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np

from ml.errors import Cancelled
from workers import preemption
from workers.dispatch import publish
from workers.jobs import Delivery
from workers.jobs.model import RequeueOutcome
from workers.leases import LeaseKeeper
from workers.runtime import Runtime
from workers.singleflight import SingleFlight

log = logging.getLogger(__name__)

# Work returns DEFERRED when the job was handed on (to another task, or to wait for a training).
DEFERRED = object()


def jsonable(value: Any) -> Any:
    """kombu and our records take plain JSON: numpy scalars, arrays and dates are converted."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (date, datetime)):
            return obj.isoformat()
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    return _finite(json.loads(json.dumps(value, default=default)))


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null (a diverged loss must not break the record)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@dataclass
class JobContext:
    rt: Runtime
    delivery: Delivery
    job_type: str
    keeper: LeaseKeeper
    worker: str
    owner: str  # whose job it is (budgets are charged to it)
    _epoch_started: float = field(default_factory=time.monotonic)
    # The training phase the epochs belong to (ml.training.train: `select`, then `refit`), each counting
    # its own epochs from 1: the progress names it, so a client sees why the epoch count starts again.
    _phase: str | None = None

    @property
    def job_id(self) -> str:
        return self.delivery.job_id

    def stage(self, stage: str) -> None:
        """A stage boundary: a requested cancel stops the job here (checked and set in one round trip)."""
        if not self.rt.jobs.enter_stage(self.delivery, stage):
            raise Cancelled(f"cancelled before stage {stage}")
        self._epoch_started = time.monotonic()

    def should_stop(self) -> bool:
        return self.rt.jobs.cancel_requested(self.job_id)

    def should_pause(self) -> bool:
        """Stop at this epoch boundary and hand the job on: the lease or a lock was lost, or the worker
        is being shut down."""
        return self.keeper.lost.is_set() or preemption.requested(self.rt.redis, self.worker)

    def on_epoch(self, epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
        now = time.monotonic()
        # Wall time since the previous epoch (or since the training stage began): what an operator waits.
        seconds, self._epoch_started = now - self._epoch_started, now
        progress = {"epoch": epoch, "epochs": epochs, "loss": train_loss, "val_loss": val_loss,
                    "epoch_seconds": seconds, "phase": self._phase}  # fmt: skip
        self.rt.jobs.set_fields(self.delivery, progress=jsonable(progress))

    def on_phase(self, phase: str) -> None:
        self._phase = phase

    def on_resume(self, epoch: int) -> None:
        self.rt.jobs.set_fields(self.delivery, resumed_from_epoch=epoch)

    def hold_lock(self, lock: SingleFlight) -> None:
        """Keep `lock` refreshed with the lease; losing it stops the job at its next epoch."""
        self.keeper.also_refresh(lock, self.job_id)

    def release_lock(self, lock: SingleFlight) -> None:
        self.keeper.stop_refreshing(lock)
        lock.release(self.job_id)

    def champion_lock(self, name: str) -> AbstractContextManager[Any]:
        return self.rt.redis.lock(f"stockq:lock:champion:{name}", timeout=300, blocking_timeout=600)

    def hand_off(self, task: str, *, stage: str, kwargs: dict[str, Any], countdown: float | None = None,
                 outcome: str = "handed_off") -> object:  # fmt: skip
        """Requeue this job as `task` (attempt + 1): another task, or the same one elsewhere."""
        res = self.rt.jobs.requeue(
            self.delivery, outcome=outcome, lost=False, max_lost=self.rt.settings.max_attempts, stage=stage,
            task=task, task_args=[], task_kwargs=kwargs,
        )  # fmt: skip
        if res.outcome == RequeueOutcome.REQUEUED:
            from workers import app

            try:
                publish(app, self.rt.jobs, self.job_id, task, res.attempt, kwargs=kwargs, countdown=countdown)
            except Exception:
                # The requeue wrote its outbox entry: the reaper publishes it once the broker answers.
                log.warning("job %s: publish of attempt %s failed; left to the outbox", self.job_id,
                            res.attempt, exc_info=True)  # fmt: skip
        return DEFERRED
