"""The job as one typed record, in the spirit of arq's jobs.py and Celery's states.py: its statuses, the
record as stored in Redis and as the API shows it, and what each registry operation can answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """A job's life: queued -> running -> succeeded | failed | cancelled.

    A running job whose worker is lost, preempted or hands it on goes back to queued with its attempt
    number one higher; a failed or cancelled job can be retried (queued again, attempt + 1)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
UNFINISHED = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class AttemptOutcome(StrEnum):
    """How one attempt ended, as its entry in the record's `attempts` log says."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WORKER_LOST = "worker_lost"  # its worker died (lease expired, pool process lost, redelivered)
    PREEMPTED = "preempted"  # its worker was asked to stop: checkpointed and queued again
    HANDED_OFF = "handed_off"  # the job goes on as another task (a prediction that trains first)
    MESSAGE_LOST = "message_lost"  # queued, but its broker message vanished: published again


class Change(StrEnum):
    """A state change: applied; or refused because another attempt owns the job (`stale`), the job is
    in a state the change does not start from (`refused`: read the record for its status) or is gone."""

    APPLIED = "applied"
    STALE = "stale"
    REFUSED = "refused"
    MISSING = "missing"


class Start(StrEnum):
    """A delivery asking to run its attempt."""

    STARTED = "started"
    STALE = "stale"  # another attempt owns the job
    MISSING = "missing"
    RUNNING = "running"  # this attempt already runs (a redelivered message)
    FINISHED = "finished"


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued: it never runs
    CANCELLING = "cancelling"  # running: it stops at its next stage boundary
    NOT_CANCELLABLE = "not_cancellable"  # running, of a type that cannot stop (a ping)
    FINISHED = "finished"  # too late
    MISSING = "missing"


class RetryOutcome(StrEnum):
    QUEUED = "queued"
    NOT_RETRYABLE = "not_retryable"  # queued, running or succeeded
    BUSY = "busy"  # the owner is at its in-flight cap
    MISSING = "missing"


class RequeueOutcome(StrEnum):
    REQUEUED = "requeued"  # publish the new attempt
    DEAD_LETTERED = "dead_lettered"  # lost its worker too often: failed
    CANCELLED = "cancelled"  # its cancel was requested: it ends here, cancelled
    NOT_OWNER = "not_owner"  # this attempt no longer runs the job (or, reaping, its lease is alive)


@dataclass(frozen=True)
class Requeue:
    outcome: RequeueOutcome
    attempt: int = 0  # the new attempt, when requeued


@dataclass(frozen=True)
class Retry:
    outcome: RetryOutcome
    attempt: int = 0
    status: JobStatus | None = None  # the job's status when not retryable


@dataclass(frozen=True)
class Delivery:
    """What a worker runs: one job at one attempt (its fencing token)."""

    job_id: str
    attempt: int


# Stored as JSON in the hash; the rest are strings, numbers or flags.
_JSON = ("params", "progress", "result", "error", "attempts", "task_args", "task_kwargs")
_FLOAT = ("submitted_at", "started_at", "finished_at", "lease_expires_at")
_INT = ("attempt", "lost", "resumed_from_epoch", "executions", "received_attempt")
# Kept for the workers (how to publish the job again, who holds its message), never shown to clients.
_INTERNAL = ("task", "task_args", "task_kwargs", "lease_expires_at", "received_by", "received_attempt")


@dataclass
class JobRecord:
    """One job as the registry stores it (`stockq:job:<id>`, a hash) and the API shows it (`to_api`)."""

    id: str
    type: str
    owner: str
    status: JobStatus
    attempt: int = 1  # the fencing token: every delivery carries the attempt it was published for
    stage: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    # How each earlier attempt ended ({attempt, worker, started_at, ended_at, outcome}).
    attempts: list[dict[str, Any]] = field(default_factory=list)
    lost: int = 0  # times its worker was lost (dead-lettered at settings.max_attempts)
    resumed_from_epoch: int = 0
    executions: int = 0  # outcomes of work recorded (at most one: the outcome is recorded once)
    worker: str | None = None
    task: str = ""
    task_args: list[Any] = field(default_factory=list)
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    lease_expires_at: float | None = None
    received_by: str | None = None
    received_attempt: int = 0

    @property
    def job_id(self) -> str:
        return self.id

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> JobRecord:
        values: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        known = {f for f in cls.__dataclass_fields__}
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                continue
            if name in _JSON:
                out[name] = json.loads(value) if value else None
            elif name in _FLOAT:
                out[name] = float(value) if value else None
            elif name in _INT:
                out[name] = int(value) if value else 0
            else:
                out[name] = value
        out["status"] = JobStatus(out["status"])
        out["cancel_requested"] = values.get("cancel_requested") == "1"
        out["stage"] = values.get("stage") or None
        out["worker"] = values.get("worker") or None
        for name in ("params", "progress", "task_kwargs"):
            out[name] = out.get(name) or {}
        for name in ("attempts", "task_args"):
            out[name] = out.get(name) or []
        return cls(**out)

    def to_redis(self) -> dict[str, str]:
        """The hash fields of a new record."""
        out: dict[str, str] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if name in _JSON:
                out[name] = json.dumps(value)
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            else:
                out[name] = str(value) if not isinstance(value, float) else repr(value)
        return out

    def to_api(self) -> dict[str, Any]:
        """What a client sees (webapp.schemas.JobRecord): everything but the workers' own bookkeeping."""
        out: dict[str, Any] = {"job_id": self.id}
        for name in self.__dataclass_fields__:
            if name not in _INTERNAL:
                out[name] = getattr(self, name)
        out["status"] = str(self.status)
        return out


def encode_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields of a state change as the hash stores them (JSON for the structured ones)."""
    return {k: json.dumps(v) if k in _JSON else v for k, v in fields.items()}
