"""The job model: keys.py (every Redis key), model.py (the typed record and its statuses), specs.py (the
one table of job types), lua.py (the state changes as scripts), registry.py (the registry over them)."""

from workers.jobs.model import FINISHED, Delivery, JobRecord, JobStatus
from workers.jobs.registry import Claim, JobRegistry, OverCapacity, Submission, Window
from workers.jobs.specs import JOB_SPECS, JobSpec, spec

__all__ = ["FINISHED", "JOB_SPECS", "Claim", "Delivery", "JobRecord", "JobRegistry", "JobSpec", "JobStatus",
           "OverCapacity", "Submission", "Window", "spec"]  # fmt: skip
