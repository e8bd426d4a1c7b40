"""Hosts whose clocks disagree (issue 19, hole 3): real Celery workers whose process clock is 60 s ahead
or behind (tests/skewed_clock) hold their leases, and a dead one is still reaped within about its lease.

Leases are written and judged in the Redis server's clock alone. Each scenario pits a runner against a
reaper skewed the other way, so a host clock coming back on either side fails it: a lease stamped by a
runner 60 s behind, or judged by a reaper 60 s ahead, is reaped while its job runs; one stamped 60 s ahead,
or judged 60 s behind, outlives its dead worker by a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.conftest import fresh_settings
from tests.procs import Proc, start_all, start_worker, wait_until
from tests.skew_tasks import HOLD
from workers.celery_app import create_celery
from workers.jobs import JobRecord, JobRegistry, JobStatus
from workers.leases import REAPER_LOCK

pytestmark = pytest.mark.slow

LEASE_S = 5
SKEW_S = 60
CLOCK_DIR = Path(__file__).parent / "skewed_clock"
# Worker name -> (its queue, its clock's offset). A requeued attempt of the test task goes to the default
# queue (inference): the worker behind runs it.
WORKERS = {"ahead": ("training", SKEW_S), "behind": ("inference", -SKEW_S)}


@dataclass
class Env:
    r: redis.Redis
    jobs: JobRegistry
    celery: Celery
    procs: dict[str, Proc]

    def hostname(self, name: str) -> str:
        queue = WORKERS[name][0]
        found = [m.decode() for m in self.r.zrange(f"stockq:workers:{queue}", 0, -1)]
        return next(h for h in found if h.startswith(name + "@"))

    def send_hold(self, runner: str, seconds: float) -> str:
        """A job of the test task, its first attempt delivered to `runner`'s queue."""
        job = self.jobs.create("ping", {"seconds": seconds}, HOLD)
        self.celery.send_task(HOLD, args=[job.id], kwargs={"seconds": seconds, "attempt": 1},
                              queue=WORKERS[runner][0], task_id=job.id)  # fmt: skip
        self.jobs.published(job.id, 1)
        return job.id

    def record(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        assert job is not None
        return job

    def make_reaper(self, name: str) -> None:
        """The reaper runs in one worker's main process at a time, the one whose hostname holds a Redis
        lock: hand the lock to `name`, and wait until its reaper renews it (only the holder does)."""
        self.r.set(REAPER_LOCK, self.hostname(name), px=60_000)
        wait_until(lambda: 0 < self.r.pttl(REAPER_LOCK) <= 3_000, 30, f"the reaper of {name}", every=0.05)


def skewed_pythonpath() -> str:
    return os.pathsep.join(p for p in (str(CLOCK_DIR), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = fresh_settings(tmp_path_factory.mktemp("clock_skew"), 4, 5, lease_s=LEASE_S)

    def start(name: str) -> Proc:
        queue, offset = WORKERS[name]
        clock = {"STOCKQ_TEST_CLOCK_OFFSET_S": str(offset), "PYTHONPATH": skewed_pythonpath()}
        return start_worker(settings, queue, name, app="tests.skew_tasks", STOCKQ_LEASE_S=str(LEASE_S),
                            **clock)  # fmt: skip

    procs = dict(zip(WORKERS, start_all(*(partial(start, name) for name in WORKERS)), strict=True))
    r = redis.Redis.from_url(settings.redis_url)
    celery = create_celery(settings)
    try:
        env = Env(r, JobRegistry(r, 3600), celery, procs)
        # The premise: each worker's clock is off by what it was told, as Redis's clock sees it.
        checks = {name: env.send_hold(name, 0) for name in WORKERS}
        for name, job_id in checks.items():
            done = wait_until(lambda j=job_id: (job := env.record(j)).finished and job, 60, f"{name}'s clock")
            assert done.result["clock_ahead_s"] == WORKERS[name][1], done
        yield env
    finally:
        celery.close()
        for proc in procs.values():
            proc.stop()


def run_to_the_end(env: Env, job_id: str, timeout_s: float) -> JobRecord:
    """The job's record once finished; fails the moment it is requeued (a reaped live job)."""

    def finished() -> JobRecord | None:
        job = env.record(job_id)
        assert job.attempt == 1 and job.lost == 0, f"a live job was reaped: {job}"
        return job if job.finished else None

    return wait_until(finished, timeout_s, f"job {job_id} to finish", every=0.1)


def test_jobs_on_clocks_60s_behind_and_ahead_hold_their_leases_against_a_reaper_60s_ahead(env: Env) -> None:
    env.make_reaper("ahead")
    seconds = 3 * LEASE_S  # a lease renewed twice over, judged on every pass of the reaper (each second)
    job_ids = {runner: env.send_hold(runner, seconds) for runner in WORKERS}
    for runner, job_id in job_ids.items():
        done = run_to_the_end(env, job_id, seconds + 60)
        assert done.status == JobStatus.SUCCEEDED, done
        assert done.result == {"attempt": 1, "clock_ahead_s": WORKERS[runner][1]}
        assert [a["outcome"] for a in done.attempts] == ["succeeded"] and done.executions == 1
        assert done.worker == env.hostname(runner)
    assert env.r.get(REAPER_LOCK) == env.hostname("ahead").encode()  # it judged the leases all along


def test_a_dead_worker_60s_ahead_is_reaped_within_about_its_lease_by_a_reaper_60s_behind(env: Env) -> None:
    env.make_reaper("behind")
    job_id = env.send_hold("ahead", 8)
    running = wait_until(lambda: (job := env.record(job_id)).status == JobStatus.RUNNING and job, 60, "start")
    assert running.worker == env.hostname("ahead")
    env.procs["ahead"].kill()  # main process and pool: nothing of that worker renews or reports
    # Reaped once its lease (renewed up to the kill) runs out, by Redis's clock: a host clock would add
    # the 120 s between the two.
    wait_until(lambda: env.record(job_id).attempt == 2, LEASE_S + 25, "the dead worker's job to be requeued")
    done = wait_until(lambda: (job := env.record(job_id)).finished and job, 60, "the requeued job to finish")
    assert done.status == JobStatus.SUCCEEDED and done.result == {"attempt": 2, "clock_ahead_s": -SKEW_S}
    assert [a["outcome"] for a in done.attempts] == ["worker_lost", "succeeded"] and done.lost == 1
    assert done.attempts[0]["worker"] == running.worker and done.worker == env.hostname("behind")
