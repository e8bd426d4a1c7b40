"""The job registry in Redis (Celery reports PENDING for any id, known or not): every state change is a
script of workers/jobs/lua.py fenced by the attempt number; the record is workers/jobs/model.JobRecord.

A running job holds a lease (`lease_expires_at`, in Redis time, indexed in `stockq:leases`) that its
worker process renews; the reaper requeues the jobs whose lease expired. Every state change that needs a
message (a new job, a requeue, a retry, a republish) writes its outbox entry in the same script; the
publisher clears it once the broker took the message, and the reaper publishes again what stays.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.clock import server_time
from workers.counters import PREFIX as COUNTER_PREFIX
from workers.counters import Increments
from workers.jobs import keys, lua
from workers.jobs.model import (
    FINISHED,
    CancelOutcome,
    Change,
    Delivery,
    JobRecord,
    JobStatus,
    Requeue,
    RequeueOutcome,
    Retry,
    RetryOutcome,
    Start,
    encode_fields,
)
from workers.jobs.specs import cancellable_running

log = logging.getLogger(__name__)
LOG_CAP = 500  # lines a job's log keeps (the newest)
# A job reference as people type it: the start of an id (uuid4 hex), long enough to be worth looking up.
_ID_REF = re.compile(r"[0-9a-f]{4,32}")
MAX_CANDIDATES = 10


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
    job: JobRecord | None
    counts: list[int]


@dataclass(frozen=True)
class Claim:
    """An Idempotency-Key as stored: its Redis key, the request's fingerprint, how long the claim lasts."""

    key: str
    fingerprint: str
    ttl_s: int


def _text(res: Any) -> str | None:
    if res is None:
        return None
    return res.decode() if isinstance(res, bytes) else str(res)


class JobRegistry:
    def __init__(self, client: redis.Redis, retention_s: int) -> None:
        self.r = client
        self.retention_s = retention_s
        self._scripts = {
            name: client.register_script(lua.script(getattr(lua, name)))
            for name in ("CREATE", "TRANSITION", "FINISH", "CANCEL", "START", "STAGE", "RENEW",
                         "SET_IF_RUNNING", "REQUEUE", "RETRY", "REPUBLISH", "OUTBOX_DUE", "TRIM",
                         "RECEIVED", "APPEND_LOG", "LOG_LINES")
        }  # fmt: skip

    def _run(self, name: str, key: str, args: Sequence[Any]) -> Any:
        return self._scripts[name](keys=[key], args=list(args))

    key = staticmethod(keys.job)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def now(self) -> float:
        """The Redis server's clock: what every lease and timestamp of the registry is measured in."""
        return server_time(self.r)

    # -- submission -------------------------------------------------------------------------------
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
    ) -> JobRecord:
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
        job = JobRecord(
            id=self.new_id(), type=job_type, owner=owner, status=JobStatus.QUEUED, params=params, task=task,
            task_kwargs=params if task_kwargs is None else task_kwargs,
        )  # fmt: skip
        retention = retention_s or self.retention_s
        key_list = [keys.job(job.id), keys.inflight(owner), COUNTER_PREFIX + count if count else "",
                    claim.key if claim else "", *(w.key for w in windows)]  # fmt: skip
        args: list[Any] = [job.id, retention, max_inflight, owner, job_type,
                           claim.fingerprint if claim else "", claim.ttl_s if claim else 0,
                           len(windows)]  # fmt: skip
        for w in windows:
            args += [w.budget, w.seconds]
        for field_value in job.to_redis().items():
            args += field_value
        res = self._scripts["CREATE"](keys=key_list, args=args)
        outcome, counts = _text(res[0]) or "", [int(c) for c in res[1]]
        if outcome == "existing":
            raw = dict(zip(res[2][::2], res[2][1::2], strict=True))
            return Submission(outcome, JobRecord.from_redis(raw), counts)
        if outcome != "OK":
            return Submission(outcome, None, counts)
        job.submitted_at = float(_text(res[2]) or 0)
        return Submission("created", job, counts)

    def published(self, job_id: str, attempt: int) -> None:
        """The broker took the message of this attempt: its outbox entry is done."""
        self.r.zrem(keys.OUTBOX, f"{job_id}|{attempt}")

    def outbox_due(self, grace_s: float, limit: int = 100) -> list[Delivery]:
        """Queued attempts whose message was never confirmed within `grace_s` (their entries wait another
        grace before they are due again)."""
        flat = self._scripts["OUTBOX_DUE"](keys=[], args=[grace_s, limit])
        return [Delivery(_text(flat[i]) or "", int(flat[i + 1])) for i in range(0, len(flat), 2)]

    # -- reading ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        raw = self.r.hgetall(keys.job(job_id))
        return JobRecord.from_redis(raw) if raw else None

    def list(
        self,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        *,
        owner: str | None = None,
        cursor: float | None = None,
    ) -> tuple[list[JobRecord], float | None]:
        """Jobs newest first (of `owner`, or of everyone), and the cursor of the next page (None: last).

        A filter reads its own index (workers/jobs/keys.filtered_index), so a page costs O(page) however
        many jobs are stored. A cursor is the submission time of the last job returned; the next page
        starts just below it."""
        index = keys.filtered_index(owner, status, job_type)
        top: str = "+inf" if cursor is None else f"({cursor!r}"
        out: list[JobRecord] = []
        while len(out) < limit:
            want = limit - len(out)
            rows = self.r.zrevrangebyscore(index, top, "-inf", start=0, num=want, withscores=True)
            if not rows:
                return out, None
            pipe = self.r.pipeline()
            for job_id, _ in rows:
                pipe.hgetall(keys.job(job_id.decode()))
            for (_, score), raw in zip(rows, pipe.execute(), strict=True):
                top = f"({score!r}"
                if raw:  # an expired record not yet trimmed from the index is skipped
                    out.append(JobRecord.from_redis(raw))
            if len(rows) < want:
                return out, None
        return out, float(top[1:])

    def resolve_id(self, owner: str | None, ref: str) -> list[str]:
        """The ids of `owner`'s jobs (None: everyone's) that are `ref` or start with it, newest first: none,
        one, or several (ambiguous: at most MAX_CANDIDATES). `ref` is at least 4 hex digits, else nothing is
        looked up. Scans the owner's id index (ZSCAN, no record read but the few matches' existence)."""
        ref = ref.strip().lower()
        if not _ID_REF.fullmatch(ref):
            return []
        index = keys.INDEX if owner is None else keys.owner_index(owner)
        if len(ref) == 32:  # a whole id: one look, no scan
            found = [(ref, 0.0)] if self.r.zscore(index, ref) is not None else []
        else:
            found = [(i.decode(), t) for i, t in self.r.zscan_iter(index, match=f"{ref}*", count=1000)]
        found.sort(key=lambda match: -match[1])
        pipe = self.r.pipeline(transaction=False)
        for job_id, _ in found:
            pipe.exists(keys.job(job_id))
        # An index keeps an expired record's id until the next trim: it is no longer a job.
        alive = [job_id for (job_id, _), there in zip(found, pipe.execute(), strict=True) if there]
        return alive[:MAX_CANDIDATES]

    def log_lines(
        self, job_id: str, after: int = 0, limit: int = LOG_CAP
    ) -> tuple[list[dict[str, Any]], int]:
        """The job's log lines numbered `after` and on (each line's `n`, from 0 for its first), at most
        `limit`, oldest first, and the cursor to read on from. Lines trimmed away (past the newest
        LOG_CAP) are skipped: the first line returned may be numbered above `after`."""
        after = max(0, after)
        if limit <= 0:
            return [], after
        raw = self._scripts["LOG_LINES"](keys=[keys.job_log(job_id)], args=[after, min(limit, LOG_CAP)])
        lines = [json.loads(line.decode(errors="replace")) for line in raw]
        return lines, lines[-1]["n"] + 1 if lines else after

    def append_log(self, job_id: str, line: dict[str, Any]) -> int:
        """Append one line (a JSON object: level, logger, message...) to the job's log, stamped with Redis
        time and numbered, in one round trip (workers/jobs/lua.py APPEND_LOG); its number, or -1 when the
        record is gone."""
        args = [json.dumps(line), LOG_CAP]
        return int(self._scripts["APPEND_LOG"](keys=[keys.job(job_id), keys.job_log(job_id)], args=args))

    def count(self, status: str, job_type: str) -> int:
        """Everyone's stored jobs of one status and type (the exporter's gauge): one ZCARD."""
        return int(self.r.zcard(keys.filtered_index(None, status, job_type)))

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(keys.job(job_id), "cancel_requested") == b"1"

    def wait_finished(
        self, job_id: str, timeout_s: float, client: redis.Redis, known: JobRecord | None = None
    ) -> JobRecord | None:
        """Block up to `timeout_s` for the job to finish; the record either way. The finishing script
        pushes a token onto the job's done-list, so one BLPOP wakes on the finish itself (no polling).

        `known`: the record as just read or created (the submit's round trip), read again otherwise; a job
        that finishes after that read leaves its token for 120 s, which the BLPOP finds at once.
        `client` must allow a socket timeout longer than `timeout_s`."""
        job = self.get(job_id) if known is None else known
        if job is None or job.status in FINISHED or timeout_s <= 0:
            return job
        done_key = keys.done_list(job_id)
        woke = client.blpop([done_key], timeout=timeout_s) is not None
        pipe = client.pipeline(transaction=False)
        if woke:
            # Put the token back: another request may be waiting on the same job.
            pipe.rpush(done_key, "1")
            pipe.expire(done_key, 120)
        pipe.hgetall(keys.job(job_id))
        raw = pipe.execute()[-1]
        return JobRecord.from_redis(raw) if raw else None

    # -- state changes ----------------------------------------------------------------------------
    def transition(
        self,
        job_id: str,
        from_states: Iterable[str],
        to_state: str,
        *,
        attempt: int | None = None,
        counters: Increments = (),
        **fields: Any,
    ) -> Change:
        """Move the job from one of `from_states` to `to_state` (a final one: with its finished_at and
        bookkeeping). `attempt` None: not a delivery (the API, a holder finishing its waiters)."""
        fence = "" if attempt is None else str(attempt)
        args = [",".join(from_states), to_state, json.dumps(encode_fields(fields)), fence,
                json.dumps(counters)]  # fmt: skip
        return Change(_text(self._run("TRANSITION", keys.job(job_id), args)))

    def finish(
        self, job_id: str, status: JobStatus, payload: Any, *, attempt: int | None = None,
        keeps_late_result: bool = False, counters: dict[str, Increments] | None = None,
    ) -> JobStatus | Change:  # fmt: skip
        """Record how a job's work ended (succeeded: `payload` is the result; failed or cancelled: the
        error), its execution and `counters[status]`, in one step. Returns the status recorded (a success
        whose cancel was requested meanwhile is recorded cancelled, unless `keeps_late_result`), or the
        Change that refused it."""
        fence = "" if attempt is None else str(attempt)
        args = [fence, str(status), json.dumps(payload), "1" if keeps_late_result else "0",
                json.dumps(counters or {})]  # fmt: skip
        res = _text(self._run("FINISH", keys.job(job_id), args)) or ""
        if res not in JobStatus._value2member_map_:
            return Change(res)
        error = payload if res != JobStatus.SUCCEEDED and isinstance(payload, dict) else {}
        why = f": {error.get('code')}: {error.get('message')}" if res == status and error else ""
        # Named by id: a single-flight holder finishes its waiters' records inside its own job's context.
        log.info("job %s %s%s", job_id, res, why)
        return JobStatus(res)

    def fail(
        self, job_id: str, code: str, message: str, attempt: int | None = None, counters: Increments = (),
        **info: Any,
    ) -> bool:  # fmt: skip
        error = {"code": code, "message": message, **info}
        done = self.finish(job_id, JobStatus.FAILED, error, attempt=attempt, counters={"failed": counters})
        return done == JobStatus.FAILED

    def succeed(
        self, job_id: str, result: Any, attempt: int | None = None, counters: Increments = ()
    ) -> bool:
        done = self.finish(job_id, JobStatus.SUCCEEDED, result, attempt=attempt,
                           counters={"succeeded": counters})  # fmt: skip
        return done == JobStatus.SUCCEEDED

    def start(self, delivery: Delivery, worker: str, lease_s: float) -> Start:
        return self.begin(delivery, worker, lease_s)[0]

    def begin(self, delivery: Delivery, worker: str, lease_s: float) -> tuple[Start, str | None]:
        """Run this delivery's attempt: (STARTED, the job's owner), or why not."""
        res = self._run("START", keys.job(delivery.job_id), [delivery.attempt, worker, lease_s])
        if isinstance(res, list):
            return Start.STARTED, _text(res[1])
        return Start(_text(res)), None

    def enter_stage(self, delivery: Delivery, stage: str) -> bool:
        """Set the running attempt's stage; False when a cancel was requested (stop at this boundary)."""
        res = self._run("STAGE", keys.job(delivery.job_id), [delivery.attempt, stage])
        if res == 2:
            log.info("cancel requested: stopping before stage %s", stage)
        elif res == 1:
            log.info("stage %s", stage)  # the job's own log (workers/job_log.py) shows its stages in order
        return res != 2

    def renew(self, delivery: Delivery, lease_s: float) -> bool:
        """Extend the lease; False when this attempt no longer owns the job (stop working on it)."""
        return bool(self._run("RENEW", keys.job(delivery.job_id), [delivery.attempt, lease_s]))

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Running jobs whose lease expired by the Redis server's clock."""
        found = self.r.zrangebyscore(keys.LEASES, "-inf", self.now(), start=0, num=limit)
        return [i.decode() for i in found]

    def requeue(
        self, delivery: Delivery, *, outcome: str, lost: bool, max_lost: int, stage: str,
        reaping: bool = False, **fields: Any,
    ) -> Requeue:  # fmt: skip
        """Give up a running attempt: REQUEUED with the new attempt (publish it: its outbox entry is
        written), DEAD_LETTERED when the job lost its worker `max_lost` times, NOT_OWNER when this attempt
        no longer owns the job (or, when `reaping`, its lease has not expired), CANCELLED when its cancel
        was requested (it ends here)."""
        args = [delivery.attempt, outcome, "1" if lost else "0", max_lost, stage,
                json.dumps(encode_fields(fields)), "1" if reaping else "0"]  # fmt: skip
        res = self._run("REQUEUE", keys.job(delivery.job_id), args)
        if isinstance(res, list):
            return Requeue(RequeueOutcome.REQUEUED, int(res[1]))
        ended = {"failed": RequeueOutcome.DEAD_LETTERED, "cancelled": RequeueOutcome.CANCELLED}
        return Requeue(ended.get(_text(res) or "", RequeueOutcome.NOT_OWNER))

    def queued_before(self, cutoff: float, limit: int = 100) -> list[str]:
        found = self.r.zrangebyscore(keys.QUEUED, "-inf", cutoff, start=0, num=limit)
        return [i.decode() for i in found]

    def mark_received(self, delivery: Delivery, worker: str) -> None:
        """A worker's main process took this delivery's message (it may die before starting it)."""
        self._run("RECEIVED", keys.job(delivery.job_id), [delivery.attempt, worker])

    def trim_expired(self, limit: int = 1000) -> int:
        """Drop up to `limit` expired records' ids from every index; how many were dropped."""
        return int(self._scripts["TRIM"](keys=[], args=[limit]))

    def republish(self, delivery: Delivery, held_by: str) -> int | None:
        """A queued attempt whose message was lost: the next attempt number to publish, or None."""
        res = _text(self._run("REPUBLISH", keys.job(delivery.job_id), [delivery.attempt, held_by]))
        return None if res is None else int(res)

    def retry(self, job_id: str, max_inflight: int = 1_000_000) -> Retry:
        """Queue a failed or cancelled job again (attempt + 1), within its owner's in-flight cap."""
        res = self._run("RETRY", keys.job(job_id), [max_inflight])
        if isinstance(res, list):
            return Retry(RetryOutcome.QUEUED, int(res[1]))
        text = _text(res) or "missing"
        if text in ("missing", "busy"):
            return Retry(RetryOutcome(text))
        return Retry(RetryOutcome.NOT_RETRYABLE, status=JobStatus(text))

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel, decided and applied in one script (workers/jobs/lua.py CANCEL)."""
        types = ",".join(sorted(cancellable_running()))
        return CancelOutcome(_text(self._run("CANCEL", keys.job(job_id), [types])))

    def set_fields(self, delivery: Delivery, **fields: Any) -> bool:
        """Fields of the running attempt (progress, stage, resumed_from_epoch); False when stale."""
        args: list[Any] = [delivery.attempt]
        for k, v in encode_fields(fields).items():
            args += [k, v]
        return bool(self._run("SET_IF_RUNNING", keys.job(delivery.job_id), args))
