"""Flower tells what the job registry tells: against a real Celery worker (task events on) and a real
Flower, a failed job's task is FAILURE with the job's code and message (no traceback of ours), a
cancelled one's REVOKED (cancelled running, or before it ran), a succeeded one's SUCCESS; the task list
names the job id and its ticker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from tests.conftest import fresh_settings
from tests.fault_tasks import slow_task
from tests.procs import BIN, Proc, free_port, settings_env, start_worker, wait_until
from workers.celery_app import JobFailed, create_celery
from workers.dispatch import publish
from workers.jobs import JobRecord, JobRegistry, JobStatus

pytestmark = pytest.mark.slow

WORKER = "flowerstates"
AUTH = ("flower", "test-only-password")
# What Celery's formatted traceback holds, and what only the work's internals would show.
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "', "workers/", "TypeError")


class Stack:
    def __init__(self, settings: Any, flower_port: int) -> None:
        self.settings = settings
        self.flower = f"http://127.0.0.1:{flower_port}"
        self.jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 3600)
        self.celery = create_celery(settings)
        # The test-only slow task (tests/fault_tasks.py) is routed like the job table's tasks.
        self.celery.conf.task_routes = (
            *self.celery.conf.task_routes,
            {slow_task("ingest"): {"queue": "ingest"}},
        )

    def submit(
        self, job_type: str, task: str, params: dict[str, Any], cancel_first: bool = False
    ) -> JobRecord:
        """A record and its message, published as the API publishes (workers/dispatch.py); `cancel_first`:
        cancelled while still queued, before its message reaches the worker."""
        job = self.jobs.create(job_type, params, task)
        if cancel_first:
            assert self.jobs.cancel(job.id) == "cancelled"
        publish(self.celery, self.jobs, job.id, job.task, job.attempt, kwargs=job.task_kwargs)
        return job

    def record(self, job_id: str, status: JobStatus) -> JobRecord:
        def ended() -> JobRecord | None:
            job = self.jobs.get(job_id)
            return job if job is not None and job.status == status else None

        return wait_until(ended, 60, f"job {job_id} {status}", every=0.1)

    def flower_task(self, task_id: str, state: str) -> dict[str, Any]:
        """The task as Flower's API lists it, once Flower lists it in `state`."""

        def seen() -> dict[str, Any] | None:
            # The task list filtered by state, as Flower's Failed (or Revoked, ...) filter shows it.
            r = requests.get(f"{self.flower}/api/tasks", params={"state": state}, auth=AUTH, timeout=5)
            r.raise_for_status()
            return r.json().get(task_id)

        return wait_until(seen, 30, f"Flower showing task {task_id} {state}", every=0.2)


def _flower_sees_worker(url: str, proc: Proc) -> bool:
    if proc.p.poll() is not None:
        raise AssertionError(f"flower exited:\n{proc.tail()}")
    try:
        metrics = requests.get(f"{url}/metrics", timeout=2).text
    except requests.RequestException:
        return False
    # Set from the worker's heartbeat events: Flower is consuming the events the tasks will send.
    return any(line.startswith(f'flower_worker_online{{worker="{WORKER}@') and line.endswith(" 1.0")
               for line in metrics.splitlines())  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = fresh_settings(tmp_path_factory.mktemp("flower_states"), 8, 9)
    port = free_port()
    argv = [str(BIN / "celery"), "-A", "workers", "flower", f"--port={port}", "--address=127.0.0.1"]
    env = settings_env(settings, FLOWER_BASIC_AUTH=":".join(AUTH))
    flower = Proc(argv, env, settings.var_path / "flower.log")
    worker = None
    try:
        worker = start_worker(settings, "training,ingest", WORKER, app="tests.fault_tasks")
        # Both the workers' config and the command line stockq up runs: task events on (-E's setting).
        assert create_celery(settings).conf.worker_send_task_events is True
        wait_until(lambda: _flower_sees_worker(f"http://127.0.0.1:{port}", flower), 60, "Flower", every=0.3)
        yield Stack(settings, port)
    finally:
        flower.stop()
        if worker is not None:
            worker.stop()


def assert_no_traceback_of_ours(task: dict[str, Any]) -> None:
    shown = f"{task.get('exception')}\n{task.get('traceback')}"
    for mark in TRACEBACK_MARKS:
        assert mark not in shown, shown


def test_failed_job_is_failure_with_its_code_and_message(stack: Stack) -> None:
    job = stack.submit("train", "stockq.train", {"ticker": "ZZZZ9"})
    error = stack.record(job.id, JobStatus.FAILED).error
    assert error is not None and error["code"] == "unknown_ticker", error

    task = stack.flower_task(job.id, "FAILURE")
    assert task["name"] == "stockq.train"  # the real name: Flower's task filter still finds it
    assert error["code"] in task["exception"] and error["message"] in task["exception"], task
    assert task["traceback"].strip() == f"workers.celery_app.JobFailed: unknown_ticker: {error['message']}"
    assert_no_traceback_of_ours(task)
    # The task list names the job (the args column) and its ticker (the kwargs column, first).
    assert job.id in task["args"], task
    assert task["kwargs"].startswith("{'ticker': 'ZZZZ9', 'attempt': 1"), task


def test_internal_error_shows_its_error_id_only(stack: Stack) -> None:
    job = stack.submit("ingest", "stockq.ingest", {"tickers": 5})  # `for t in 5` fails inside the work
    error = stack.record(job.id, JobStatus.FAILED).error
    assert error is not None and error["code"] == "internal_error", error

    task = stack.flower_task(job.id, "FAILURE")
    assert "internal_error" in task["exception"] and error["error_id"] in task["exception"], task
    assert_no_traceback_of_ours(task)
    assert "TypeError" not in json.dumps(task)  # the exception itself stays in the worker's log


def test_cancelled_running_job_is_revoked(stack: Stack) -> None:
    job = stack.submit("ingest", slow_task("ingest"), {"seconds": 30})
    stack.record(job.id, JobStatus.RUNNING)
    assert stack.jobs.cancel(job.id) == "cancelling"
    stack.record(job.id, JobStatus.CANCELLED)  # at its next stage boundary (one a second)

    task = stack.flower_task(job.id, "REVOKED")
    assert task["exception"] is None and task["succeeded"] is None, task


def test_job_cancelled_before_it_ran_is_revoked(stack: Stack) -> None:
    job = stack.submit("train", "stockq.train", {"ticker": "AAPL"}, cancel_first=True)
    task = stack.flower_task(job.id, "REVOKED")
    assert task["succeeded"] is None and task["failed"] is None, task
    assert stack.jobs.get(job.id).status == JobStatus.CANCELLED


def test_succeeded_job_is_success(stack: Stack) -> None:
    job = stack.submit("ingest", "stockq.ingest", {"tickers": ["AAPL"]})
    stack.record(job.id, JobStatus.SUCCEEDED)
    task = stack.flower_task(job.id, "SUCCESS")
    assert task["exception"] is None, task
    assert job.id in task["args"] and "'AAPL'" in task["kwargs"], task


def test_job_failed_survives_the_json_result_backend(stack: Stack) -> None:
    """Results are not kept (task_ignore_result); were they, the JSON serializer carries the exception."""
    backend = stack.celery.backend
    stored = json.loads(json.dumps(backend.prepare_exception(JobFailed("timeout", "ran too long"), "json")))
    back = backend.exception_to_python(stored)
    assert isinstance(back, JobFailed) and str(back) == "timeout: ran too long"
    assert (back.code, back.message) == ("timeout", "ran too long")
