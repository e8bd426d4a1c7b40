"""Job submission: create the record, honour Idempotency-Key, publish to Celery by task name.

The API sends tasks by name, so it never imports torch, Feast or MLflow.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis
from celery import Celery

from stockq.settings import Settings
from webapp.errors import ApiError
from webapp.ratelimit import settle, take_plan
from workers.counters import Counters
from workers.dispatch import publish
from workers.jobs import Claim, JobRecord, JobRegistry, spec

# KEYS[1] idempotency key; ARGV[1] job id. Deletes the claim only if it still names that job (a job that
# could not be queued frees its key; a fresh claim made meanwhile by another request stays).
_RELEASE_IF = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['job_id'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


SUBMITTED = "stockq_jobs_submitted_total"
INFLIGHT_RETRY_AFTER_S = 10


class Submitter:
    def __init__(self, celery: Celery, jobs: JobRegistry, client: redis.Redis, settings: Settings) -> None:
        self.celery = celery
        self.jobs = jobs
        self.r = client
        self.retention_s = settings.job_retention_s
        self.short_retention_s = settings.short_job_retention_s
        self.max_inflight = settings.max_inflight
        self._release_if = client.register_script(_RELEASE_IF)

    def submit(
        self,
        job_type: str,
        params: dict[str, Any],
        idempotency_key: str | None = None,
        client: str = "",
        owner: str = "anonymous",
        task_kwargs: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """(job record, created). With a key, the same client, key and body return the first job.
        `client` is the caller's rate-limit identity (webapp/ratelimit.client_key).

        One round trip counts the request's rate-limit windows and creates the record, its indexes and the
        key's claim (JobRegistry.submit), so a claimed key always names a real job and two racing
        requests cannot both create one.
        """
        job_spec = spec(job_type)
        retention = self.short_retention_s if job_spec.retention == "short" else self.retention_s
        claim = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200:
                raise ApiError(422, "validation_error", "Idempotency-Key: must be 1-200 characters")
            # The claim lives as long as the job it names (a chart's claim goes with its chart).
            claim = Claim(self._redis_key(client, idempotency_key), self._fingerprint(job_type, params),
                          retention)  # fmt: skip
        plan = take_plan()
        if job_spec.hand_offs and client:
            # A job that may hand itself on (a prediction to an auto-training) is charged there to its
            # submitter's budget of that work's class (workers/budgets.py): who submitted it travels with
            # its task, as the rate-limit identity the API counted it under.
            task_kwargs = {**(params if task_kwargs is None else task_kwargs), "client": client}
        made = self.jobs.submit(
            job_type, params, job_spec.task, owner=owner, retention_s=retention,
            max_inflight=self.max_inflight, task_kwargs=task_kwargs, claim=claim, count=SUBMITTED,
            windows=plan.windows if plan else (),
        )  # fmt: skip
        if plan is not None:
            settle(plan, made.counts)  # 429 when over budget (then nothing was created)
        if made.outcome == "busy":
            full = f"{owner} already has {self.max_inflight} queued or running jobs"
            raise ApiError(429, "too_many_inflight", f"{full}: wait for some to finish",
                           headers={"Retry-After": str(INFLIGHT_RETRY_AFTER_S)})  # fmt: skip
        if made.outcome == "reused":
            raise ApiError(
                422, "idempotency_key_reused", "Idempotency-Key was already used with a different request"
            )
        job = made.job
        assert job is not None
        if made.outcome == "existing":
            return job, False
        try:
            publish(self.celery, self.jobs, job.id, job.task, job.attempt, kwargs=job.task_kwargs)
        except Exception:
            # Never leave a `queued` record that no worker will ever see, nor a key bound to it. It was
            # counted as submitted: it counts as finished (failed) too.
            failed = Counters.increment("stockq_jobs_finished_total", f"{job_type},failed")
            self.jobs.fail(job.id, "broker_unavailable", "the job could not be queued", counters=failed)
            if claim is not None:
                self._release_if(keys=[claim.key], args=[job.id])
            raise
        return job, True

    @staticmethod
    def _fingerprint(job_type: str, params: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps([job_type, params], sort_keys=True).encode()).hexdigest()

    def release(self, client: str, idempotency_key: str, job_id: str) -> None:
        """Free the caller's key if it still names `job_id` (a claim made meanwhile for a newer job stays)."""
        self._release_if(keys=[self._redis_key(client, idempotency_key)], args=[job_id])

    @staticmethod
    def _redis_key(client: str, key: str) -> str:
        # Scoped per client: another client's identical key never returns this client's job.
        return "stockq:idem:" + hashlib.sha256(f"{client}\n{key}".encode()).hexdigest()
