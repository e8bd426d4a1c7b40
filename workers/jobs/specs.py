"""The one table of job types: what runs a job, where, what it costs, whether it can stop while running,
how long its record lives and where its bytes go. Celery's routes, the API's types and budgets, the
cancel rules and the retention are all read from it; a new job type is one row (`register`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Cost = Literal["train", "predict", "agent"]
Retention = Literal["long", "short"]
Queue = Literal["training", "inference", "agent", "ingest"]
MAX_PRIORITY = 9  # RabbitMQ priorities run 0..MAX_PRIORITY (the inference queue's x-max-priority)


@dataclass(frozen=True)
class JobSpec:
    name: str
    task: str  # the Celery task that runs it
    queue: Queue
    # The rate-limit class it is charged to (webapp/ratelimit.py): its submission, and its retry.
    cost: Cost
    # A running job of this type stops at its next stage boundary when cancelled; the others (a ping) are
    # over before a cancel could reach them (the API answers 409 not_cancellable).
    cancellable_running: bool = True
    # A cancel that arrives once the work has recorded its result elsewhere (a model registered, an
    # evaluation logged) keeps the job's result: the registry already holds it, and the record must say so.
    keeps_late_result: bool = False
    # `short`: looked at once (a ping, a chart, a prediction), the record goes after
    # settings.short_job_retention_s.
    retention: Retention = "long"
    # Where the result's bytes live: in the record, or on the evicting cache Redis for
    # settings.short_job_retention_s (charts, batch forecasts), charged to the owner's byte budget.
    result_on_cache: bool = False
    # RabbitMQ priority (someone waits on a prediction; a batch or chart may wait behind it).
    priority: int = 0
    # Tasks the job may hand itself on to (same record, next attempt), with their queues.
    hand_offs: dict[str, Queue] = field(default_factory=dict)


JOB_SPECS: dict[str, JobSpec] = {}


def register(spec: JobSpec) -> JobSpec:
    """Add a job type (a row of the table); every list above reads it from here."""
    JOB_SPECS[spec.name] = spec
    return spec


for _spec in (
    JobSpec("train", "stockq.train", "training", "train", keeps_late_result=True),
    JobSpec("evaluate", "stockq.evaluate", "training", "train", keeps_late_result=True),
    # Predictions are looked at once, at up to the prediction budget a minute: records of days would let
    # one tenant fill the registry Redis within its limits (bench/memory.py).
    JobSpec("predict", "stockq.predict", "inference", "predict", retention="short", priority=9,
            hand_offs={"stockq.auto_train": "training"}),
    JobSpec("predict_batch", "stockq.predict_batch", "inference", "predict", retention="short",
            result_on_cache=True),
    JobSpec("chart", "stockq.chart", "inference", "predict", retention="short", result_on_cache=True),
    JobSpec("ping", "stockq.ping", "inference", "predict", cancellable_running=False, retention="short",
            priority=9),
    JobSpec("analyze", "stockq.analyze", "agent", "agent"),
    JobSpec("ingest", "stockq.ingest", "ingest", "train"),
):  # fmt: skip
    register(_spec)


def spec(job_type: str) -> JobSpec:
    return JOB_SPECS[job_type]


def job_types() -> tuple[str, ...]:
    return tuple(JOB_SPECS)


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's task_routes: every task a job type runs, hand-offs included."""
    routes: dict[str, dict[str, str]] = {}
    for s in JOB_SPECS.values():
        routes[s.task] = {"queue": s.queue}
        routes.update({task: {"queue": queue} for task, queue in s.hand_offs.items()})
    return routes


def task_priorities() -> dict[str, int]:
    return {s.task: s.priority for s in JOB_SPECS.values()}


def cancellable_running() -> frozenset[str]:
    return frozenset(s.name for s in JOB_SPECS.values() if s.cancellable_running)


def keeps_late_result() -> frozenset[str]:
    return frozenset(s.name for s in JOB_SPECS.values() if s.keeps_late_result)
