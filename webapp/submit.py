"""Job submission: create the record, honour Idempotency-Key, publish to Celery by task name.

The API sends tasks by name, so it never imports torch, Feast or MLflow.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis
from celery import Celery

from webapp.errors import ApiError
from workers.counters import Counters
from workers.jobs import JobRegistry

TASKS = {
    "train": "stockq.train",
    "predict": "stockq.predict",
    "predict_batch": "stockq.predict_batch",
    "analyze": "stockq.analyze",
    "ingest": "stockq.ingest",
    "ping": "stockq.ping",
    "chart": "stockq.chart",
}


class Submitter:
    def __init__(self, celery: Celery, jobs: JobRegistry, client: redis.Redis, retention_s: int) -> None:
        self.celery = celery
        self.jobs = jobs
        self.r = client
        self.retention_s = retention_s
        self.counters = Counters(client)

    def submit(
        self, job_type: str, params: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """(job record, created). With a key, the same key and body return the first job."""
        job_id = self.jobs.new_id()
        if idempotency_key is not None:
            existing = self._claim_key(idempotency_key, job_type, params, job_id)
            if existing is not None:
                return existing, False
        job = self.jobs.create(job_type, params, job_id=job_id)
        try:
            self.celery.send_task(TASKS[job_type], args=[job_id], kwargs=params, task_id=job_id)
        except Exception:
            # Never leave a `queued` record that no worker will ever see, nor a key bound to it.
            self.jobs.fail(job_id, "broker_unavailable", "the job could not be queued")
            if idempotency_key is not None:
                self.r.delete(self._redis_key(idempotency_key))
            raise
        self.counters.incr("stockq_jobs_submitted_total", job_type)
        return job, True

    @staticmethod
    def _redis_key(key: str) -> str:
        return "stockq:idem:" + hashlib.sha256(key.encode()).hexdigest()

    def _claim_key(
        self, key: str, job_type: str, params: dict[str, Any], job_id: str
    ) -> dict[str, Any] | None:
        if not 1 <= len(key) <= 200:
            raise ApiError(422, "validation_error", "Idempotency-Key: must be 1-200 characters")
        fingerprint = hashlib.sha256(json.dumps([job_type, params], sort_keys=True).encode()).hexdigest()
        redis_key = self._redis_key(key)
        claim = json.dumps({"fingerprint": fingerprint, "job_id": job_id})
        if self.r.set(redis_key, claim, nx=True, ex=self.retention_s):
            return None
        raw = self.r.get(redis_key)
        stored = json.loads(raw) if raw else None
        if stored is None:  # expired between SET and GET: claim again
            return self._claim_key(key, job_type, params, job_id)
        if stored["fingerprint"] != fingerprint:
            raise ApiError(
                422, "idempotency_key_reused", "Idempotency-Key was already used with a different request"
            )
        job = self.jobs.get(stored["job_id"])
        if job is None:
            raise ApiError(
                409, "idempotency_conflict", "the first request with this key is still being created"
            )
        return job
