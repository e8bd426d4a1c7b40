"""Job leases: the process running a job renews its lease from a thread, independent of epochs; a reaper
in every worker's main process (one active at a time, through a Redis lock) requeues the jobs whose
lease expired, so a job whose whole worker died runs again elsewhere within about `lease_s`.

Hand-written rather than Celery's visibility timeout: that one timeout is shared by every queue and must
outlast the longest training, so a dead host would strand a 10-second prediction for an hour.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import redis

from workers import logs
from workers.celery_app import queue_of
from workers.counters import Counters
from workers.dispatch import task_id
from workers.heartbeat import worker_alive
from workers.jobs import Delivery, JobRecord, JobRegistry, JobStatus
from workers.jobs.keys import LEASES, QUEUED
from workers.jobs.model import RequeueOutcome
from workers.singleflight import SingleFlight

log = logging.getLogger(__name__)

REAPER_LOCK = "stockq:lock:reaper"


class LeaseKeeper:
    """Renews the lease of the job this process runs (and the single-flight locks it holds) every
    `lease_s / 3`. When a renewal finds that the attempt no longer owns the job, or that a lock was
    lost, `lost` is set and the job stops at its next stage boundary."""

    def __init__(self, jobs: JobRegistry, lease_s: float) -> None:
        self.jobs = jobs
        self.lease_s = lease_s
        self.lost = threading.Event()
        self._current: Delivery | None = None
        self._locks: list[tuple[SingleFlight, str]] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, delivery: Delivery) -> Any:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="stockq-lease", daemon=True)
            self._thread.start()
        self.lost.clear()
        self._current, self._locks = delivery, []
        try:
            yield self
        finally:
            self._current, self._locks = None, []

    @property
    def current(self) -> Delivery | None:
        return self._current

    def also_refresh(self, lock: SingleFlight, token: str) -> None:
        self._locks.append((lock, token))
        self._wake.set()

    def stop_refreshing(self, lock: SingleFlight) -> None:
        self._locks = [(held, token) for held, token in self._locks if held is not lock]

    def _run(self) -> None:
        while True:
            self._wake.wait(self.lease_s / 3)
            self._wake.clear()
            delivery, locks = self._current, list(self._locks)
            if delivery is None:
                continue
            try:
                owned = self.jobs.renew(delivery, self.lease_s)
                owned = all([lock.refresh(token) for lock, token in locks]) and owned
            except redis.RedisError:
                continue  # Redis away for a moment: the lease outlives a few missed renewals
            if not owned and delivery is self._current:
                log.warning("job %s attempt %s lost its lease or lock", delivery.job_id, delivery.attempt)
                self.lost.set()


Publish = Callable[[JobRecord, int], None]
HeldMessages = Callable[[], tuple[set[str], set[str]]]


class Reaper:
    """Finds running jobs whose lease expired and requeues them with attempt + 1 (or fails them with
    `worker_lost` after `max_lost` losses). Runs in a thread of each worker's main process."""

    def __init__(
        self, client: redis.Redis, jobs: JobRegistry, publish: Publish, *, lease_s: float, max_lost: int,
        name: str, held: HeldMessages | None = None, dead_letters: Callable[[], int] | None = None,
    ) -> None:  # fmt: skip
        """`held`: what the broker holds, where it can be read (a Redis broker); without it only a dead
        receiver tells a lost message (RabbitMQ needs no more: it redelivers a dead consumer's message).
        `dead_letters`: drains the broker's dead-letter queue into the job records (RabbitMQ)."""
        self.r = client
        self.jobs = jobs
        self.publish = publish
        self.held = held
        self.dead_letters = dead_letters
        self.every_s = max(1.0, lease_s / 6)
        self.max_lost = max_lost
        self.name = name
        # A job queued this long with no trace of its message is lost (a fresh message is always visible).
        self.queued_grace_s = max(5.0, lease_s)
        # Attempts seen in no queue and not unacknowledged, once: lost only if still so a grace later.
        # kombu takes a message off its queue before recording it unacknowledged (celery/kombu#305); on a
        # loaded host a live worker can sit between the two steps while this reaper reads the broker.
        self._unseen: dict[str, int] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="stockq-reaper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if self._is_active():
                    self.reap_once()
                    self.republish_outbox()
                    self.recover_queued()
                    self.jobs.trim_expired()  # expired records leave the indexes while nothing is submitted
                    if self.dead_letters is not None:
                        self.dead_letters()
            except redis.RedisError:
                continue
            except Exception:
                log.exception("reaper pass failed")

    def _is_active(self) -> bool:
        """One reaper at a time: the lock outlives three passes, so a dead reaper is replaced soon."""
        ttl_ms = int(self.every_s * 3000)
        if self.r.set(REAPER_LOCK, self.name, nx=True, px=ttl_ms):
            return True
        if self.r.get(REAPER_LOCK) == self.name.encode():
            self.r.pexpire(REAPER_LOCK, ttl_ms)
            return True
        return False

    def reap_once(self) -> int:
        reaped = 0
        for job_id in self.jobs.expired_leases():
            job = self.jobs.get(job_id)
            if job is None:
                self.r.zrem(LEASES, job_id)
                continue
            if self.give_up(Delivery(job_id, job.attempt), job, reaping=True):
                reaped += 1
        return reaped

    def republish_outbox(self) -> int:
        """Publish again the messages of state changes whose publish was never confirmed: the publisher
        died between its state change and the broker's ack, or the broker refused it (the change and its
        outbox entry were written in one script). A copy that also arrived is dropped by its fence."""
        published = 0
        for delivery in self.jobs.outbox_due(self.queued_grace_s):
            job = self.jobs.get(delivery.job_id)
            if job is None:
                continue
            log.warning("job %s attempt %s: its message was never confirmed; published again",
                        delivery.job_id, delivery.attempt)  # fmt: skip
            self.publish(job, delivery.attempt)
            published += 1
        return published

    def recover_queued(self) -> int:
        """Queued jobs whose message is lost: taken by a worker that died before starting it (found by
        `received_by` and that worker's stopped heartbeat), or gone altogether (in no queue and not
        unacknowledged in the Redis broker). Published again as attempt + 1; fencing drops a late copy."""
        now = self.jobs.now()
        candidates = self.jobs.queued_before(now - self.queued_grace_s)
        if not candidates:
            return 0
        held: set[str] | None = None
        too_long: set[str] = set()
        recovered = 0
        for job_id in candidates:
            job = self.jobs.get(job_id)
            if job is None or job.status != JobStatus.QUEUED:
                self.r.zrem(QUEUED, job_id)
                continue
            queue = queue_of(job.task)
            delivery = Delivery(job_id, job.attempt)
            holder = job.received_by if job.received_attempt == job.attempt else None
            if holder:
                lost = not worker_alive(self.r, queue, holder)
            elif self.held is None:
                lost = False
            else:
                if held is None:  # read the broker once per pass, and only when needed
                    held, too_long = self.held()
                lost = queue not in too_long and task_id(job_id, job.attempt) not in held
                lost = lost and self._unseen_twice(job_id, job.attempt)
            if not lost:
                self.r.zadd(QUEUED, {job_id: now})  # looked at: not again before the grace has passed
                continue
            attempt = self.jobs.republish(delivery, holder or "")
            if attempt is not None:
                log.warning("job %s: message of attempt %s lost; published again as %s", job_id,
                            delivery.attempt, attempt)  # fmt: skip
                self.publish(job, attempt)
                Counters(self.r).incr("stockq_job_requeues_total", job.type)
                recovered += 1
        return recovered

    def _unseen_twice(self, job_id: str, attempt: int) -> bool:
        if self._unseen.get(job_id) == attempt:
            del self._unseen[job_id]
            return True
        if len(self._unseen) > 10_000:  # entries of jobs that started after one look: never looked at again
            self._unseen.clear()
        self._unseen[job_id] = attempt
        return False

    def give_up(self, delivery: Delivery, job: JobRecord, *, reaping: bool) -> bool:
        """Requeue (or dead-letter) one lost attempt; True when this call did it. What happened goes to the
        job's own log too (workers/job_log.py, where the reaper runs in a worker)."""
        with logs.job_context(job_id=delivery.job_id, attempt=delivery.attempt, tenant=job.owner or None):
            return self._give_up(delivery, job, reaping=reaping)

    def _give_up(self, delivery: Delivery, job: JobRecord, *, reaping: bool) -> bool:
        res = self.jobs.requeue(
            delivery, outcome="worker_lost", lost=True, max_lost=self.max_lost, stage="requeued",
            reaping=reaping,
        )  # fmt: skip
        if res.outcome == RequeueOutcome.NOT_OWNER:
            return False
        if res.outcome == RequeueOutcome.DEAD_LETTERED:
            log.warning("job %s failed: worker lost %s times (dead-lettered)", delivery.job_id, self.max_lost)
        elif res.outcome == RequeueOutcome.CANCELLED:
            log.info("job %s lost its worker after a cancel was requested: cancelled", delivery.job_id)
        else:
            log.warning("job %s lost its worker; requeued as attempt %s", delivery.job_id, res.attempt)
            Counters(self.r).incr("stockq_job_requeues_total", job.type)
            self.publish(job, res.attempt)
        return True
