"""What a job's work sees of its delivery: stages, progress, cancel and pause checks, locks, hand-offs.

workers/execution.py runs each delivery and builds one JobContext for its work (the tasks in
workers/tasks.py, workers/evaluation.py, workers/result_tasks.py). The record's progress is built by
workers/progress.py (phases, labels, bars, the loss curve) and written here, one write per step or epoch.
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
from workers.progress import Progress
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
    _progress: Progress | None = None  # read from the record once per attempt, on first use

    @property
    def job_id(self) -> str:
        return self.delivery.job_id

    def plan(self, *phases: str) -> None:
        """The phases this job expects, in order (more may join: `expect`). A later attempt keeps the
        earlier attempts' losses, read from the record once."""
        job = self.rt.jobs.get(self.job_id)
        self._progress = Progress.carried_over(job.progress if job is not None else None, list(phases))

    def expect(self, *phases: str) -> None:
        self._tracker.expect(*phases)

    @property
    def _tracker(self) -> Progress:
        if self._progress is None:
            self.plan()
        assert self._progress is not None
        return self._progress

    def _write(self, progress: dict[str, Any], **fields: Any) -> None:
        self.rt.jobs.set_fields(self.delivery, progress=jsonable(progress), **fields)

    @property
    def current_phase(self) -> str | None:
        return self._tracker.phase

    def begin(self, phase: str, label: str, *, steps: int = 1, step: int = 0, **extra: Any) -> None:
        """A phase of the job's own (ingest, walk_forward, baselines, forecast...) begins."""
        self._write(self._tracker.enter(phase, label, steps=steps, step=step, **extra))

    def advance(self, step: int, label: str, **extra: Any) -> None:
        self._write(self._tracker.advance(step, label, **extra))

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
        """One write per epoch: the progress with its whole (capped) loss curve."""
        now = time.monotonic()
        # Wall time since the previous epoch (or since the phase began): what an operator waits.
        seconds, self._epoch_started = now - self._epoch_started, now
        self._write(self._tracker.epoch(epoch, epochs, train_loss, val_loss, seconds))

    def on_phase(self, phase: str, epochs: int) -> None:
        """A training phase begins (`select`, `refit`, or `parent_`... for a parent trained first)."""
        self._epoch_started = time.monotonic()
        self._write(self._tracker.training_phase(phase, epochs))

    def on_resume(self, epoch: int) -> None:
        self._write(self._tracker.resumed(epoch), resumed_from_epoch=epoch)

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
