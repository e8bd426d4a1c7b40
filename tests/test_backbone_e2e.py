"""End to end with real Celery worker processes, real Redis, Feast, MLflow and (once) gunicorn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient

from ml.registry.mlflow_registry import ModelRegistry
from ml.tickers import PARENT_NAME, child_name
from tests.conftest import fresh_settings
from tests.procs import FAST_TRAINING, Proc, free_port, start_all, start_gunicorn, start_worker, wait_until
from webapp import create_app
from workers.counters import JOB_DURATION_BUCKETS, Counters

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = fresh_settings(tmp_path_factory.mktemp("backbone"), 10, 11, train_history_days=700)
    workers: list[Proc] = []
    try:
        workers += start_all(
            partial(start_worker, settings, "training", "training", **FAST_TRAINING),
            partial(start_worker, settings, "inference,ingest,agent", "cpu", concurrency=2, **FAST_TRAINING),
        )
        yield {"settings": settings, "client": create_app(settings).test_client(), "workers": workers}
    finally:
        for w in workers:
            w.stop()


def wait_job(client: FlaskClient, job_id: str, timeout_s: float = 240, until: set[str] | None = None) -> dict:
    until = until or {"succeeded", "failed", "cancelled"}

    def done() -> dict | None:
        job = client.get(f"/status/{job_id}").get_json()
        return job if job["status"] in until else None

    return wait_until(done, timeout_s, f"job {job_id} to reach {until}", every=0.1)


def submit(client: FlaskClient, path: str, body: dict) -> str:
    r = client.post(path, json=body)
    assert r.status_code == 202, r.get_json()
    return r.get_json()["job_id"]


def test_ready_with_workers_on_every_queue(stack: dict) -> None:
    r = stack["client"].get("/ready")
    assert r.status_code == 200, r.get_json()
    assert all(n >= 1 for n in r.get_json()["workers"].values())


def test_train_parent_and_child_with_progress_then_predict(stack: dict) -> None:
    client: FlaskClient = stack["client"]
    job_id = submit(client, "/train", {"ticker": "^GSPC", "epochs": 3})
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["name"] == PARENT_NAME and 0 <= result["best_epoch"] <= 3
    # Selection chose the best of up to 3 epochs (0: the starting weights, zero+EWMA, beat them all); the
    # refit then ran that many on every sample (none: its bar is full at once), the record's last phase.
    assert result["epochs_run"] == result["best_epoch"] and job["started_at"] >= job["submitted_at"]
    progress = job["progress"]
    assert progress["phase"] == "refit" and (progress["phase_index"], progress["phases"]) == (3, 3), progress
    assert progress["step"] == progress["steps"] == max(result["best_epoch"], 1), progress
    refit = [row["epoch"] for row in progress["losses"] if row["phase"] == "refit"]
    assert refit == list(range(1, result["best_epoch"] + 1)), progress
    # Every selection epoch reported its progress (kept in `losses`; a poll may miss them all: a 0-epoch
    # refit's final progress has no epoch)
    select = [row["epoch"] for row in progress["losses"] if row["phase"] == "select"]
    history = [row["epoch"] for row in result["history"] if row["phase"] == "select"]
    assert select == history == list(range(1, len(select) + 1)) and select, progress

    job = wait_job(client, submit(client, "/train", {"ticker": "AAPL", "strategy": "freeze", "epochs": 2}))
    assert job["status"] == "succeeded", job
    assert job["result"]["name"] == child_name("AAPL") and job["result"]["strategy"] == "freeze"

    job = wait_job(client, submit(client, "/predict-child", {"ticker": "AAPL"}))
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["model"]["name"] == child_name("AAPL")
    assert result["as_of"] == "2022-12-28"
    assert len(result["forecast"]) == 7 and result["forecast"][0]["date"] == "2022-12-29"
    for day in result["forecast"]:
        assert day["p10"] <= day["p50"] <= day["p90"]
        assert 0.5 * result["last_close"] < day["p50"] < 1.5 * result["last_close"]


def test_cancel_running_training_stops_at_next_epoch_and_queued_job_never_runs(stack: dict) -> None:
    client: FlaskClient = stack["client"]
    settings = stack["settings"]
    registry = ModelRegistry(settings.tracking_uri, settings.artifact_root)
    versions_before = len(registry.client.search_model_versions(f"name='{child_name('MSFT')}'"))
    running = submit(client, "/train", {"ticker": "MSFT", "strategy": "scratch", "epochs": 400})
    queued = submit(client, "/train", {"ticker": "MSFT", "strategy": "freeze", "epochs": 2})
    wait_until(
        lambda: (client.get(f"/status/{running}").get_json().get("progress") or {}).get("epoch"),
        180,
        "the long training to report an epoch",
    )
    assert client.get(f"/status/{queued}").get_json()["status"] == "queued"
    assert client.delete(f"/jobs/{queued}").status_code == 200
    r = client.delete(f"/jobs/{running}")
    assert r.status_code == 202
    job = wait_job(client, running, 120)
    assert job["status"] == "cancelled"
    assert job["progress"]["epoch"] < 400
    time.sleep(2)  # the worker now takes the cancelled message off the queue
    queued_job = client.get(f"/status/{queued}").get_json()
    assert queued_job["status"] == "cancelled" and queued_job["started_at"] is None
    assert len(registry.client.search_model_versions(f"name='{child_name('MSFT')}'")) == versions_before
    assert client.delete(f"/jobs/{running}").status_code == 409


def test_failed_job_carries_a_clear_error(stack: dict) -> None:
    client: FlaskClient = stack["client"]
    job = wait_job(client, submit(client, "/predict-child", {"ticker": "RRC", "model": "child"}))
    assert job["status"] == "failed"
    assert job["error"]["code"] in {"model_not_found", "unknown_ticker", "features_missing"}
    assert "RRC" in job["error"]["message"]


def test_through_gunicorn_submit_poll_and_fast_path(stack: dict) -> None:
    settings = stack["settings"]
    port = free_port()
    api = start_gunicorn(settings, port)
    base = f"http://127.0.0.1:{port}"
    try:
        r = requests.post(f"{base}/predict-child", json={"ticker": "^GSPC"}, timeout=10)
        assert r.status_code == 202 and r.headers["Location"].startswith("/status/")
        job = wait_until(
            lambda: (
                (j := requests.get(base + r.headers["Location"], timeout=5).json())["status"] == "succeeded"
                and j
            ),
            120,
            "gunicorn job",
        )
        assert job["result"]["model"]["name"] == PARENT_NAME
        fast = requests.post(f"{base}/predict-child?wait=10", json={"ticker": "^GSPC"}, timeout=20)
        assert fast.status_code == 200
        assert fast.json()["status"] == "succeeded"
        assert fast.json()["result"]["forecast"] == job["result"]["forecast"]
        ping = requests.post(f"{base}/jobs/ping?wait=5", timeout=10)
        assert ping.status_code == 200 and ping.json()["result"] == {"pong": True}
        # Job figures are counted once in Redis by the workers (`stockq exporter` serves them).
        counters = Counters(redis.Redis.from_url(settings.redis_url))
        assert counters.read("stockq_jobs_finished_total").get("predict,succeeded", 0) >= 1
        assert counters.read_histogram("stockq_job_duration_seconds", JOB_DURATION_BUCKETS)["predict"][1] > 0
    finally:
        api.stop()
