"""Job submission: create the record, honour Idempotency-Key, publish to Celery by task name.

The API sends tasks by name, so it never imports torch, Feast or MLflow.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis
from celery import Celery

from ml.settings import Settings
from webapp.errors import ApiError
from workers.counters import Counters
from workers.dispatch import publish
from workers.jobs import JobRegistry, OverCapacity

TASKS = {
    "train": "stockq.train",
    "predict": "stockq.predict",
    "predict_batch": "stockq.predict_batch",
    "analyze": "stockq.analyze",
    "ingest": "stockq.ingest",
    "ping": "stockq.ping",
    "chart": "stockq.chart",
}


# KEYS[1] idempotency key; ARGV[1] job id. Deletes the claim only if it still names that job.
_RELEASE_IF = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['job_id'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Short-lived job types: looked at once, their records go after minutes.
SHORT_LIVED = frozenset({"ping", "chart"})
INFLIGHT_RETRY_AFTER_S = 10


class Submitter:
    def __init__(self, celery: Celery, jobs: JobRegistry, client: redis.Redis, settings: Settings) -> None:
        self.celery = celery
        self.jobs = jobs
        self.r = client
        self.retention_s = settings.job_retention_s
        self.retention = {
            t: settings.short_job_retention_s if t in SHORT_LIVED else settings.job_retention_s for t in TASKS
        }
        self.max_inflight = settings.max_inflight
        self.counters = Counters(client)
        self._release_if = client.register_script(_RELEASE_IF)

    def submit(
        self,
        job_type: str,
        params: dict[str, Any],
        idempotency_key: str | None = None,
        client: str = "",
        owner: str = "anonymous",
        task_kwargs: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """(job record, created). With a key, the same client, key and body return the first job.

        The record exists before the key is claimed, so a claimed key always names a real job; the
        loser of a race deletes its own unsent record and answers with the winner's job.
        """
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise ApiError(422, "validation_error", "Idempotency-Key: must be 1-200 characters")
        try:
            job = self.jobs.create(
                job_type, params, TASKS[job_type], owner=owner, retention_s=self.retention[job_type],
                max_inflight=self.max_inflight, task_kwargs=task_kwargs,
            )  # fmt: skip
        except OverCapacity as exc:
            raise ApiError(429, "too_many_inflight", f"{exc}: wait for some to finish",
                           headers={"Retry-After": str(INFLIGHT_RETRY_AFTER_S)}) from None  # fmt: skip
        if idempotency_key is not None:
            redis_key = self._redis_key(client, idempotency_key)
            try:
                existing = self._claim(redis_key, self._fingerprint(job_type, params), job["id"])
            except ApiError:
                self.jobs.delete(job["id"])
                raise
            if existing is not None:
                self.jobs.delete(job["id"])
                return existing, False
        try:
            publish(self.celery, job["id"], TASKS[job_type], job["attempt"], kwargs=task_kwargs or params)
        except Exception:
            # Never leave a `queued` record that no worker will ever see, nor a key bound to it.
            self.jobs.fail(job["id"], "broker_unavailable", "the job could not be queued")
            if idempotency_key is not None:
                self._release(self._redis_key(client, idempotency_key), job["id"])
            raise
        self.counters.incr("stockq_jobs_submitted_total", job_type)
        return job, True

    @staticmethod
    def _fingerprint(job_type: str, params: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps([job_type, params], sort_keys=True).encode()).hexdigest()

    @staticmethod
    def _redis_key(client: str, key: str) -> str:
        # Scoped per client: another client's identical key never returns this client's job.
        return "stockq:idem:" + hashlib.sha256(f"{client}\n{key}".encode()).hexdigest()

    def _release(self, redis_key: str, job_id: str) -> None:
        """Free the key only while it still names `job_id`: a fresh claim made meanwhile by another
        request stays."""
        self._release_if(keys=[redis_key], args=[job_id])

    def _claim(self, redis_key: str, fingerprint: str, job_id: str) -> dict[str, Any] | None:
        """None when this job now owns the key; else the first job (or 422 for another body)."""
        claim = json.dumps({"fingerprint": fingerprint, "job_id": job_id})
        for _ in range(3):  # the stored claim can expire between SET and GET
            if self.r.set(redis_key, claim, nx=True, ex=self.retention_s):
                return None
            raw = self.r.get(redis_key)
            if raw is None:
                continue
            stored = json.loads(raw)
            if stored["fingerprint"] != fingerprint:
                raise ApiError(
                    422, "idempotency_key_reused", "Idempotency-Key was already used with a different request"
                )
            job = self.jobs.get(stored["job_id"])
            if job is not None:
                return job
            self._release(redis_key, stored["job_id"])  # its job expired: the key is free again
        raise ApiError(409, "idempotency_conflict", "Idempotency-Key is contended; retry")
