"""Budgets that a job cannot bypass: a retry is charged as its job's type and waits for an in-flight slot; an
auto-training started by a prediction is charged to the submitter's training budget (the windows POST /train
counts in) and keeps the prediction's in-flight slot. Real Redis; the auto-training tests run a real
inference worker and no training worker, so a training that was started shows as a job left queued at
`training_queued`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.conftest import fresh_settings
from tests.procs import Proc, start_worker, wait_until
from webapp import create_app
from workers.jobs import FINISHED, JobRegistry, keys

# Per day: a window that does not reset during a test (a minute's might, between two requests).
TRAIN_BUDGET = "2/day"
TENANTS = ("retrier", "capped", "spent", "within")


def key(tenant: str) -> str:
    return f"{tenant}-key-0123456789"


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key(tenant)}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = fresh_settings(tmp_path_factory.mktemp("budgets"), 12, 13, rate_limit_train=TRAIN_BUDGET,
                              api_keys=",".join(f"{t}:{key(t)}" for t in TENANTS))  # fmt: skip
    # the same Redis, with a cap of one queued or running job per tenant and no training budget
    capped = settings.model_copy(update={"max_inflight": 1, "rate_limit_train": ""})
    r = redis.Redis.from_url(settings.redis_url)
    return {
        "settings": settings,
        "client": create_app(settings).test_client(),
        "capped": create_app(capped).test_client(),
        "redis": r,
        "jobs": JobRegistry(r, 60),
    }


@pytest.fixture(scope="module")
def inference_worker(stack: dict[str, Any]) -> Iterator[Proc]:
    """Predictions run; trainings do not (no worker takes the training queue)."""
    worker = start_worker(stack["settings"], "inference", "inference", STOCKQ_RATE_LIMIT_TRAIN=TRAIN_BUDGET)
    yield worker
    worker.stop()


def submit(client: FlaskClient, tenant: str, path: str, body: dict[str, Any]) -> str:
    r = client.post(path, json=body, headers=auth(tenant))
    assert r.status_code == 202, r.get_json()
    return r.get_json()["job_id"]


def cancel(client: FlaskClient, tenant: str, job_id: str) -> None:
    r = client.delete(f"/jobs/{job_id}", headers=auth(tenant))
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled", r.get_json()


def refused(response: Any, code: str) -> None:
    assert response.status_code == 429, response.get_json()
    assert response.get_json()["error"]["code"] == code
    assert int(response.headers["Retry-After"]) >= 1


def test_a_retry_of_a_training_is_charged_as_a_training(stack: dict[str, Any]) -> None:
    client, jobs = stack["client"], stack["jobs"]
    job_id = submit(client, "retrier", "/train", {"ticker": "AAPL"})  # 1 of the 2 trainings
    cancel(client, "retrier", job_id)  # no training worker: it was still queued
    retried = client.post(f"/jobs/{job_id}/retry", headers=auth("retrier"))  # 2 of 2
    assert retried.status_code == 202, retried.get_json()
    cancel(client, "retrier", job_id)
    # the retry spent the second training: a new one is refused
    refused(client.post("/train", json={"ticker": "MSFT"}, headers=auth("retrier")), "rate_limited")
    refused(client.post(f"/jobs/{job_id}/retry", headers=auth("retrier")), "rate_limited")
    job = jobs.get(job_id)
    assert job is not None and job.status == "cancelled" and job.attempt == 2
    # predictions have their own budget, and so has the retry of a job of another class
    assert client.post("/jobs/ping", headers=auth("retrier")).status_code == 202
    question = submit(client, "retrier", "/agent/chat", {"ticker": "AAPL"})  # no agent worker: stays queued
    cancel(client, "retrier", question)
    assert client.post(f"/jobs/{question}/retry", headers=auth("retrier")).status_code == 202


def test_a_retry_at_the_inflight_cap_is_refused_and_not_queued(stack: dict[str, Any]) -> None:
    client, r, jobs = stack["capped"], stack["redis"], stack["jobs"]
    job_id = submit(client, "capped", "/train", {"ticker": "AAPL"})
    cancel(client, "capped", job_id)
    holder = submit(client, "capped", "/train", {"ticker": "MSFT"})  # the one slot, queued
    refused(client.post(f"/jobs/{job_id}/retry", headers=auth("capped")), "too_many_inflight")
    job = jobs.get(job_id)
    assert job is not None and job.status == "cancelled" and job.attempt == 1
    assert r.smembers(keys.inflight("capped")) == {holder.encode()}
    assert r.zscore(keys.OUTBOX, f"{job_id}|2") is None and r.zscore(keys.QUEUED, job_id) is None
    cancel(client, "capped", holder)  # the slot frees: now it retries
    assert client.post(f"/jobs/{job_id}/retry", headers=auth("capped")).status_code == 202
    assert r.smembers(keys.inflight("capped")) == {job_id.encode()}


def wait_settled(client: FlaskClient, tenant: str, job_id: str) -> dict[str, Any]:
    """The job once it finished, or once it was handed to a training (which no worker here runs)."""

    def settled() -> dict[str, Any] | None:
        job = client.get(f"/status/{job_id}", headers=auth(tenant)).get_json()
        return job if job["status"] in FINISHED or job["stage"] == "training_queued" else None

    return wait_until(settled, 120, f"job {job_id} to finish or hand off", every=0.2)


@pytest.mark.slow
@pytest.mark.usefixtures("inference_worker")
def test_an_auto_training_past_the_training_budget_fails_and_never_trains(stack: dict[str, Any]) -> None:
    client, r, jobs = stack["client"], stack["redis"], stack["jobs"]
    for ticker in ("AAPL", "MSFT"):  # the training budget, spent (queued: no training worker)
        submit(client, "spent", "/train", {"ticker": ticker})
    job_id = submit(client, "spent", "/predict-child", {"ticker": "KO", "model": "auto"})  # no KO model
    job = wait_settled(client, "spent", job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "training_budget_exceeded", job
    assert "POST /train" in job["error"]["message"] and "2 per 1 day" in job["error"]["message"]
    stored = jobs.get(job_id)
    # never handed on: one attempt, of the prediction task, and it failed
    assert stored is not None and stored.task == "stockq.predict" and stored.attempt == 1
    assert [a["outcome"] for a in stored.attempts] == ["failed"]
    assert r.get("stockq:lock:train:KO") is None  # the next request within budget may train it
    assert not r.sismember(keys.inflight("spent"), job_id)


@pytest.mark.slow
@pytest.mark.usefixtures("inference_worker")
def test_an_auto_training_within_budget_is_charged_and_keeps_its_inflight_slot(stack: dict[str, Any]) -> None:
    client, r, jobs = stack["client"], stack["redis"], stack["jobs"]
    job_id = submit(client, "within", "/predict-child", {"ticker": "PEP", "model": "auto"})  # no PEP model
    job = wait_settled(client, "within", job_id)
    assert job["status"] == "queued" and job["stage"] == "training_queued", job
    stored = jobs.get(job_id)
    assert stored is not None and stored.task == "stockq.auto_train" and stored.attempt == 2
    assert [(a["outcome"], a.get("task")) for a in stored.attempts] == [("handed_off", "stockq.auto_train")]
    # the same job goes on as the training: it still holds its in-flight slot
    assert r.sismember(keys.inflight("within"), job_id)
    # it was the first of the 2 trainings: one more is accepted, the next refused
    submit(client, "within", "/train", {"ticker": "AAPL"})
    refused(client.post("/train", json={"ticker": "MSFT"}, headers=auth("within")), "rate_limited")
    assert stored.task_kwargs["client"] == "tenant:within"  # a take-over charges the same client
