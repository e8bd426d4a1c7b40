"""One SIGTERM to a busy pool process (what Flower's Terminate sends) preempts that job only (issue 19,
hole 7): the process lives on, and the trainings it runs next are not asked to stop again.

A real worker with one pool process, so every attempt and every later job runs in the process that got
the signal; real trainings on the bundled data, a few epochs each.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.conftest import fresh_settings
from tests.procs import Proc, start_worker, wait_until
from tests.test_backbone_e2e import submit
from webapp import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, Proc]]:
    settings = fresh_settings(tmp_path_factory.mktemp("preemption_flag"), 4, 5)
    worker = start_worker(settings, "training", "trainer", concurrency=1)
    try:
        yield create_app(settings).test_client(), worker
    finally:
        worker.stop()


def pool_process(worker: Proc) -> int:
    """The worker's one pool process (`--concurrency 1`)."""
    main = worker.p.pid
    (child,) = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    return int(child)


def outcomes(job: dict) -> list[str]:
    return [a["outcome"] for a in job["attempts"]]


def run_to_the_end(client: FlaskClient, job_id: str, preemptions: int) -> dict:
    """The finished job; fails the moment it has been preempted more than `preemptions` times."""

    def finished() -> dict | None:
        job = client.get(f"/status/{job_id}").get_json()
        assert outcomes(job).count("preempted") <= preemptions, f"preempted again: {job}"
        return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

    return wait_until(finished, 300, f"job {job_id} to finish", every=0.1)


def test_a_sigterm_preempts_its_job_only_and_the_process_runs_the_next_trainings_unasked(
    stack: tuple[FlaskClient, Proc],
) -> None:
    client, worker = stack
    pool = pool_process(worker)
    first = submit(client, "/train", {"ticker": "KO", "strategy": "scratch", "epochs": 4})
    wait_until(lambda: (client.get(f"/status/{first}").get_json().get("progress") or {}).get("epoch"), 240,
               "the first epoch")  # fmt: skip
    os.kill(pool, signal.SIGTERM)  # what Flower's Terminate (a revoke with terminate) sends
    # It checkpoints at the epoch's end and requeues itself; the same process takes the next attempt,
    # which trains on to the end from the checkpoint.
    done = run_to_the_end(client, first, preemptions=1)
    assert done["status"] == "succeeded" and outcomes(done) == ["preempted", "succeeded"], done
    assert done["resumed_from_epoch"] >= 1
    # A later job in that process runs in one attempt: nothing asks it to stop at its first epoch.
    second = submit(client, "/train", {"ticker": "PEP", "strategy": "scratch", "epochs": 2})
    later = run_to_the_end(client, second, preemptions=0)
    assert later["status"] == "succeeded" and outcomes(later) == ["succeeded"], later
    assert later["attempt"] == 1
    assert pool_process(worker) == pool  # the process that got the signal ran every attempt
