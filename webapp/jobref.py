"""The job a path names: a full id or a unique prefix of one, within what the caller may see.

Every route with a `<job_id>` goes through `visible_job`, so `stockq status 1f3a9c0e` (the short id the
console shows) means the same job on every path, and another tenant's job is as missing as an unknown one.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app

from webapp.auth import current_tenant
from webapp.errors import ApiError
from webapp.schemas import JobRecord
from workers.jobs import JobRecord as StoredJob
from workers.results import ResultStore

ID_LENGTH = 32  # uuid4 hex (JobRegistry.new_id)
# A prefix the registry resolves (JobRegistry.resolve_id): at least 4 hex digits, as the CLI and console
# show them (lower case; an upper-case copy is the same id).
_PREFIX = re.compile(r"^[0-9a-f]{4,32}$")


def api_context() -> Any:
    """The process's ApiContext (webapp/app.py)."""
    return current_app.extensions["stockq"]


def shown(job: StoredJob, results: ResultStore | None = None) -> dict[str, Any]:
    """A job's response body (GET /status), a result kept on the cache read back into it. `results`:
    the store to read (default: this app's; an event stream reads on after its request has returned)."""
    return JobRecord.show((results or api_context().results).shown(job))


def visible_job(ref: str) -> StoredJob:
    """The caller's job (an admin's: anyone's) that `ref` names: its full id, or a prefix of it that no
    other such job shares. 404 `job_not_found` when none, 409 `ambiguous_job_id` (details.candidates)."""
    jobs = api_context().jobs
    tenant = current_tenant()
    owner = None if tenant.admin else tenant.name
    job = jobs.get(ref)  # a full id: one read, no index scan
    if job is not None and (owner is None or job.owner == owner):
        return job
    prefix = ref.lower()
    if job is None and len(prefix) < ID_LENGTH and _PREFIX.fullmatch(prefix):
        found = jobs.resolve_id(owner, prefix)
        if len(found) > 1:
            raise ApiError(
                409, "ambiguous_job_id", f"{ref} is the start of {len(found)} job ids: give more of the id",
                details={"candidates": sorted(found)},
            )  # fmt: skip
        job = jobs.get(found[0]) if found else None
        if job is not None:  # it may have expired since the index was read
            return job
    raise ApiError(404, "job_not_found", f"no job {ref}")
