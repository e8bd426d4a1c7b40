"""Every Redis key of the job registry, in one place.

Global keys live under `stockq:` names that no tenant can reach: everything a tenant owns is under
`stockq:tenant:<owner>:`, and no global key starts with `stockq:tenant:`, so a tenant called `expiry`
or `leases` owns only its own keys. The scripts (workers/jobs/lua.py) build the same names in Lua from the
prefixes below; they assume one Redis server, not a cluster.
"""

from __future__ import annotations

JOB_PREFIX = "stockq:job:"  # + id: the record (a hash)
TENANT_PREFIX = "stockq:tenant:"  # + owner + ':' + ...: what one tenant owns
EVENTS_PREFIX = "stockq:jobevents:"  # + id: a job's pub/sub channel (job_events)

INDEX = "stockq:jobs"  # id -> submission time, every job
EXPIRY_INDEX = "stockq:jobs-expiry"  # "owner|type|id" -> when the record expires (trimmed on submit)
LEASES = "stockq:leases"  # id -> lease expiry (Redis time) of every running job
QUEUED = "stockq:queued"  # id -> when it was (re)queued, every queued job
OUTBOX = "stockq:outbox"  # id -> when its message was due: published state changes not yet confirmed
DEAD_LETTER = "stockq:deadletter"  # id -> when it was failed for losing its worker too often
# Internal owners start with '@', which no tenant name may contain (webapp/auth.py).
SCHEDULER_OWNER = "@scheduler"


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def done_list(job_id: str) -> str:
    """A token pushed when the job finishes: long polls BLPOP it."""
    return f"stockq:done:{job_id}"


def owner_index(owner: str) -> str:
    return f"{TENANT_PREFIX}{owner}:jobs"


def inflight(owner: str) -> str:
    """The owner's queued and running jobs (the in-flight cap counts them)."""
    return f"{TENANT_PREFIX}{owner}:inflight"


def filtered_index(owner: str | None, status: str | None, job_type: str | None) -> str:
    """The index of one status and/or type (everyone's when `owner` is None): a filtered page reads only it.
    The scripts keep `status`, `type` and `status+type` indexes per owner and for everyone."""
    scope = "stockq:all" if owner is None else f"{TENANT_PREFIX}{owner}"
    if status and job_type:
        return f"{scope}:by:{status}:{job_type}"
    if status:
        return f"{scope}:by:{status}:"
    if job_type:
        return f"{scope}:by::{job_type}"
    return INDEX if owner is None else owner_index(owner)


def chart(job_id: str) -> str:
    """A rendered chart's bytes, on the evicting cache Redis for minutes, never inside the record."""
    return f"stockq:chart:{job_id}"


def result_bytes(job_id: str) -> str:
    """A large result (a batch forecast) on the cache Redis; the record keeps its size and expiry."""
    return f"stockq:result:{job_id}"


def rendered_chart(ticker: str, model: str, version: str, as_of: str, fmt: str, digest: str) -> str:
    """A chart as drawn for one ticker, model version, data as-of and forecast (digest), shared by every
    chart job that draws the same thing (on the cache Redis, expiring like the charts)."""
    return f"stockq:rendered:{ticker}:{model}:{version}:{as_of}:{fmt}:{digest}"


def tenant_bytes(owner: str) -> str:
    """Bytes the owner holds on the cache Redis in charts and large results (a per-tenant budget)."""
    return f"{TENANT_PREFIX}{owner}:bytes"


def job_log(job_id: str) -> str:
    """The job's own log lines (a list, capped, expiring with the record: workers/job_log.py)."""
    return f"stockq:joblog:{job_id}"


def job_events(job_id: str) -> str:
    """The job's pub/sub channel: "job" when a script changed its record, "log" when a line was appended
    to its log. A watcher (the API's event stream) reads the record or the log again on each."""
    return EVENTS_PREFIX + job_id
