"""Our own job records in Redis (Celery reports PENDING for any id, known or not).

A job is a hash `stockq:job:<id>`; `stockq:jobs` is a sorted set of ids by submission time. Status
changes are Redis scripts (workers/job_lua.py) fenced by the attempt number. A running job holds a lease
(`lease_expires_at`, indexed in `stockq:leases`) that its worker process renews; the reaper requeues the
jobs whose lease expired.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from workers import job_lua
from workers.counters import PREFIX as COUNTER_PREFIX
from workers.counters import Increments


class JobStatus(StrEnum):
    """A job's life: queued -> running -> succeeded | failed | cancelled. A running job whose worker is
    lost, preempted or hands it on goes back to queued with its attempt number one higher."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(s.value for s in JobStatus)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
JOB_TYPES = ("train", "predict", "predict_batch", "analyze", "ingest", "ping", "chart", "evaluate")
# A running job of these types stops at its next stage boundary when cancelled (an evaluation between
# origins); a running ping is over before a cancel could reach it (the API answers 409 not_cancellable).
CANCELLABLE_RUNNING = frozenset(
    {"train", "predict", "predict_batch", "analyze", "ingest", "chart", "evaluate"}
)
# A cancel that arrives once these have recorded their work (a model registered, an evaluation logged)
# keeps the job's result: the registry already holds it, and the record must say so.
KEEPS_LATE_RESULT = frozenset({"train", "evaluate"})

INDEX = "stockq:jobs"  # job id -> submission time, every job
EXPIRY_INDEX = "stockq:jobs:expiry"  # "owner|job id" -> when the record expires (trimmed on submit)
LEASES = "stockq:leases"  # job id -> lease expiry (unix time) of every running job
QUEUED = "stockq:queued"  # job id -> when it was (re)queued, every queued job
DEAD_LETTER = "stockq:deadletter"  # job id -> when it was failed for losing its worker too often

_JSON_FIELDS = ("params", "progress", "result", "error", "attempts", "task_args", "task_kwargs")
_INT_FIELDS = ("attempt", "lost", "resumed_from_epoch", "executions")
_TIME_FIELDS = ("submitted_at", "started_at", "finished_at", "lease_expires_at")


def chart_key(job_id: str) -> str:
    """A rendered chart's bytes, kept for minutes beside its job (never inside the record)."""
    return f"stockq:chart:{job_id}"


def owner_index(owner: str) -> str:
    return f"stockq:jobs:{owner}"


def inflight_key(owner: str) -> str:
    """The owner's queued and running jobs (the in-flight cap counts them)."""
    return f"stockq:inflight:{owner}"


class OverCapacity(Exception):
    pass


@dataclass(frozen=True)
class Window:
    """A rate-limit window a request counts in: its counter's key, the budget and the length in seconds."""

    key: str
    budget: int
    seconds: int


@dataclass(frozen=True)
class Submission:
    """What JobRegistry.submit did: `created` (job), `existing` (job: the Idempotency-Key's), `limited`,
    `busy` (in-flight cap) or `reused` (the key with another body); and the count in each window."""

    outcome: str
    job: dict[str, Any] | None
    counts: list[int]


@dataclass(frozen=True)
class Claim:
    """An Idempotency-Key as stored: its Redis key, the request's fingerprint, how long the claim lasts."""

    key: str
    fingerprint: str
    ttl_s: int


@dataclass(frozen=True)
class Delivery:
    """What a worker runs: one job at one attempt (its fencing token)."""

    job_id: str
    attempt: int


def _text(res: Any) -> str | None:
    if res is None:
        return None
    return res.decode() if isinstance(res, bytes) else str(res)


class JobRegistry:
    def __init__(self, client: redis.Redis, retention_s: int) -> None:
        self.r = client
        self.retention_s = retention_s
        self._create = client.register_script(job_lua.CREATE)
        self._transition = client.register_script(job_lua.TRANSITION)
        self._start = client.register_script(job_lua.START)
        self._stage = client.register_script(job_lua.STAGE)
        self._executed = client.register_script(job_lua.EXECUTED)
        self._renew = client.register_script(job_lua.RENEW)
        self._set_if_running = client.register_script(job_lua.SET_IF_RUNNING)
        self._requeue = client.register_script(job_lua.REQUEUE)
        self._retry = client.register_script(job_lua.RETRY)
        self._republish = client.register_script(job_lua.REPUBLISH)

    @staticmethod
    def key(job_id: str) -> str:
        return f"stockq:job:{job_id}"

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create(
        self,
        job_type: str,
        params: dict[str, Any],
        task: str,
        *,
        owner: str = "anonymous",
        retention_s: int | None = None,
        max_inflight: int = 1_000_000,
        task_kwargs: dict[str, Any] | None = None,
    ) -> dict:
        """A queued record at attempt 1, owned by `owner`. `task` (a Celery name) and its keyword arguments
        (default: `params`) are kept so that a requeue can publish the job again. Raises OverCapacity
        when the owner already has `max_inflight` unfinished jobs."""
        made = self.submit(
            job_type, params, task, owner=owner, retention_s=retention_s, max_inflight=max_inflight,
            task_kwargs=task_kwargs,
        )  # fmt: skip
        if made.outcome == "busy":
            raise OverCapacity(f"{owner} already has {max_inflight} queued or running jobs")
        assert made.job is not None
        return made.job

    def submit(
        self,
        job_type: str,
        params: dict[str, Any],
        task: str,
        *,
        owner: str = "anonymous",
        retention_s: int | None = None,
        max_inflight: int = 1_000_000,
        task_kwargs: dict[str, Any] | None = None,
        claim: Claim | None = None,
        count: str | None = None,
        windows: Sequence[Window] = (),
    ) -> Submission:
        """create() with, in the same round trip, the request's rate-limit `windows` (counted first: over
        any budget, nothing else happens), its Idempotency-Key `claim` (a replay gets the job holding the
        key) and the counter `count` (a Counters name, labelled by the job type)."""
        job_id = self.new_id()
        now = repr(time.time())
        record = {
            "id": job_id, "type": job_type, "owner": owner, "status": "queued", "stage": "",
            "params": json.dumps(params), "progress": "{}", "submitted_at": now, "attempt": "1",
            "lost": "0", "attempts": "[]", "task": task, "task_args": "[]",
            "task_kwargs": json.dumps(params if task_kwargs is None else task_kwargs),
        }  # fmt: skip
        retention = retention_s or self.retention_s
        keys = [self.key(job_id), INDEX, owner_index(owner), EXPIRY_INDEX, inflight_key(owner),
                COUNTER_PREFIX + count if count else "", claim.key if claim else "",
                *(w.key for w in windows)]  # fmt: skip
        args: list[Any] = [job_id, now, retention, max_inflight, owner, job_type,
                           claim.fingerprint if claim else "", claim.ttl_s if claim else 0,
                           len(windows)]  # fmt: skip
        for w in windows:
            args += [w.budget, w.seconds]
        for field_value in record.items():
            args += field_value
        res = self._create(keys=keys, args=args)
        outcome, counts = _text(res[0]) or "", [int(c) for c in res[1]]
        if outcome == "existing":
            return Submission(outcome, _decode(dict(zip(res[2][::2], res[2][1::2], strict=True))), counts)
        if outcome != "OK":
            return Submission(outcome, None, counts)
        # What _decode would read back, from the values at hand (no second encode and parse).
        job: dict[str, Any] = {
            **record, **dict.fromkeys(_JSON_FIELDS), **dict.fromkeys(_TIME_FIELDS),
            **dict.fromkeys(_INT_FIELDS, 0), "params": params, "progress": {}, "attempts": [],
            "task_args": [], "task_kwargs": params if task_kwargs is None else task_kwargs,
            "submitted_at": float(now), "attempt": 1, "job_id": job_id, "cancel_requested": False,
            "stage": None,
        }  # fmt: skip
        return Submission("created", job, counts)

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(self.key(job_id))
        return _decode(raw) if raw else None

    def list(
        self,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        *,
        owner: str | None = None,
        cursor: float | None = None,
    ) -> tuple[list[dict], float | None]:
        """Jobs newest first (of `owner`, or of everyone), and the cursor of the next page (None: last).

        A cursor is the submission time of the last job returned; the next page starts just below it."""
        index = INDEX if owner is None else owner_index(owner)
        top: str | float = "+inf" if cursor is None else f"({cursor!r}"
        out: list[dict] = []
        while len(out) < limit:
            rows = self.r.zrevrangebyscore(index, top, "-inf", start=0, num=200, withscores=True)
            if not rows:
                return out, None
            pipe = self.r.pipeline()
            for job_id, _ in rows:
                pipe.hgetall(self.key(job_id.decode()))
            for (_, score), raw in zip(rows, pipe.execute(), strict=True):
                top = f"({score!r}"
                if not raw:
                    continue
                job = _decode(raw)
                wanted = job_type is None or job["type"] == job_type
                if wanted and (status is None or job["status"] == status):
                    out.append(job)
                    if len(out) >= limit:
                        return out, score
        return out, None

    def transition(
        self,
        job_id: str,
        from_states: Iterable[str],
        to_state: str,
        *,
        attempt: int | None = None,
        outcome: str = "",
        counters: Increments = (),
        **fields: Any,
    ) -> bool | str:
        """True when applied; else the current status, 'stale' (another attempt owns the job) or False
        (no such job). `attempt` None: not a delivery (the API, a holder finishing its waiters).
        `counters` (workers/counters.py) are added in the same call, only when it applies."""
        extra = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        final = "1" if to_state in FINISHED else "0"
        fence = "" if attempt is None else str(attempt)
        args = [",".join(from_states), to_state, json.dumps(extra), final, fence, outcome, time.time()]
        keys = [self.key(job_id), f"stockq:done:{job_id}", LEASES]
        res = _text(self._transition(keys=keys, args=[*args, json.dumps(counters)]))
        if res is None:
            return False
        return True if res == "OK" else res

    def start(self, delivery: Delivery, worker: str, lease_s: float) -> str:
        """'OK' when this delivery now runs the job; else why not: 'stale', 'missing' or the status."""
        return self.begin(delivery, worker, lease_s)[0]

    def begin(self, delivery: Delivery, worker: str, lease_s: float) -> tuple[str, str | None]:
        """start(), and the job's owner when it started (the same round trip)."""
        keys = [self.key(delivery.job_id), LEASES]
        res = self._start(keys=keys, args=[delivery.attempt, worker, time.time(), lease_s])
        if isinstance(res, list):
            return "OK", _text(res[1])
        return _text(res) or "", None

    def enter_stage(self, delivery: Delivery, stage: str) -> bool:
        """Set the running attempt's stage; False when a cancel was requested (stop at this boundary)."""
        return self._stage(keys=[self.key(delivery.job_id)], args=[delivery.attempt, stage]) != 2

    def executed(self, job_id: str) -> bool:
        """Count one execution of the job's work; True when a cancel was requested meanwhile."""
        return self._executed(keys=[self.key(job_id)]) == 1

    def renew(self, delivery: Delivery, lease_s: float) -> bool:
        """Extend the lease; False when this attempt no longer owns the job (stop working on it)."""
        keys = [self.key(delivery.job_id), LEASES]
        return bool(self._renew(keys=keys, args=[delivery.attempt, time.time(), lease_s]))

    def expired_leases(self, now: float, limit: int = 100) -> list[str]:
        return [i.decode() for i in self.r.zrangebyscore(LEASES, "-inf", now, start=0, num=limit)]

    def requeue(
        self,
        delivery: Delivery,
        *,
        outcome: str,
        lost: bool,
        max_lost: int,
        stage: str,
        reaping: bool = False,
        **fields: Any,
    ) -> int | str | None:
        """Give up a running attempt: the new attempt number (publish it), 'failed' when the job lost its
        worker `max_lost` times (dead-lettered), or None when this attempt no longer owns the job (or,
        when `reaping`, its lease has not expired)."""
        extra = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        j = delivery.job_id
        flags = ["1" if lost else "0", max_lost, stage, json.dumps(extra), "1" if reaping else "0"]
        res = _text(
            self._requeue(
                keys=[self.key(j), f"stockq:done:{j}", LEASES, DEAD_LETTER],
                args=[delivery.attempt, time.time(), outcome, *flags],
            )
        )
        if res is None:
            return None
        return "failed" if res == "failed" else int(res)

    def queued_before(self, cutoff: float, limit: int = 100) -> list[str]:
        return [i.decode() for i in self.r.zrangebyscore(QUEUED, "-inf", cutoff, start=0, num=limit)]

    def mark_received(self, delivery: Delivery, worker: str) -> None:
        """A worker's main process took this delivery's message (it may die before starting it)."""
        self.r.hset(
            self.key(delivery.job_id), mapping={"received_by": worker, "received_attempt": delivery.attempt}
        )

    def republish(self, delivery: Delivery, held_by: str) -> int | None:
        """A queued attempt whose message was lost: the next attempt number to publish, or None."""
        res = _text(
            self._republish(keys=[self.key(delivery.job_id)], args=[delivery.attempt, time.time(), held_by])
        )
        return None if res is None else int(res)

    def retry(self, job_id: str) -> int | str | None:
        """Queue a failed or cancelled job again: its new attempt; else its status (None: missing)."""
        res = _text(self._retry(keys=[self.key(job_id), DEAD_LETTER], args=[time.time()]))
        if res is None:
            return None
        return int(res) if res.isdigit() else res

    def succeed(
        self, job_id: str, result: Any, attempt: int | None = None, counters: Increments = ()
    ) -> bool:
        done = self.transition(
            job_id, ("running", "queued"), "succeeded", attempt=attempt, outcome="succeeded",
            result=result, finished_at=time.time(), stage="", counters=counters,
        )  # fmt: skip
        return done is True

    def fail(
        self, job_id: str, code: str, message: str, attempt: int | None = None, counters: Increments = (),
        **info: Any,
    ) -> bool:  # fmt: skip
        done = self.transition(
            job_id, ("running", "queued"), "failed", attempt=attempt, outcome="failed",
            error={"code": code, "message": message, **info}, finished_at=time.time(), counters=counters,
        )  # fmt: skip
        return done is True

    def mark_cancelled(self, job_id: str, attempt: int | None = None, counters: Increments = ()) -> bool:
        done = self.transition(
            job_id, ("running", "queued"), "cancelled", attempt=attempt, outcome="cancelled",
            error={"code": "cancelled", "message": "cancelled by request"}, finished_at=time.time(),
            counters=counters,
        )  # fmt: skip
        return done is True

    def request_cancel(self, job_id: str) -> str:
        """`cancelled` (was queued), `cancelling` (running: stops at its next stage boundary),
        `finished` (too late) or `missing`."""
        res = self.transition(
            job_id,
            ("queued",),
            "cancelled",
            error={"code": "cancelled", "message": "cancelled before it ran"},
            finished_at=time.time(),
        )
        if res is True:
            return "cancelled"
        if res is False:
            return "missing"
        if res == "running":
            self._set_if_running(keys=[self.key(job_id)], args=["", "cancel_requested", 1])
            return "cancelling"
        return "finished"

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self.key(job_id), "cancel_requested") == b"1"

    def wait_finished(
        self, job_id: str, timeout_s: float, client: redis.Redis, known: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Block up to `timeout_s` for the job to finish; the record either way. The finishing script
        pushes a token onto the job's done-list, so one BLPOP wakes on the finish itself (no polling).

        `known`: the record as just read or created (the submit's round trip), read again otherwise; a job
        that finishes after that read leaves its token for 120 s, which the BLPOP finds at once.
        `client` must allow a socket timeout longer than `timeout_s`."""
        job = self.get(job_id) if known is None else known
        if job is None or job["status"] in FINISHED or timeout_s <= 0:
            return job
        done_key = f"stockq:done:{job_id}"
        woke = client.blpop([done_key], timeout=timeout_s) is not None
        pipe = client.pipeline(transaction=False)
        if woke:
            # Put the token back: another request may be waiting on the same job.
            pipe.rpush(done_key, "1")
            pipe.expire(done_key, 120)
        pipe.hgetall(self.key(job_id))
        raw = pipe.execute()[-1]
        return _decode(raw) if raw else None

    def set_fields(self, delivery: Delivery, **fields: Any) -> bool:
        """Fields of the running attempt (progress, stage, resumed_from_epoch); False when stale."""
        args: list[Any] = [delivery.attempt]
        for k, v in fields.items():
            args += [k, json.dumps(v) if k in _JSON_FIELDS else v]
        return bool(self._set_if_running(keys=[self.key(delivery.job_id)], args=args))


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    job: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for field in _JSON_FIELDS:
        job[field] = json.loads(job[field]) if job.get(field) else None
    for field in _TIME_FIELDS:
        job[field] = float(job[field]) if job.get(field) else None
    for field in _INT_FIELDS:
        job[field] = int(job[field]) if job.get(field) else 0
    job["job_id"] = job.get("id")
    job["cancel_requested"] = job.get("cancel_requested") == "1"
    job["stage"] = job.get("stage") or None
    return job
