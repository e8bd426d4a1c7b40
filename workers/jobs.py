"""Our own job records in Redis (Celery reports PENDING for any id, known or not).

A job is a hash `stockq:job:<id>`; `stockq:jobs` is a sorted set of ids by submission time. Status
changes go through one Lua compare-and-set so a cancel and a start can never both win.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
JOB_TYPES = ("train", "predict", "predict_batch", "analyze", "ingest", "ping", "chart")

_JSON_FIELDS = ("params", "progress", "result", "error")

# KEYS[1] job hash, KEYS[2] its done-list; ARGV[1] allowed from-states (comma list), ARGV[2] new state,
# ARGV[3] json of extra fields, ARGV[4] '1' when the new state is final (wakes `wait_finished`).
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return status end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
local extra = cjson.decode(ARGV[3])
for k, v in pairs(extra) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[4] == '1' then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('EXPIRE', KEYS[2], 120)
end
return 'OK'
"""


# KEYS[1] job hash; ARGV: field, value pairs. Progress lands only on a running job: never on a finished
# one, nor on an expired one (which would come back as a hollow record).
_SET_IF_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class JobRegistry:
    def __init__(self, client: redis.Redis, retention_s: int) -> None:
        self.r = client
        self.retention_s = retention_s
        self._transition = client.register_script(_TRANSITION)
        self._set_if_running = client.register_script(_SET_IF_RUNNING)

    @staticmethod
    def key(job_id: str) -> str:
        return f"stockq:job:{job_id}"

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create(self, job_type: str, params: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        job_id = job_id or self.new_id()
        now = time.time()
        record = {
            "id": job_id,
            "type": job_type,
            "status": "queued",
            "stage": "",
            "params": json.dumps(params),
            "progress": json.dumps({}),
            "submitted_at": now,
        }
        pipe = self.r.pipeline()
        pipe.hset(self.key(job_id), mapping=record)
        pipe.expire(self.key(job_id), self.retention_s)
        pipe.zadd("stockq:jobs", {job_id: now})
        pipe.execute()
        return self.get(job_id) or {}

    def delete(self, job_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self.key(job_id))
        pipe.zrem("stockq:jobs", job_id)
        pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(self.key(job_id))
        if not raw:
            return None
        return _decode(raw)

    def list(self, status: str | None = None, job_type: str | None = None, limit: int = 50) -> list[dict]:
        cutoff = time.time() - self.retention_s
        self.r.zremrangebyscore("stockq:jobs", "-inf", cutoff)
        out: list[dict] = []
        start = 0
        while len(out) < limit:
            ids = self.r.zrevrange("stockq:jobs", start, start + 199)
            if not ids:
                break
            start += len(ids)
            pipe = self.r.pipeline()
            for job_id in ids:
                pipe.hgetall(self.key(job_id.decode()))
            for raw in pipe.execute():
                if not raw:
                    continue
                job = _decode(raw)
                if (status is None or job["status"] == status) and (
                    job_type is None or job["type"] == job_type
                ):
                    out.append(job)
                    if len(out) >= limit:
                        break
        return out

    def transition(self, job_id: str, from_states: Iterable[str], to_state: str, **fields: Any) -> bool | str:
        """True when applied; else the current status (or False when the job does not exist)."""
        extra = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        final = "1" if to_state in FINISHED else "0"
        res = self._transition(
            keys=[self.key(job_id), f"stockq:done:{job_id}"],
            args=[",".join(from_states), to_state, json.dumps(extra), final],
        )
        if res is None:
            return False
        res = res.decode() if isinstance(res, bytes) else res
        return True if res == "OK" else res

    def start(self, job_id: str) -> bool:
        # `running` is allowed: a task redelivered after its worker died starts the same job again.
        return self.transition(job_id, ("queued", "running"), "running", started_at=time.time()) is True

    def succeed(self, job_id: str, result: Any) -> bool:
        return (
            self.transition(
                job_id, ("running", "queued"), "succeeded", result=result, finished_at=time.time(), stage=""
            )
            is True
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return (
            self.transition(
                job_id,
                ("running", "queued"),
                "failed",
                error={"code": code, "message": message},
                finished_at=time.time(),
            )
            is True
        )

    def mark_cancelled(self, job_id: str) -> bool:
        return (
            self.transition(
                job_id,
                ("running", "queued"),
                "cancelled",
                error={"code": "cancelled", "message": "cancelled by request"},
                finished_at=time.time(),
            )
            is True
        )

    def request_cancel(self, job_id: str) -> str:
        """`cancelled` (was queued), `cancelling` (running: stops at its next checkpoint),
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
            self._set_if_running(keys=[self.key(job_id)], args=["cancel_requested", 1])
            return "cancelling"
        return "finished"

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self.key(job_id), "cancel_requested") == b"1"

    def wait_finished(self, job_id: str, timeout_s: float, client: redis.Redis) -> dict[str, Any] | None:
        """Block up to `timeout_s` for the job to finish (one BLPOP, no polling); the record either way.

        `client` must allow a socket timeout longer than `timeout_s`."""
        job = self.get(job_id)
        if job is None or job["status"] in FINISHED or timeout_s <= 0:
            return job
        done_key = f"stockq:done:{job_id}"
        if client.blpop([done_key], timeout=timeout_s) is not None:
            # Put the token back: another request may be waiting on the same job.
            pipe = client.pipeline()
            pipe.rpush(done_key, "1")
            pipe.expire(done_key, 120)
            pipe.execute()
        return self.get(job_id)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._set_if_running(keys=[self.key(job_id)], args=["progress", json.dumps(progress)])

    def set_stage(self, job_id: str, stage: str) -> None:
        self._set_if_running(keys=[self.key(job_id)], args=["stage", stage])


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    job: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for field in _JSON_FIELDS:
        job[field] = json.loads(job[field]) if job.get(field) else None
    for field in ("submitted_at", "started_at", "finished_at"):
        job[field] = float(job[field]) if job.get(field) else None
    job["cancel_requested"] = job.get("cancel_requested") == "1"
    job["stage"] = job.get("stage") or None
    return job
