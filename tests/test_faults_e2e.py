"""Faults injected for real against real Celery workers, Redis and MLflow: a killed pool process, a killed
worker, SIGTERM, a poison job. Every job ends once, resumed from its checkpoint where it trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from ml.registry.mlflow_registry import JOB_TAG, ModelRegistry
from ml.tickers import child_name
from tests.conftest import fresh_settings
from tests.fault_tasks import POISON_FLAG, slow_task
from tests.procs import Proc, start_all, start_worker, wait_until
from tests.test_backbone_e2e import submit, wait_job
from webapp import create_app
from workers.jobs import JobRegistry, JobStatus
from workers.jobs.keys import DEAD_LETTER

pytestmark = pytest.mark.slow

LEASE_S = 5
WORKER_ENV = {
    "STOCKQ_LEASE_S": str(LEASE_S),
    # A child on its whole history: KO and PEP improve on every one of 6 selection epochs (then refit 6),
    # a fraction of a second to a second each, so a training is still running when it is killed after
    # its first or second. (AAPL on 2500 days, or MSFT, stop early after 2: nothing left to kill.)
    "STOCKQ_DEFAULT_EPOCHS": "6",
    "STOCKQ_LOG_FORMAT": "json",
}


class Workers:
    """Named worker processes that a test can kill and start again."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.procs: dict[str, tuple[Proc, str]] = {}

    def start(self, name: str, queue: str) -> Proc:
        proc = start_worker(self.settings, queue, name, app="tests.fault_tasks", **WORKER_ENV)
        self.procs[name] = (proc, queue)
        return proc

    def start_all(self, named: list[tuple[str, str]]) -> None:
        start_all(*(partial(self.start, name, queue) for name, queue in named))

    def name_of(self, hostname: str) -> str:
        return hostname.split("@")[0]

    def kill(self, name: str) -> None:
        self.procs[name][0].kill()

    def stop_all(self) -> None:
        for proc, _ in self.procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = fresh_settings(tmp_path_factory.mktemp("faults"), 4, 5, lease_s=LEASE_S)
    workers = Workers(settings)
    try:
        workers.start_all([("train1", "training"), ("train2", "training"), ("inf1", "inference"),
                           ("inf2", "inference"), ("agent1", "agent"), ("agent2", "agent")])  # fmt: skip
        client = create_app(settings).test_client()
        r = redis.Redis.from_url(settings.redis_url)
        yield {"settings": settings, "client": client, "workers": workers, "redis": r,
               "jobs": JobRegistry(r, 3600),
               "registry": ModelRegistry(settings.tracking_uri, settings.artifact_root)}  # fmt: skip
    finally:
        workers.stop_all()


def send(env: dict, job_id: str, task: str, queue: str, **kwargs: Any) -> None:
    """Publish a test-only task on the stack's broker (the API's Celery app knows no route for it), and
    clear its outbox entry as workers/dispatch.py does once the broker took it."""
    celery = env["client"].application.extensions["stockq"].submitter.celery
    celery.send_task(task, args=[job_id], kwargs={**kwargs, "attempt": 1}, queue=queue, task_id=job_id)
    env["jobs"].published(job_id, 1)


def json_line(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def pool_pid(main_pid: int) -> int:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main_pid)], capture_output=True, text=True).stdout
    return int(out.split()[0])


def running_at_epoch(client: FlaskClient, job_id: str, epoch: int) -> dict:
    def check() -> dict | None:
        job = client.get(f"/status/{job_id}").get_json()
        assert job["status"] in {"queued", "running"}, job
        return job if (job.get("progress") or {}).get("epoch", 0) >= epoch else None

    return wait_until(check, 240, f"job {job_id} at epoch {epoch}", every=0.05)


def runs_of(registry: ModelRegistry, job_id: str, model: str) -> list:
    tags = f"tags.`{JOB_TAG}` = '{job_id}' and tags.`stockq.model` = '{model}'"
    return registry.client.search_runs([registry.experiment_id()], filter_string=tags)


def assert_trained_once(env: dict, job: dict, ticker: str) -> None:
    assert job["status"] == "succeeded", job
    runs = runs_of(env["registry"], job["id"], child_name(ticker))
    assert len(runs) == 1 and runs[0].info.run_id == job["result"]["run_id"]
    versions = env["registry"].client.search_model_versions(f"run_id = '{runs[0].info.run_id}'")
    assert [str(v.version) for v in versions] == [job["result"]["version"]]
    steps = [m.step for m in env["registry"].client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, len(steps) + 1)), steps  # no completed epoch ran twice
    assert job["executions"] == 1


def test_killed_pool_process_mid_epoch_resumes_from_its_checkpoint(env: dict) -> None:
    client = env["client"]
    job_id = submit(client, "/train", {"ticker": "KO", "strategy": "scratch"})
    job = running_at_epoch(client, job_id, 2)
    name = env["workers"].name_of(job["worker"])
    os.kill(pool_pid(env["workers"].procs[name][0].p.pid), signal.SIGKILL)
    done = wait_job(client, job_id, 300)
    assert_trained_once(env, done, "KO")
    assert done["attempt"] == 2 and done["attempts"][0]["outcome"] == "worker_lost"
    assert done["resumed_from_epoch"] >= 2 and done["result"]["resumed_from_epoch"] >= 2
    # every line the job logged carries it (JSON lines; the banner and tracebacks are not JSON)
    proc = env["workers"].procs[env["workers"].name_of(done["worker"])][0]
    tagged = [r for r in map(json_line, proc.log.read_text().splitlines()) if r and r.get("job_id") == job_id]
    assert {(r["attempt"], r["tenant"], r["ticker"], r["task"]) for r in tagged} >= {
        (2, "anonymous", "KO", "stockq.train")
    }


def test_sigterm_preempts_at_the_epoch_boundary_and_another_worker_resumes(env: dict) -> None:
    client = env["client"]
    job_id = submit(client, "/train", {"ticker": "PEP", "strategy": "scratch"})
    job = running_at_epoch(client, job_id, 1)
    name = env["workers"].name_of(job["worker"])
    proc = env["workers"].procs[name][0]
    os.kill(proc.p.pid, signal.SIGTERM)  # the main process only, as Kubernetes and compose do
    proc.p.wait(120)  # the worker exits once the job has checkpointed and requeued itself
    done = wait_job(client, job_id, 300)
    assert_trained_once(env, done, "PEP")
    assert [a["outcome"] for a in done["attempts"]] == ["preempted", "succeeded"]
    assert done["attempts"][1]["worker"] != done["attempts"][0]["worker"]
    assert done["resumed_from_epoch"] >= 1 and done["lost"] == 0
    env["workers"].start(name, "training")


@pytest.mark.parametrize("queue", ["training", "inference", "agent"])
def test_a_whole_dead_worker_s_job_runs_again_on_another_worker_within_60s(env: dict, queue: str) -> None:
    jobs: JobRegistry = env["jobs"]
    job = jobs.create("ping", {"seconds": 8}, slow_task(queue))
    send(env, job.id, slow_task(queue), queue, seconds=8)
    first = wait_until(lambda: (j := jobs.get(job.id)).status == JobStatus.RUNNING and j, 60, "job to run")
    name = env["workers"].name_of(first.worker)
    env["workers"].kill(name)  # main process and pool: nothing of that worker is left to report
    killed_at = time.monotonic()
    again = wait_until(
        lambda: (j := jobs.get(job.id)).status == JobStatus.RUNNING and j.attempt == 2 and j, 60,
        "job to run again on another worker",
    )  # fmt: skip
    assert time.monotonic() - killed_at < 60
    assert env["workers"].name_of(again.worker) != name
    done = wait_until(lambda: (j := jobs.get(job.id)).finished and j, 60, "end")
    assert done.status == JobStatus.SUCCEEDED and done.result["attempt"] == 2 and done.executions == 1
    assert [a["outcome"] for a in done.attempts] == ["worker_lost", "succeeded"]
    env["workers"].start(name, queue)


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered_then_retried(env: dict) -> None:
    client, jobs, r = env["client"], env["jobs"], env["redis"]
    r.set(POISON_FLAG, 1)
    job = jobs.create("ping", {}, "stockq.test.poison", task_kwargs={})
    send(env, job.id, "stockq.test.poison", "inference")
    failed = wait_until(lambda: (j := jobs.get(job.id)).status == JobStatus.FAILED and j, 300, "dead letter")
    assert failed.error["code"] == "worker_lost" and failed.lost == 3
    assert [a["outcome"] for a in failed.attempts] == ["worker_lost"] * 3
    listed = client.get("/jobs?status=failed").get_json()["jobs"]
    assert job.id in [j["id"] for j in listed]
    assert r.zscore(DEAD_LETTER, job.id) is not None
    r.delete(POISON_FLAG)
    assert client.post(f"/jobs/{job.id}/retry").status_code == 202
    done = wait_job(client, job.id, 60)
    assert done["status"] == "succeeded" and done["result"] == {"survived": True} and done["attempt"] == 4
