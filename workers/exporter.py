"""`stockq exporter`: the backend-wide Prometheus figures, read from Redis and the MLflow registry.

One process serves them (compose/k8s run one replica), so nothing is counted once per API replica:
queue length, oldest queued job age and unacked messages per queue; jobs by type and status, retried,
requeued and overdue jobs; the dead-letter size; per-worker liveness from the heartbeats; epoch time and
loss of running trainings; the age of each champion model; the job, cache and duration counters every
process adds to in Redis (workers/counters.py); Redis's own memory.

Worker liveness and model ages are read by workers/exporter_sources.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.celery_app import QUEUES
from workers.clock import server_time
from workers.counters import JOB_DURATION_BUCKETS, Counters
from workers.exporter_sources import ModelAges, WorkerLiveness
from workers.jobs import JOB_SPECS, JobRegistry, JobStatus, keys, spec
from workers.jobs.keys import DEAD_LETTER
from workers.jobs.specs import job_types

log = logging.getLogger(__name__)

# Counter hashes under stockq:metrics: -> (help, label names); a field is the label values joined by ",".
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "stockq_jobs_submitted_total": ("Jobs submitted", ("type",)),
    "stockq_jobs_finished_total": ("Jobs finished by outcome", ("type", "status")),
    "stockq_job_requeues_total": ("Jobs put back on their queue after losing their worker", ("type",)),
    "redis_cache_hit_total": ("Prediction cache hits", ()),
    "redis_cache_miss_total": ("Prediction cache misses", ()),
    "stockq_model_cache_hits_total": ("Model cache hits in the workers", ()),
    "stockq_model_cache_misses_total": ("Model cache misses (model loaded)", ()),
    "stockq_semantic_cache_hits_total": ("Agent semantic cache hits", ()),
    "stockq_semantic_cache_misses_total": ("Agent semantic cache misses", ()),
}
TRIM_PER_SCRAPE = 1000
_JOB_FIELDS = ("type", "status", "submitted_at", "started_at", "attempt", "lease_expires_at")


def _float(raw: bytes | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


class BackendCollector(Collector):
    def __init__(
        self,
        client: redis.Redis,
        liveness: WorkerLiveness,
        models: ModelAges | None,
        limits: dict[str, float],
        amqp_depths: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        """`amqp_depths`: queue lengths read from RabbitMQ (None: the queues are lists in `client`)."""
        self.r = client
        self.amqp_depths = amqp_depths
        self.counters = Counters(client)
        self.jobs = JobRegistry(client, retention_s=0)  # only its scripts: it creates no job
        self.liveness = liveness
        self.models = models
        self.limits = limits  # job type -> hard time limit (s)

    def collect(self) -> Iterator[Metric]:
        try:
            self.liveness.poll()
            figures = list(self._from_redis())
        except redis.RedisError as exc:
            log.warning("redis unreadable: %s", exc)
            figures = []
        yield GaugeMetricFamily(
            "stockq_redis_up", "Whether the exporter reads Redis", value=int(bool(figures))
        )
        yield from figures
        if self.models is not None:
            gauge = GaugeMetricFamily(
                "stockq_model_age_seconds", "Age of the champion version", labels=["model"]
            )
            for name, age in sorted(self.models.ages().items()):
                gauge.add_metric([name], age)
            yield gauge

    @staticmethod
    def _from_amqp(depths: Callable[[], dict[str, int]]) -> Iterator[Metric]:
        # Unacknowledged counts are not in AMQP's reply to a declare (only the management API has them).
        try:
            lengths = depths()
        except Exception as exc:  # an unreachable RabbitMQ leaves the queue gauges out, not the scrape
            log.warning("rabbitmq unreadable: %s", exc)
            return
        yield _gauge("stockq_queue_length", "Messages waiting per queue", "queue", sorted(lengths.items()))

    def _from_redis(self) -> Iterator[Metric]:
        now = server_time(self.r)  # the clock the records' times and heartbeats are in
        pipe = self.r.pipeline()
        for queue in QUEUES:
            pipe.llen(queue)
        pipe.hvals("unacked")
        pipe.zcard(DEAD_LETTER)
        pipe.info("memory")
        *lengths, unacked, deadletter, memory = pipe.execute()
        if self.amqp_depths is not None:
            yield from self._from_amqp(self.amqp_depths)
        else:
            waiting = zip(QUEUES, lengths, strict=True)
            yield _gauge("stockq_queue_length", "Messages waiting per queue", "queue", waiting)
            unacked_per = Tally({q: 0 for q in QUEUES})
            for raw in unacked:
                try:
                    unacked_per[json.loads(raw)[2]] += 1
                except (ValueError, IndexError, TypeError):
                    continue
            yield _gauge(
                "stockq_queue_unacked", "Messages delivered, not yet acked", "queue", unacked_per.items()
            )
        yield GaugeMetricFamily(
            "stockq_deadletter_size", "Jobs failed for good (worker lost)", value=deadletter
        )
        limit = memory.get("maxmemory") or memory.get("total_system_memory") or 0
        yield GaugeMetricFamily(
            "stockq_redis_memory_used_bytes", "Redis used_memory", value=memory["used_memory"]
        )
        yield GaugeMetricFamily(
            "stockq_redis_memory_limit_bytes", "Redis maxmemory, else the host's memory", value=limit
        )

        states = self.liveness.states(now)
        workers = GaugeMetricFamily(
            "stockq_worker_up", "1 while the worker heartbeats", labels=["worker", "queue"]
        )
        for (worker, queue), up in sorted(states.items()):
            workers.add_metric([worker, queue], up)
        yield workers
        live = Tally({q: 0 for q in QUEUES})
        live.update(queue for (_, queue), up in states.items() if up)
        yield _gauge("stockq_workers", "Live workers consuming each queue", "queue", live.items())

        yield from self._jobs(now)
        yield from self._counters()

    def _jobs(self, now: float) -> Iterator[Metric]:
        """Counts from the indexes the scripts keep (one ZCARD per status and type), and the unfinished
        jobs' own fields: the cost follows the jobs in flight, never the jobs stored."""
        # Records that expired leave the indexes first (a bounded batch per scrape): the counts follow
        # expiries even while nothing is submitted (each submission trims only a few).
        self.jobs.trim_expired(TRIM_PER_SCRAPE)
        types = job_types()
        pipe = self.r.pipeline()
        for job_type in types:
            for state in JobStatus:
                pipe.zcard(keys.filtered_index(None, state, job_type))
        counts = iter(pipe.execute())
        by_status = {(t, str(state)): next(counts) for t in types for state in JobStatus}
        ids = self.r.zrange(keys.filtered_index(None, JobStatus.QUEUED, None), 0, -1)
        ids += self.r.zrange(keys.filtered_index(None, JobStatus.RUNNING, None), 0, -1)
        pipe = self.r.pipeline()
        for job_id in ids:
            pipe.hmget(keys.job(job_id.decode()), _JOB_FIELDS)
        retried: Tally[str] = Tally({t: 0 for t in types})
        overdue: Tally[str] = Tally({t: 0 for t in types})
        oldest = {q: 0.0 for q in QUEUES}
        training: list[bytes] = []
        for job_id, values in zip(ids, pipe.execute() if ids else [], strict=True):
            kind, status, submitted, started, attempt, lease = values
            if kind is None or status is None or kind.decode() not in JOB_SPECS:
                continue  # expired meanwhile
            job_type, state = kind.decode(), status.decode()
            if (_float(attempt) or 1) > 1:
                retried[job_type] += 1
            if state == JobStatus.QUEUED and (submitted_at := _float(submitted)) is not None:
                q = spec(job_type).queue
                oldest[q] = max(oldest.get(q, 0.0), now - submitted_at)
            elif state == JobStatus.RUNNING:
                expires, begun = _float(lease), _float(started)
                limit = self.limits.get(job_type)
                if (expires is not None and expires < now) or (
                    expires is None and begun is not None and limit is not None and now - begun > limit
                ):
                    overdue[job_type] += 1
                if job_type == "train":
                    training.append(job_id)
        family = GaugeMetricFamily("stockq_jobs", "Job records by type and status", labels=["type", "status"])
        for (job_type, state), n in sorted(by_status.items()):
            family.add_metric([job_type, state], n)
        yield family
        yield _gauge(
            "stockq_queue_oldest_age_seconds", "Age of the oldest queued job", "queue", oldest.items()
        )
        yield _gauge(
            "stockq_jobs_retried", "Unfinished jobs on their second or later attempt", "type", retried.items()
        )
        yield _gauge(
            "stockq_jobs_overdue", "Running jobs past their lease or time limit", "type", overdue.items()
        )
        yield from self._training(training)

    def _training(self, ids: list[bytes]) -> Iterator[Metric]:
        pipe = self.r.pipeline()
        for job_id in ids:
            pipe.hmget(f"stockq:job:{job_id.decode()}", ("progress", "params"))
        epoch = GaugeMetricFamily(
            "stockq_training_epoch_seconds",
            "Last epoch's time of running trainings",
            labels=["job_id", "ticker"],
        )
        loss = GaugeMetricFamily(
            "stockq_training_loss",
            "Last epoch's loss of running trainings",
            labels=["job_id", "ticker", "split"],
        )
        for job_id, (progress, params) in zip(ids, pipe.execute() if ids else [], strict=True):
            try:
                prog, args = json.loads(progress or b"{}"), json.loads(params or b"{}")
            except ValueError:
                continue
            labels = [job_id.decode(), str(args.get("ticker", ""))]
            if isinstance(prog.get("epoch_seconds"), int | float):
                epoch.add_metric(labels, prog["epoch_seconds"])
            for split, key in (("train", "loss"), ("val", "val_loss")):
                if isinstance(prog.get(key), int | float):
                    loss.add_metric([*labels, split], prog[key])
        yield epoch
        yield loss

    def _counters(self) -> Iterator[Metric]:
        for name, (help_text, labels) in COUNTERS.items():
            values = self.counters.read(name)
            family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=list(labels))
            if labels == ("type",):  # every job type from 0, so a rate exists before the first event
                values = {t: 0 for t in job_types()} | values
            if labels:
                for label, n in sorted(values.items()):
                    parts = label.split(",")
                    if len(parts) == len(labels):
                        family.add_metric(parts, n)
            else:
                family.add_metric([], sum(values.values()))
            yield family
        histogram = HistogramMetricFamily(
            "stockq_job_duration_seconds", "Job run time in the worker", labels=["type"]
        )
        for job_type, (buckets, total) in self.counters.read_histogram(
            "stockq_job_duration_seconds", JOB_DURATION_BUCKETS
        ).items():
            histogram.add_metric([job_type], buckets, sum_value=total)
        yield histogram


def _gauge(name: str, help_text: str, label: str, items: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(items):
        family.add_metric([key], value)
    return family


def task_time_limits() -> dict[str, float]:
    """Job type -> its task's hard time limit, from the Celery task definitions themselves."""
    import workers.evaluation
    import workers.result_tasks
    import workers.tasks  # noqa: F401  (they register their tasks)
    from workers import app

    return {
        name.removeprefix("stockq."): float(task.time_limit)
        for name, task in app.tasks.items()
        if name.startswith("stockq.") and task.time_limit
    }


def serve(redis_url: str, tracking_uri: str, host: str, port: int, retention_s: float = 600.0,
          amqp_url: str | None = None) -> None:  # fmt: skip
    """Serve /metrics on host:port until killed. In between, poll the heartbeats every second (so a
    clean stop is told from a crash between two scrapes) and the registry every 30 s. `amqp_url`: the
    RabbitMQ broker, when the queues live there."""
    from prometheus_client import CollectorRegistry, start_http_server

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=5)
    liveness = WorkerLiveness(client, QUEUES, retention_s)
    models = ModelAges(tracking_uri)
    registry = CollectorRegistry()
    depths = None
    if amqp_url:
        from workers.broker_amqp import queue_depths

        depths = functools.partial(queue_depths, amqp_url, QUEUES)
    registry.register(BackendCollector(client, liveness, models, task_time_limits(), depths))
    start_http_server(port, addr=host, registry=registry)
    log.info("stockq exporter on http://%s:%d/metrics", host, port)
    while True:
        with contextlib.suppress(redis.RedisError):  # the next scrape reports stockq_redis_up 0
            liveness.poll()
        models.refresh()
        time.sleep(1.0)
