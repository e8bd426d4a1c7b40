"""Job leases, fencing, the reaper and the dead-letter list against a real Redis (no workers)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import REDIS_BASE, flush_db
from workers.jobs import Delivery, JobRegistry, JobStatus
from workers.jobs.keys import DEAD_LETTER, LEASES, QUEUED
from workers.jobs.model import Requeue, RequeueOutcome, Retry, RetryOutcome, Start
from workers.leases import LeaseKeeper, Reaper


@pytest.fixture()
def client() -> Iterator[redis.Redis]:
    url = f"{REDIS_BASE}/9"
    flush_db(url)
    yield redis.Redis.from_url(url)
    flush_db(url)


def _job(jobs: JobRegistry) -> str:
    return jobs.create("train", {"ticker": "AAPL", "strategy": "freeze", "epochs": 2}, "stockq.train").id


def test_only_the_current_attempt_starts_reports_and_finishes(client: redis.Redis) -> None:
    jobs = JobRegistry(client, 600)
    job_id = _job(jobs)
    first = Delivery(job_id, 1)
    assert jobs.start(Delivery(job_id, 2), "w1", 30) == Start.STALE
    assert jobs.start(first, "w1", 30) == Start.STARTED
    assert jobs.start(first, "w2", 30) == Start.RUNNING  # a redelivery of the running attempt does not start
    assert jobs.set_fields(first, progress={"epoch": 1})
    assert jobs.requeue(first, outcome="worker_lost", lost=True, max_lost=3, stage="requeued") == Requeue(
        RequeueOutcome.REQUEUED, 2
    )
    # the zombie of attempt 1 changes nothing any more
    assert not jobs.set_fields(first, progress={"epoch": 9})
    assert not jobs.renew(first, 30)
    assert jobs.succeed(job_id, {"v": 1}, attempt=1) is False
    second = Delivery(job_id, 2)
    assert jobs.start(second, "w2", 30) == Start.STARTED
    assert jobs.succeed(job_id, {"v": 2}, attempt=2) is True
    job = jobs.get(job_id)
    assert job is not None
    assert job.status == JobStatus.SUCCEEDED and job.result == {"v": 2} and job.progress == {"epoch": 1}
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in job.attempts] == [
        (1, "w1", "worker_lost"),
        (2, "w2", "succeeded"),
    ]
    assert client.zcard(LEASES) == 0


def test_reaper_requeues_an_expired_lease_and_dead_letters_after_max_attempts(client: redis.Redis) -> None:
    jobs = JobRegistry(client, 600)
    job_id = _job(jobs)
    published: list[tuple[str, int]] = []
    reaper = Reaper(client, jobs, lambda job, a: published.append((job.task, a)), lease_s=30, max_lost=3,
                    name="r1")  # fmt: skip
    for attempt in (1, 2, 3):
        assert jobs.start(Delivery(job_id, attempt), f"w{attempt}", 0.05) == Start.STARTED
        assert reaper.reap_once() == 0 or attempt > 1  # not expired yet
        time.sleep(0.1)
        assert reaper.reap_once() == 1
    assert published == [("stockq.train", 2), ("stockq.train", 3)]
    job = jobs.get(job_id)
    assert job is not None and job.error is not None
    assert job.status == JobStatus.FAILED and job.error["code"] == "worker_lost" and job.lost == 3
    assert [a["worker"] for a in job.attempts] == ["w1", "w2", "w3"]
    assert client.zscore(DEAD_LETTER, job_id) is not None
    # retried: same id, losses reset, off the dead-letter list, a new fencing token
    assert jobs.retry(job_id) == Retry(RetryOutcome.QUEUED, 4)
    job = jobs.get(job_id)
    assert job is not None and (job.status, job.lost, job.attempt) == (JobStatus.QUEUED, 0, 4)
    assert client.zscore(DEAD_LETTER, job_id) is None
    assert jobs.retry(job_id) == Retry(RetryOutcome.NOT_RETRYABLE, status=JobStatus.QUEUED)


def test_a_renewed_lease_is_not_reaped_and_a_lost_one_stops_the_holder(client: redis.Redis) -> None:
    jobs = JobRegistry(client, 600)
    job_id = _job(jobs)
    delivery = Delivery(job_id, 1)
    assert jobs.start(delivery, "w1", 0.6) == Start.STARTED
    keeper = LeaseKeeper(jobs, 0.6)  # renews every 0.2 s
    reaper = Reaper(client, jobs, lambda *_: None, lease_s=30, max_lost=3, name="r1")
    with keeper.hold(delivery):
        time.sleep(1.5)
        assert reaper.reap_once() == 0 and jobs.get(job_id).status == JobStatus.RUNNING
        assert not keeper.lost.is_set()
        # another attempt took the job over (as the reaper would after a pause): the holder learns it
        client.hset(jobs.key(job_id), "attempt", 2)
        time.sleep(0.5)
        assert keeper.lost.is_set()


def test_only_one_reaper_is_active(client: redis.Redis) -> None:
    jobs = JobRegistry(client, 600)
    a = Reaper(client, jobs, lambda *_: None, lease_s=30, max_lost=3, name="a")
    b = Reaper(client, jobs, lambda *_: None, lease_s=30, max_lost=3, name="b")
    assert a._is_active() and not b._is_active() and a._is_active()


def test_the_final_write_outlasts_a_redis_restart(tmp_path) -> None:
    """The outcome is retried with backoff while Redis is away (here: SIGKILLed, restarted from its AOF
    two seconds later), so it is not lost with the connection."""
    import threading

    from tests.procs import free_port, start_redis
    from workers.execution import _durable

    port = free_port()
    server = start_redis(port, tmp_path / "redis", aof=True)
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1)
    jobs = JobRegistry(client, 600)
    job_id = _job(jobs)
    assert jobs.start(Delivery(job_id, 1), "w1", 30) == Start.STARTED
    time.sleep(1.2)  # fsync every second
    server.kill()
    restarted: list = []
    timer = threading.Timer(2.0, lambda: restarted.append(start_redis(port, tmp_path / "redis", aof=True)))
    timer.start()
    try:
        assert _durable(jobs.succeed)(job_id, {"ok": True}, 1) is True
        assert jobs.get(job_id).status == JobStatus.SUCCEEDED
    finally:
        timer.join()
        for proc in restarted:
            proc.stop()


def test_a_queued_job_whose_message_was_lost_is_published_again(client: redis.Redis) -> None:
    """Taken by a worker that died before starting it, or gone with it between kombu's two steps: the
    reaper republishes it as attempt + 1; a job whose message still waits in its queue is left alone."""
    import json

    from workers.broker_scan import held_task_ids
    from workers.celery_app import QUEUES
    from workers.heartbeat import Heartbeat

    jobs = JobRegistry(client, 600)
    vanished, held_by_dead, waiting, held_by_live = (_job(jobs) for _ in range(4))
    client.lpush("training", json.dumps({"headers": {"id": waiting}, "body": ""}))
    jobs.mark_received(Delivery(held_by_dead, 1), "gone@host")
    jobs.mark_received(Delivery(held_by_live, 1), "alive@host")
    client.set("stockq:worker-child-ready:1", 1)
    Heartbeat(client, "alive@host", ["training"], "stockq:worker-child-ready:1").stamp()
    published: list[tuple[str, int]] = []
    reaper = Reaper(client, jobs, lambda job, a: published.append((job.id, a)), lease_s=5, max_lost=3,
                    name="r1", held=lambda: held_task_ids(client, QUEUES))  # fmt: skip
    assert reaper.recover_queued() == 0  # younger than the grace: their messages may be on their way
    client.zadd(QUEUED, {j: 0 for j in (vanished, held_by_dead, waiting, held_by_live)})
    assert reaper.recover_queued() == 1  # a dead receiver at once; a message in no queue is looked at again
    assert published == [(held_by_dead, 2)]
    client.zadd(QUEUED, {j: 0 for j in (vanished, waiting, held_by_live)})
    assert reaper.recover_queued() == 1  # still in no queue and not unacknowledged, a grace later: lost
    assert sorted(published) == sorted([(vanished, 2), (held_by_dead, 2)])
    job = jobs.get(held_by_dead)
    assert job is not None and (job.attempt, job.status, job.lost) == (2, JobStatus.QUEUED, 0)
    assert [(a["worker"], a["outcome"]) for a in job.attempts] == [("gone@host", "message_lost")]
    assert [jobs.get(j).attempt for j in (waiting, held_by_live)] == [1, 1]
    # the late original of a republished job is stale now
    assert jobs.start(Delivery(vanished, 1), "w", 30) == Start.STALE
    assert jobs.start(Delivery(vanished, 2), "w", 30) == Start.STARTED
