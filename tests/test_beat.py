"""Scheduling (workers/scheduled.py) and the one-shot training worker of the KEDA ScaledJob
(workers/oneshot.py): schedules parsed from the settings, the retrain decision, and for real, two beats
against one Redis sending each run once, and a one-shot worker taking one message and exiting."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.schedules import crontab, schedule

from stockq.cli.stack import beat_argv
from stockq.settings import Settings
from tests.conftest import make_settings
from tests.procs import Proc, free_port, settings_env, start_redis, start_worker, wait_until
from workers.celery_app import create_celery
from workers.dispatch import publish
from workers.jobs import JobRegistry, JobStatus
from workers.jobs.keys import SCHEDULER_OWNER, owner_index
from workers.jobs.model import CancelOutcome
from workers.runtime import Runtime
from workers.scheduled import (
    EVALUATE_PARAMS,
    OWNER,
    beat_config,
    ingest_batches,
    parse_schedule,
    schedule_evaluation,
    schedule_ingests,
    schedule_retrains,
    stale_children,
)

BEAT_WINDOW_S = 10


def test_schedules_come_from_the_settings() -> None:
    every = parse_schedule("2")
    assert isinstance(every, schedule) and every.run_every == timedelta(seconds=2)
    nightly = parse_schedule("30 22 * * 1-5")
    assert isinstance(nightly, crontab)
    assert nightly.minute == {30} and nightly.hour == {22} and nightly.day_of_week == {1, 2, 3, 4, 5}
    assert parse_schedule("  ") is None
    with pytest.raises(ValueError, match="5-field crontab"):
        parse_schedule("30 22 * *")

    conf = beat_config(Settings(schedule_ingest="600", schedule_retrain="", schedule_evaluate=""))
    assert set(conf["beat_schedule"]) == {"daily-ingest"}
    entry = conf["beat_schedule"]["daily-ingest"]
    assert entry["task"] == "stockq.plan_ingest" and entry["options"]["queue"] == "inference"
    # The lock outlives several loop intervals (a standby beat waits for it) and lives on the broker's
    # Redis (redbeat falls back to broker_url, which Celery censors when it prints its config).
    assert conf["redbeat_lock_timeout"] == 5 * conf["beat_max_loop_interval"]
    assert "redbeat_redis_url" not in conf
    defaults = beat_config(Settings())["beat_schedule"]
    assert {n: str(e["schedule"]) for n, e in defaults.items()} == {
        "daily-ingest": str(crontab("30", "22", "1-5")),
        "nightly-retrain": str(crontab("0", "2")),
        "nightly-evaluate": str(crontab("0", "3")),  # after the retrains
    }
    evaluate = beat_config(Settings(schedule_evaluate="30 4 * * 6"))["beat_schedule"]["nightly-evaluate"]
    assert evaluate["task"] == "stockq.plan_evaluate" and evaluate["options"]["queue"] == "inference"
    assert evaluate["schedule"] == crontab("30", "4", "6")


def test_retrain_only_children_whose_data_moved() -> None:
    trained = {"AAPL": "2026-11-27", "MSFT": "2026-11-30", "NVDA": None, "TSLA": "2026-11-27"}
    stored = {"AAPL": date(2026, 11, 30), "MSFT": date(2026, 11, 30), "NVDA": date(2026, 11, 30)}
    # AAPL has newer data, MSFT none, NVDA's champion says nothing (retrain), TSLA has no stored data.
    assert stale_children(trained, stored) == ["AAPL", "NVDA"]
    assert stale_children({}, stored) == []


def test_ingest_batches_start_with_the_index() -> None:
    assert ingest_batches(["MSFT", "AAPL", "^GSPC"]) == [["^GSPC", "AAPL", "MSFT"]]
    batches = ingest_batches([f"T{i:02d}" for i in range(30)], size=25)
    assert [len(b) for b in batches] == [25, 6] and batches[0][0] == "^GSPC"


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    yield port
    proc.stop()


def _beat(settings: Settings, log: Path, **env: str) -> Proc:
    """A beat as `stockq up --beat` starts it."""
    return Proc(beat_argv(), settings_env(settings, **env), log)


def _sends(proc: Proc) -> int:
    return len(re.findall(r"Sending due task daily-ingest", proc.log.read_text(errors="replace")))


@pytest.mark.slow
def test_two_beats_schedule_each_run_once(tmp_path: Path, private_redis: int) -> None:
    settings = make_settings(tmp_path / "var", 0, 1, redis_url=f"redis://127.0.0.1:{private_redis}/0")
    schedules = {"STOCKQ_SCHEDULE_INGEST": "2", "STOCKQ_SCHEDULE_RETRAIN": "", "STOCKQ_SCHEDULE_EVALUATE": ""}
    client = redis.Redis.from_url(settings.redis_url)
    worker = start_worker(settings, "inference", "planner", **schedules)
    beats = [_beat(settings, settings.var_path / f"beat-{i}.log", **schedules) for i in range(2)]
    try:
        first = wait_until(lambda: [b for b in beats if _sends(b)], 60, "a beat sending")
        time.sleep(BEAT_WINDOW_S)  # both beats alive for a window of about five runs
        for beat in beats:
            assert beat.p.poll() is None, beat.tail()
    finally:
        for beat in beats:
            beat.stop(signal.SIGTERM)
    sends = [_sends(b) for b in beats]
    # One beat held the lock and sent every run; the other waited for the lock and sent nothing.
    assert sorted(sends)[0] == 0 and sorted(sends)[1] >= 3, sends
    assert len(first) == 1
    try:
        # Each run: one planning task, one job record owned by the scheduler, one message on `ingest`.
        wait_until(lambda: client.zcard(owner_index(OWNER)) >= sum(sends), 60, "the scheduled jobs")
        jobs = JobRegistry(client, settings.job_retention_s)
        records = [jobs.get(j.decode()) for j in client.zrange(owner_index(OWNER), 0, -1)]
        assert len(records) == sum(sends)
        for record in records:
            assert record is not None
            assert (record.type, record.owner, record.status) == ("ingest", OWNER, JobStatus.QUEUED)
            assert record.params == {"tickers": ["^GSPC"]} and record.attempt == 1
        messages = [json.loads(raw) for raw in client.lrange("ingest", 0, -1)]
        assert sorted(m["headers"]["id"] for m in messages) == sorted(r.id for r in records)
        assert {m["headers"]["task"] for m in messages} == {"stockq.ingest"}
    finally:
        worker.stop()


def test_one_scheduled_evaluation_at_a_time(tmp_path: Path, private_redis: int) -> None:
    """The planner submits an evaluation of every ingested ticker, and none while it is still pending."""
    settings = make_settings(tmp_path / "var", 0, 1, redis_url=f"redis://127.0.0.1:{private_redis}/0")
    rt, celery = Runtime(settings), create_celery(settings)
    (first,) = schedule_evaluation(rt, celery)
    assert schedule_evaluation(rt, celery) == []  # still queued
    record = rt.jobs.get(first)
    assert record is not None
    # the scheduler's jobs are owned by an internal name no tenant can have
    assert (record.type, record.owner, record.params) == ("evaluate", SCHEDULER_OWNER, EVALUATE_PARAMS)
    (message,) = [json.loads(m) for m in rt.redis.lrange("training", 0, -1)]
    assert (message["headers"]["id"], message["headers"]["task"]) == (first, "stockq.evaluate")
    assert rt.jobs.cancel(first) == CancelOutcome.CANCELLED  # finished: the next night evaluates again
    (second,) = schedule_evaluation(rt, celery)
    assert second != first


@pytest.mark.slow
def test_oneshot_worker_runs_one_task_and_exits(tmp_path: Path, private_redis: int) -> None:
    settings = make_settings(tmp_path / "var", 0, 1, redis_url=f"redis://127.0.0.1:{private_redis}/0")
    client = redis.Redis.from_url(settings.redis_url)
    jobs = JobRegistry(client, settings.job_retention_s)
    worker = start_worker(settings, "inference", "oneshot", app="workers.oneshot")
    try:
        publisher = create_celery(settings)  # publishes to the test's own Redis
        ids = []
        for _ in range(2):
            job = jobs.create("ping", {}, "stockq.ping", owner="t")
            publish(publisher, jobs, job.id, "stockq.ping", 1)
            ids.append(job.id)
        assert worker.p.wait(120) == 0, worker.tail()
    finally:
        worker.stop()
    statuses = sorted(jobs.get(i).status for i in ids)  # type: ignore[union-attr]
    assert statuses == [JobStatus.QUEUED, JobStatus.SUCCEEDED]
    # The message it did not take is still waiting for the next pod, not held unacked by a dead one.
    assert client.llen("inference") == 1 and client.hlen("unacked") == 0


def _register_child(client: Any, source: Path, ticker: str, trained_until: str) -> None:
    """A champion version carrying the tags ml.registry.registration writes (no weights: only tags are
    read)."""
    name = f"stockq-child-{ticker}"
    client.create_registered_model(name)
    tags = {"kind": "child", "ticker": ticker, "trained_until": trained_until}
    version = client.create_model_version(name, source=str(source), tags=tags)
    client.set_registered_model_alias(name, "champion", version.version)


@pytest.mark.slow
def test_planners_submit_scheduler_jobs(
    tmp_path: Path, private_redis: int, feature_env: tuple[Settings, Any]
) -> None:
    """Against a real MLflow registry and the ingested feature store: AAPL's champion is older than its
    stored data, MSFT's is current, so only AAPL is retrained, and once while that job is pending."""
    from mlflow import MlflowClient

    from ml.registry.mlflow_store import ensure_tracking_store

    base, store = feature_env
    settings = base.model_copy(update={
        "redis_url": f"redis://127.0.0.1:{private_redis}/0", "cache_redis_url": base.redis_url,
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    })  # fmt: skip
    ensure_tracking_store(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    latest = store.stored_daily("MSFT")["event_timestamp"].max().date().isoformat()
    (tmp_path / "model").mkdir()
    _register_child(client, tmp_path / "model", "AAPL", "2000-01-03")
    _register_child(client, tmp_path / "model", "MSFT", latest)
    client.create_registered_model("stockq-parent")  # no child: never retrained by the scheduler

    rt, celery = Runtime(settings), create_celery(settings)
    (retrain,) = schedule_retrains(rt, celery)
    assert schedule_retrains(rt, celery) == []  # AAPL's retrain is still queued
    (ingest,) = schedule_ingests(rt, celery)
    records = {job_id: rt.jobs.get(job_id) for job_id in (retrain, ingest)}
    assert records[retrain].params == {"ticker": "AAPL", "strategy": "fine_tune", "epochs": None}
    assert records[ingest].params == {"tickers": ["^GSPC", "AAPL", "MSFT"]}
    for record in records.values():
        assert record.owner == OWNER and record.status == JobStatus.QUEUED and record.attempt == 1
    broker = redis.Redis.from_url(settings.redis_url)
    queued = {
        q: [json.loads(m)["headers"]["id"] for m in broker.lrange(q, 0, -1)] for q in ("training", "ingest")
    }
    assert queued == {"training": [retrain], "ingest": [ingest]}
