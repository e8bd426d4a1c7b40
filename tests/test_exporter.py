"""workers/exporter.py against a real Redis holding what the API and workers write there (job records,
kombu's lists and unacked hash, heartbeats, counters), and a real MLflow registry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import REDIS_BASE, fresh_settings
from tests.procs import wait_until
from tests.redis_commands import commands, private_redis
from workers.clock import server_time
from workers.counters import JOB_DURATION_BUCKETS, Counters
from workers.exporter import COUNTERS, BackendCollector, task_time_limits
from workers.exporter_sources import ModelAges, WorkerLiveness
from workers.jobs import Delivery, JobRegistry, keys
from workers.jobs.model import Start

QUEUES = ("training", "inference", "agent", "ingest")


def scrape(collector: BackendCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def client(tmp_path: Path) -> redis.Redis:
    settings = fresh_settings(tmp_path, 8, 9)
    return redis.Redis.from_url(settings.redis_url)


def job(jobs: JobRegistry, job_type: str, status: str, attempt: int = 1, retention_s: int | None = None,
        **fields: object) -> str:  # fmt: skip
    """A job brought to `status` by the registry's own scripts (so its indexes hold it, as the exporter
    reads them), then `fields` (its times, progress) as a worker would have left them; None deletes one."""
    job_id = jobs.create(job_type, {}, f"stockq.{job_type}", retention_s=retention_s).id
    for n in range(1, attempt):  # the earlier attempts lost their worker
        jobs.start(Delivery(job_id, n), "w0", 30)
        jobs.requeue(Delivery(job_id, n), outcome="worker_lost", lost=True, max_lost=9, stage="requeued")
    if status != "queued":
        assert jobs.start(Delivery(job_id, attempt), "w1", 30) == Start.STARTED
    if status == "succeeded":
        assert jobs.succeed(job_id, {}, attempt=attempt)
    elif status == "failed":
        assert jobs.fail(job_id, "boom", "it failed", attempt=attempt)
    if kept := {k: str(v) for k, v in fields.items() if v is not None}:
        jobs.r.hset(keys.job(job_id), mapping=kept)
    if gone := [k for k, v in fields.items() if v is None]:
        jobs.r.hdel(keys.job(job_id), *gone)
    return job_id


def test_queues_jobs_counters_and_redis_memory(client: redis.Redis) -> None:
    now = server_time(client)
    client.rpush("inference", "m1", "m2", "m3")
    client.rpush("training", "m4")
    # kombu's unacked hash: delivery tag -> [message, exchange, routing key]
    client.hset(
        "unacked", mapping={"t1": json.dumps([{}, "", "training"]), "t2": json.dumps([{}, "", "agent"])}
    )
    client.zadd("stockq:deadletter", {"j-dead": now})
    jobs = JobRegistry(client, 600)
    job(jobs, "predict", "queued", submitted_at=now - 400)
    job(jobs, "ping", "queued", submitted_at=now - 30)
    job(jobs, "train", "queued", submitted_at=now - 50)
    progress = {"epoch": 3, "epochs": 5, "loss": 0.25, "val_loss": 0.5, "epoch_seconds": 1.5}
    r1 = job(jobs, "train", "running", attempt=2, submitted_at=now - 90, started_at=now - 60,
             progress=json.dumps(progress), params=json.dumps({"ticker": "AAPL"}))  # fmt: skip
    # Overdue two ways: its lease expired; no lease and past the task's hard limit (predict: 90 s).
    job(jobs, "ingest", "running", started_at=now - 10, lease_expires_at=now - 5)
    job(jobs, "predict", "running", started_at=now - 200, lease_expires_at=None)
    job(jobs, "predict", "running", started_at=now - 20, lease_expires_at=now + 60)
    job(jobs, "predict", "succeeded", submitted_at=now - 900)
    counters = Counters(client)
    counters.incr("stockq_jobs_submitted_total", "predict", 4)
    counters.incr("stockq_jobs_finished_total", "predict,failed", 2)
    counters.incr("stockq_job_requeues_total", "train", 3)
    counters.incr("redis_cache_hit_total")
    counters.incr("stockq_semantic_cache_hits_total", amount=5)
    counters.observe("stockq_job_duration_seconds", "train", 42.0, JOB_DURATION_BUCKETS)

    found = scrape(BackendCollector(client, WorkerLiveness(client, QUEUES, 600), None, task_time_limits()))

    assert value(found, "stockq_redis_up") == 1
    assert [value(found, "stockq_queue_length", queue=q) for q in QUEUES] == [1, 3, 0, 0]
    assert [value(found, "stockq_queue_unacked", queue=q) for q in QUEUES] == [1, 0, 1, 0]
    assert value(found, "stockq_deadletter_size") == 1
    assert value(found, "stockq_queue_oldest_age_seconds", queue="inference") == pytest.approx(400, abs=5)
    assert value(found, "stockq_queue_oldest_age_seconds", queue="training") == pytest.approx(50, abs=5)
    assert value(found, "stockq_queue_oldest_age_seconds", queue="agent") == 0
    assert value(found, "stockq_jobs", type="predict", status="running") == 2
    assert value(found, "stockq_jobs", type="predict", status="queued") == 1
    assert value(found, "stockq_jobs", type="predict", status="succeeded") == 1
    assert value(found, "stockq_jobs_retried", type="train") == 1
    assert value(found, "stockq_jobs_overdue", type="ingest") == 1
    assert value(found, "stockq_jobs_overdue", type="predict") == 1
    assert value(found, "stockq_jobs_overdue", type="train") == 0
    assert value(found, "stockq_training_epoch_seconds", job_id=r1, ticker="AAPL") == 1.5
    assert value(found, "stockq_training_loss", job_id=r1, ticker="AAPL", split="val") == 0.5
    assert value(found, "stockq_jobs_submitted_total", type="predict") == 4
    assert value(found, "stockq_jobs_finished_total", type="predict", status="failed") == 2
    assert value(found, "stockq_job_requeues_total", type="train") == 3
    assert value(found, "redis_cache_hit_total") == 1
    assert value(found, "redis_cache_miss_total") == 0
    assert value(found, "stockq_semantic_cache_hits_total") == 5
    assert value(found, "stockq_job_duration_seconds_bucket", type="train", le="60") == 1
    assert value(found, "stockq_job_duration_seconds_bucket", type="train", le="30") == 0
    used = value(found, "stockq_redis_memory_used_bytes")
    assert used and 0 < used < (value(found, "stockq_redis_memory_limit_bytes") or 0)


def test_a_scrape_reads_the_same_however_many_finished_jobs_are_stored(tmp_path: Path) -> None:
    """The job figures come from index sizes and the unfinished jobs' records: a scrape over 400 stored
    finished jobs runs exactly the commands it ran over 100 (counted by a redis-server of its own)."""
    with private_redis(tmp_path / "redis") as url:
        client = redis.Redis.from_url(url)
        jobs = JobRegistry(client, 600)
        collector = BackendCollector(client, WorkerLiveness(client, QUEUES, 600), None, task_time_limits())
        job(jobs, "predict", "queued")
        job(jobs, "train", "running", progress=json.dumps({"epoch": 1, "epoch_seconds": 2.0}))
        scrape(collector)  # the first scrape of a process may load scripts: not what is compared
        ran, found = [], {}
        for more in (50, 150):
            for _ in range(more):
                job(jobs, "ping", "succeeded")
                job(jobs, "train", "failed")
            client.config_resetstat()
            found = scrape(collector)
            ran.append(commands(client))
        assert ran[0] == ran[1]
        # the unfinished records only: one look at each, and the running training's progress
        assert ran[1]["hmget"] == 3 and ran[1]["hgetall"] <= len(COUNTERS) + 1, ran[1]
        assert value(found, "stockq_jobs", type="ping", status="succeeded") == 200
        assert value(found, "stockq_jobs", type="train", status="failed") == 200
        assert value(found, "stockq_jobs", type="train", status="running") == 1


def test_the_jobs_gauge_counts_only_records_that_still_exist(client: redis.Redis) -> None:
    """Records expire (a ping's after short_job_retention_s); the gauge follows them, not the index
    entries that a later submission would trim."""
    jobs = JobRegistry(client, 600)
    job(jobs, "ping", "succeeded")
    short = [job(jobs, "ping", "succeeded", retention_s=1) for _ in range(3)]
    wait_until(lambda: not client.exists(*map(keys.job, short)), 5, "the short-lived records to expire")
    found = scrape(BackendCollector(client, WorkerLiveness(client, QUEUES, 600), None, {}))
    assert value(found, "stockq_jobs", type="ping", status="succeeded") == 1


def test_redis_down_reads_zero_and_nothing_else(tmp_path: Path) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    found = scrape(BackendCollector(dead, WorkerLiveness(dead, QUEUES, 600), None, {}))
    assert found == {("stockq_redis_up", ()): 0}


def test_worker_liveness_from_heartbeats(client: redis.Redis) -> None:
    liveness = WorkerLiveness(client, QUEUES, retention_s=120)
    t0 = time.time()
    client.zadd("stockq:workers:ingest", {"ingest@a": t0, "ingest@b": t0})
    client.zadd("stockq:workers:inference", {"cpu@c": t0})
    liveness.poll(t0)
    assert liveness.states(t0) == {
        ("ingest@a", "ingest"): 1,
        ("ingest@b", "ingest"): 1,
        ("cpu@c", "inference"): 1,
    }
    # b stops cleanly (its heartbeat removes its stamp while fresh): gone at once, no alert.
    client.zrem("stockq:workers:ingest", "ingest@b")
    # c crashes: its stamp stays and ages, then a reader (/ready) prunes it; it still reads 0.
    client.zadd("stockq:workers:ingest", {"ingest@a": t0 + 20})
    liveness.poll(t0 + 3)
    liveness.poll(t0 + 20)
    assert liveness.states(t0 + 20) == {("ingest@a", "ingest"): 1, ("cpu@c", "inference"): 0}
    client.zrem("stockq:workers:inference", "cpu@c")
    liveness.poll(t0 + 21)
    assert liveness.states(t0 + 21)[("cpu@c", "inference")] == 0
    # Silent past the retention window: the series goes.
    liveness.poll(t0 + 125)
    assert ("cpu@c", "inference") not in liveness.states(t0 + 125)
    # A worker that comes back under its name reads 1 again.
    client.zadd("stockq:workers:inference", {"cpu@c": t0 + 130})
    liveness.poll(t0 + 130)
    assert liveness.states(t0 + 130)[("cpu@c", "inference")] == 1

    found = scrape(BackendCollector(client, WorkerLiveness(client, QUEUES, 600), None, {}))
    assert value(found, "stockq_worker_up", worker="ingest@a", queue="ingest") is not None
    assert value(found, "stockq_workers", queue="agent") == 0


@pytest.mark.slow
def test_model_age_of_each_champion(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowClient(uri)
    registry.create_registered_model("lstm_AAPL")
    registry.create_model_version("lstm_AAPL", source=str(tmp_path))
    second = registry.create_model_version("lstm_AAPL", source=str(tmp_path))
    registry.set_registered_model_alias("lstm_AAPL", "champion", second.version)
    registry.create_registered_model("lstm_MSFT")  # no champion yet: no figure
    models = ModelAges(uri)
    models.refresh()
    ages = models.ages()
    assert set(ages) == {"lstm_AAPL"}
    assert 0 <= ages["lstm_AAPL"] < 120
    client = redis.Redis.from_url(f"{REDIS_BASE}/8")
    found = scrape(BackendCollector(client, WorkerLiveness(client, QUEUES, 600), models, {}))
    assert value(found, "stockq_model_age_seconds", model="lstm_AAPL") == pytest.approx(
        ages["lstm_AAPL"], abs=5
    )


def test_alerts_and_dashboards_use_only_exposed_metrics(client: redis.Redis, tmp_path: Path) -> None:
    """Every stockq metric a rule or panel uses is exposed: HTTP ones by the API, the rest by the exporter."""
    from tests.test_compose import API_METRICS, EXPORTER_METRICS, _all_exprs, known
    from webapp.app import create_app

    collector = BackendCollector(client, WorkerLiveness(client, QUEUES, 600), ModelAges("unused"), {})
    exporter = {f.name + "_total" if f.type == "counter" else f.name for f in collector.collect()}
    assert exporter == EXPORTER_METRICS
    settings = fresh_settings(tmp_path, 8, 9)
    api = create_app(settings).test_client()
    api.get("/health")
    text = api.get("/metrics").get_data(as_text=True)
    exposed = {
        f.name + "_total" if f.type == "counter" else f.name for f in text_string_to_metric_families(text)
    }
    # Multiprocess mode (gunicorn's, and any process that imported Feast) lists a counter only once it
    # counted something: the exceptions counter appears with the first exception.
    assert exposed >= API_METRICS - {"stockq_http_request_exceptions_total"}
    assert not exposed & EXPORTER_METRICS, "the API must not export backend-wide figures (one per replica)"
    referenced = {m for expr in _all_exprs() for m in known(expr)}
    assert referenced & (API_METRICS | EXPORTER_METRICS) == (API_METRICS | EXPORTER_METRICS) - {
        "stockq_http_request_exceptions_total"
    }
