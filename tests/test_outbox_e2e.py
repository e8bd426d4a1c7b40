"""Issue 19, hole 2, proven with real faults on both brokers (Redis, and RabbitMQ on a private vhost): a
private registry redis-server stopped while a live Celery worker is handed messages, and publishes that
fail (a broker URL to a closed port) after a retry and after a reaper's requeue. Every job still ends in a
final state once Redis or the broker answers again: a start Redis refused is never acknowledged (the
message comes back), and a message whose publish failed is published again from the outbox."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from stockq.settings import Settings
from tests import rabbit
from tests.conftest import make_settings
from tests.fault_tasks import slow_task
from tests.procs import Proc, free_port, start_redis, start_worker, wait_until
from webapp import create_app
from workers.celery_app import create_celery
from workers.dispatch import publish, publish_record
from workers.jobs import FINISHED, JobRegistry, JobStatus, keys
from workers.leases import Reaper

pytestmark = pytest.mark.slow

LEASE_S = 5
PINGS = 10
# Past a ping's 10 s soft time limit, which ends the worker's retries of a start Redis refuses
# (workers/execution.py): the first deliveries go back to the broker while Redis is still down.
OUTAGE_S = 20


@dataclass
class Stack:
    broker: str
    settings: Settings
    port: int
    data_dir: Path
    server: Proc
    worker: Proc
    vhost: str | None
    client: FlaskClient
    jobs: JobRegistry

    def signal_worker(self, sig: int) -> None:
        os.killpg(self.worker.p.pid, sig)

    def stop_redis(self) -> None:
        self.server.stop()  # SIGTERM: the append-only file is flushed, nothing acknowledged is lost

    def start_redis(self) -> None:
        self.server = start_redis(self.port, self.data_dir, aof=True)

    def unreachable(self) -> Settings:
        """These settings with the broker at a closed port: every publish through them fails."""
        scheme = "amqp://guest:guest@" if self.broker == "amqp" else "redis://"
        broker = f"{scheme}127.0.0.1:{free_port()}/" + ("" if self.broker == "amqp" else "0")
        return self.settings.model_copy(update={"broker_url": broker})

    def held_by_rabbitmq(self) -> int:
        """Messages RabbitMQ still holds in the inference queue: ready, or delivered and not acked."""
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", str(self.vhost), "name", "messages_ready",
             "messages_unacknowledged", "--no-table-headers"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
        return sum(int(n) for n in rows.get("inference", ["0", "0"]))


@pytest.fixture(scope="module", params=["redis", "amqp"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if request.param == "amqp" and not rabbit.available():
        pytest.skip("rabbitmqctl not installed: no RabbitMQ here")
    tmp = tmp_path_factory.mktemp(f"outbox-{request.param}")
    port = free_port()
    server = start_redis(port, tmp / "redis", aof=True)
    vhost = f"stockq-test-outbox-{port}" if request.param == "amqp" else None
    settings = make_settings(tmp / "var", 0, 1, redis_url=f"redis://127.0.0.1:{port}/0", lease_s=LEASE_S,
                             broker_url=rabbit.fresh_vhost(vhost) if vhost else None)  # fmt: skip
    try:
        worker = start_worker(settings, "inference", f"outbox-{request.param}", concurrency=1,
                              app="tests.fault_tasks", STOCKQ_LEASE_S=str(LEASE_S))  # fmt: skip
    except BaseException:
        server.stop()
        raise
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 3600)
    stack = Stack(request.param, settings, port, tmp / "redis", server, worker, vhost,
                  create_app(settings).test_client(), jobs)  # fmt: skip
    try:
        yield stack
    finally:
        stack.signal_worker(signal.SIGCONT)
        stack.worker.stop()
        stack.server.stop()
        if vhost:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def status(client: FlaskClient, job_id: str) -> dict[str, Any]:
    return client.get(f"/status/{job_id}").get_json()


def submit_ping(client: FlaskClient) -> str:
    r = client.post("/jobs/ping")
    assert r.status_code == 202, r.get_json()
    return r.get_json()["job_id"]


def wait_final(client: FlaskClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    return wait_until(lambda: (j := status(client, job_id))["status"] in FINISHED and j,
                      timeout_s, f"job {job_id} to end", every=0.5)  # fmt: skip


def test_jobs_delivered_while_redis_is_down_all_end_once_it_is_back(stack: Stack) -> None:
    client = stack.client
    stack.signal_worker(signal.SIGSTOP)  # the messages wait in the broker, or in the worker's socket
    try:
        ids = [submit_ping(client) for _ in range(PINGS)]
        stack.stop_redis()
        down_at = time.monotonic()
    finally:
        stack.signal_worker(signal.SIGCONT)
    try:
        # The worker takes messages now and Redis refuses every start: none may be acknowledged unstarted.
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        held = stack.held_by_rabbitmq() if stack.broker == "amqp" else PINGS
    finally:
        stack.start_redis()
    assert held == PINGS
    ended = {i: wait_final(client, i, 120) for i in ids}
    assert {j["status"] for j in ended.values()} == {"succeeded"}, ended
    assert all(j["executions"] == 1 for j in ended.values()), ended
    if stack.broker == "amqp":
        # Starts were refused past their retries while Redis was down, and went back to RabbitMQ.
        log = stack.worker.log.read_text(errors="replace")
        assert any(f"stockq.ping[{i}] reject requeue=True" in log for i in ids)


def test_a_retry_whose_publish_fails_is_published_from_the_outbox(stack: Stack) -> None:
    client = stack.client
    stack.signal_worker(signal.SIGSTOP)
    try:
        job_id = submit_ping(client)
        assert client.delete(f"/jobs/{job_id}").status_code == 200  # cancelled while queued
    finally:
        stack.signal_worker(signal.SIGCONT)
    cut_off = create_app(stack.unreachable()).test_client()
    r = cut_off.post(f"/jobs/{job_id}/retry")
    assert r.status_code == 202, r.get_json()  # the retry is recorded, and so is its message to send
    assert stack.jobs.r.zscore(keys.OUTBOX, f"{job_id}|2") is not None
    done = wait_final(client, job_id, 60)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert stack.jobs.r.zscore(keys.OUTBOX, f"{job_id}|2") is None


def test_a_reaper_requeue_whose_publish_fails_is_published_from_the_outbox(stack: Stack) -> None:
    jobs, r = stack.jobs, stack.jobs.r
    task = slow_task("inference")
    job = jobs.create("ping", {"seconds": 3}, task)
    publish(create_celery(stack.settings), jobs, job.id, task, 1, kwargs={"seconds": 3})
    wait_until(lambda: (j := jobs.get(job.id)) and j.status == JobStatus.RUNNING, 60, "the job to run")
    # The worker freezes mid-job (its lease runs out); a reaper whose broker is unreachable takes over.
    stack.signal_worker(signal.SIGSTOP)
    cut_off = create_celery(stack.unreachable())
    reaper = Reaper(r, jobs, lambda rec, attempt: publish_record(cut_off, jobs, rec, attempt),
                    lease_s=LEASE_S, max_lost=3, name="cut-off-reaper")  # fmt: skip
    # The frozen worker's reaper lock lapses within three passes; then this reaper is the active one.
    reaper.start()
    try:
        wait_until(
            lambda: (j := jobs.get(job.id)) and j.attempt == 2, 60, "the job to be requeued", every=0.2
        )
        assert jobs.get(job.id).status == JobStatus.QUEUED  # requeued, and its publish found no broker
        assert r.zscore(keys.OUTBOX, f"{job.id}|2") is not None
    finally:
        reaper.stop()  # its lock lapses too, and the worker's own reaper takes over
        stack.signal_worker(signal.SIGCONT)
    done = wait_until(lambda: (j := jobs.get(job.id)) and j.finished and j, 60, "the job to end", every=0.5)
    assert done.status == JobStatus.SUCCEEDED and done.attempt == 2, done
    assert done.result == {"slept": 3, "attempt": 2}
    assert [a["outcome"] for a in done.attempts] == ["worker_lost", "succeeded"]
    assert done.executions == 1
