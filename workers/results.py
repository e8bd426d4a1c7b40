"""Result bytes on the evicting cache Redis (settings.cache_url), never on the `noeviction` job Redis.

Charts and batch forecasts (workers/jobs/specs.py `result_on_cache`) write their bytes under a key of their
own (keys.chart / keys.result_bytes) for settings.short_job_retention_s; the job record keeps only a small
descriptor: what the bytes are, how many, where they are and until when (the cache Redis's clock). A full
job Redis fails every write for every tenant; a full cache Redis only evicts, and what it evicts a client
asks for again.

Each tenant may hold at most settings.tenant_cache_bytes there at once, so one tenant cannot evict everyone
else's caches: the bytes are counted in the same script that writes them (keys.tenant_bytes, a hash of
bytes written per minute, on the cache Redis) and released when the last bytes of a minute have expired.
Past the budget the job fails `result_budget_exceeded` (the chart route answers 429): only the worker
knows how many bytes a result takes, and a refused write leaves nothing behind. Evicted bytes stay counted
until their TTL would have ended (never less than what is held); an evicted counter forgets them (it is
touched on every write, so LRU takes it last).

Rendered charts are kept too, for the same ticker, model version, as-of date and forecast, so a chart
asked again is copied, not drawn again. They are shared by every tenant and charged to none: there is at
most one per served model, ticker and format, and they expire like the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import redis

from ml.errors import StockqError
from stockq.settings import Settings
from workers.jobs import JOB_SPECS, JobRecord, JobStatus, keys

JSON = "application/json"
# Bytes written in one minute are counted under that minute and released together once the last of them
# expired: a budget check reads at most ttl / 60 + 1 fields, however many results the tenant holds.
BUDGET_WINDOW_S = 60

# KEYS[1] the tenant's byte counter (a hash: window start -> bytes written in it), KEYS[2] the bytes' key.
# ARGV[1] the bytes, ARGV[2] the tenant's budget, ARGV[3] their TTL, ARGV[4] the counter's window.
# Returns {1, bytes held, expires at} once written, or {0, bytes held, seconds until some are released
# (-1: never, the result alone is over the budget)} when over the budget (nothing written).
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local size, budget = string.len(ARGV[1]), tonumber(ARGV[2])
local ttl, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local held, oldest = 0, nil
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  local start = tonumber(counts[i])
  if start + window + ttl <= now then
    redis.call('HDEL', KEYS[1], counts[i])
  else
    held = held + tonumber(counts[i + 1])
    if oldest == nil or start < oldest then oldest = start end
  end
end
if held + size > budget then
  local release = -1
  if oldest ~= nil and size <= budget then release = oldest + window + ttl - now end
  return {0, held, tostring(release)}
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
redis.call('HINCRBY', KEYS[1], string.format('%d', math.floor(now / window) * window), size)
redis.call('EXPIRE', KEYS[1], ttl + window)
return {1, held + size, tostring(now + ttl)}
"""


class ResultBudgetExceeded(StockqError):
    code = "result_budget_exceeded"
    http_status = 429


class CacheUnavailable(StockqError):
    code = "cache_unavailable"
    http_status = 503


@contextlib.contextmanager
def _cache_errors() -> Iterator[None]:
    # The client sees that the cache Redis is down, not an internal error; the detail stays in the log.
    try:
        yield
    except redis.RedisError as exc:
        raise CacheUnavailable("the result cache is unavailable: try again shortly") from exc


def rendered_chart_key(forecast: dict[str, Any], fmt: str) -> str:
    """A rendered chart's key: the ticker, model version and as-of date it shows, and a digest of the
    forecast drawn (a new evaluation's calibration moves the band without a new version)."""
    drawn = {k: v for k, v in forecast.items() if k != "cached"}
    digest = hashlib.sha256(json.dumps(drawn, sort_keys=True, default=str).encode()).hexdigest()[:24]
    model = forecast["model"]
    return keys.rendered_chart(
        forecast["ticker"], model["name"], str(model["version"]), str(forecast["as_of"]), fmt, digest
    )


class ResultStore:
    def __init__(self, client: redis.Redis, ttl_s: int, budget: int) -> None:
        self.client = client  # the evicting cache Redis
        self.ttl_s = ttl_s
        self.budget = budget
        self._put = client.register_script(_PUT)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis) -> ResultStore:
        return cls(client, settings.short_job_retention_s, settings.tenant_cache_bytes)

    def put(self, owner: str, key: str, data: bytes, mimetype: str, **about: Any) -> dict[str, Any]:
        """Write `data` under `key`, charged to `owner`: the descriptor the job record keeps. Raises
        ResultBudgetExceeded past the owner's budget (nothing written)."""
        with _cache_errors():
            written, held, when = self._put(
                keys=[keys.tenant_bytes(owner), key], args=[data, self.budget, self.ttl_s, BUDGET_WINDOW_S]
            )
        if not written:
            wait = float(when)
            later = "it alone is larger than the budget"
            if wait >= 0:
                later = f"try again in about {max(1, round(wait))} s, when older results expire"
            raise ResultBudgetExceeded(
                f"{owner} holds {int(held)} bytes of results (budget {self.budget}); this one takes "
                f"{len(data)}: {later}"
            )
        return {"mimetype": mimetype, "bytes": len(data), **about, "key": key, "expires_at": float(when)}

    def read(self, key: str) -> bytes | None:
        """The bytes under `key` (a descriptor's, or a rendering's); None once expired or evicted."""
        with _cache_errors():
            return self.client.get(key)

    def keep_rendered(self, key: str, image: bytes) -> None:
        with _cache_errors():
            self.client.set(key, image, ex=self.ttl_s)

    def shown(self, job: JobRecord) -> JobRecord:
        """The job as a client reads it: a JSON result kept on the cache read back into `result`, or the
        descriptor with `result_expired` (evicted or past its TTL) / `result_unavailable` (the cache Redis
        is down) once it cannot be. A binary result (a chart) stays a descriptor: its bytes are served at
        GET /forecast. A record from before results moved to the cache holds its result itself."""
        descriptor, job_spec = job.result, JOB_SPECS.get(job.type)
        if not (job_spec and job_spec.result_on_cache and job.status == JobStatus.SUCCEEDED
                and isinstance(descriptor, dict) and descriptor.get("mimetype") == JSON
                and "key" in descriptor):  # fmt: skip
            return job
        try:
            data = self.read(descriptor["key"])
        except CacheUnavailable as exc:
            return replace(job, result={**descriptor, "result_unavailable": True, "message": exc.message})
        if data is None:
            gone = "the result was evicted from the cache or expired: submit the job again"
            return replace(job, result={**descriptor, "result_expired": True, "message": gone})
        return replace(job, result=json.loads(data))
