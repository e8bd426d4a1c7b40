"""Scheduled work: `celery -A workers beat -S workers.scheduled.RedBeat` fires planning tasks, and they
submit ordinary jobs (owner `@scheduler`, no tenant's name) through workers/dispatch.py, so a scheduled
ingest or retrain gets a record, a lease, fencing and retries like any job a client submits.

- daily: ingest + materialize every known ticker (^GSPC and each child with a champion);
- nightly: retrain (fine-tune) each child whose stored data moved past what its champion was trained
  until, unless a scheduled retrain of it is still queued or running;
- nightly, after the retrains: evaluate the served recipe over every ingested ticker (what the cards quote
  and promotion reads), unless the previous scheduled evaluation is still queued or running.

redbeat keeps the schedule in Redis and holds a lock there while a beat runs: a second beat (a rollout,
a standby, a mistake) waits for the lock instead of sending every entry twice. The planners run on the
inference queue: a few Redis and MLflow reads, never stuck behind a long download on the ingest queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

from celery import Celery, shared_task
from celery.schedules import crontab, schedule
from redbeat import RedBeatScheduler

from ml.tickers import CHILD_PREFIX, INDEX_TICKER
from stockq.settings import Settings
from workers import app, settings
from workers.dispatch import publish
from workers.execution import runtime
from workers.jobs import keys
from workers.runtime import Runtime

log = logging.getLogger(__name__)

OWNER = keys.SCHEDULER_OWNER
PLAN_INGEST = "stockq.plan_ingest"
PLAN_RETRAIN = "stockq.plan_retrain"
PLAN_EVALUATE = "stockq.plan_evaluate"
# What `POST /evaluate {}` records: every ingested ticker, the worker's settings for the rest.
EVALUATE_PARAMS = {"tickers": None, "universe": None, "first_year": None, "refit_months": None}
# Tickers per scheduled ingest job: ingest is all-or-nothing per job, so one bad ticker fails only its
# batch, and a batch stays well inside the ingest task's 600 s limit.
INGEST_BATCH = 25
# A standby beat retries the lock this often; a dead holder's lock expires after 5x this (redbeat's rule).
BEAT_MAX_INTERVAL_S = 30
# A planning message nobody ran for this long is dropped: the next run of its entry plans afresh.
PLAN_EXPIRES_S = 6 * 3600


def parse_schedule(text: str) -> schedule | crontab | None:
    """`30 22 * * 1-5` (crontab, UTC), `3600` (seconds) or empty (disabled)."""
    text = text.strip()
    if not text:
        return None
    try:
        return schedule(timedelta(seconds=float(text)))
    except ValueError:
        pass
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"schedule {text!r}: expected a 5-field crontab or a number of seconds")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


def beat_config(s: Settings) -> dict[str, Any]:
    entries = {
        "daily-ingest": (PLAN_INGEST, s.schedule_ingest),
        "nightly-retrain": (PLAN_RETRAIN, s.schedule_retrain),
        "nightly-evaluate": (PLAN_EVALUATE, s.schedule_evaluate),
    }
    beat_schedule = {}
    for name, (task, text) in entries.items():
        when = parse_schedule(text)
        if when is not None:
            beat_schedule[name] = {
                "task": task,
                "schedule": when,
                "options": {"queue": "inference", "expires": PLAN_EXPIRES_S},
            }
    return {
        "beat_schedule": beat_schedule,
        "beat_max_loop_interval": BEAT_MAX_INTERVAL_S,
        "redbeat_redis_options": {"socket_timeout": 5, "socket_connect_timeout": 2},
        "redbeat_key_prefix": "stockq:redbeat:",
        "redbeat_lock_timeout": 5 * BEAT_MAX_INTERVAL_S,
    }


app.conf.update(beat_config(settings))


class RedBeat(RedBeatScheduler):
    """redbeat with its lock and schedule on the job registry's Redis (never evicted, seen by every beat,
    whichever the broker). Set here, in the beat process only: workers answer `inspect conf` and Flower
    with their whole config, and Celery would print a `redbeat_redis_url` carrying the password."""

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        app.conf.redbeat_redis_url = settings.redis_url
        super().__init__(app, *args, **kwargs)


def submit(rt: Runtime, celery: Celery, job_type: str, task: str, params: dict[str, Any]) -> str:
    """A queued job owned by the scheduler, published like the API's (workers/dispatch.py)."""
    job = rt.jobs.create(job_type, params, task, owner=OWNER)
    try:
        publish(celery, rt.jobs, job.id, task, job.attempt, kwargs=params)
    except Exception:
        rt.jobs.fail(job.id, "broker_unavailable", "the job could not be queued")
        raise
    rt.counters.incr("stockq_jobs_submitted_total", job_type)
    return job.id


def champions(rt: Runtime) -> dict[str, str | None]:
    """Each child with a champion: ticker -> the date its champion was trained until (None: unknown)."""
    from ml.registry.cards import CardReader

    out = {}
    for model in CardReader(rt.settings.tracking_uri).models():
        if model["name"].startswith(CHILD_PREFIX) and model["champion_version"] is not None:
            out[model["name"].removeprefix(CHILD_PREFIX)] = model["trained_until"]
    return out


def ingest_batches(children: Iterable[str], size: int = INGEST_BATCH) -> list[list[str]]:
    tickers = [INDEX_TICKER, *sorted(set(children) - {INDEX_TICKER})]
    return [tickers[i : i + size] for i in range(0, len(tickers), size)]


def stale_children(
    trained_until: Mapping[str, str | None], stored_until: Mapping[str, date | None]
) -> list[str]:
    """Children whose stored data ends after their champion's training data (no data: nothing to do)."""
    stale = []
    for ticker, until in sorted(trained_until.items()):
        latest = stored_until.get(ticker)
        if latest is not None and (until is None or latest > date.fromisoformat(until)):
            stale.append(ticker)
    return stale


def _stored_until(rt: Runtime, ticker: str) -> date | None:
    stored = rt.store.stored_daily(ticker)
    return None if stored is None or stored.empty else stored["event_timestamp"].max().date()


def _pending(rt: Runtime, job_type: str) -> list[dict[str, Any]]:
    """The parameters of the scheduler's jobs of `job_type` still queued or running."""
    pipe = rt.redis.pipeline()
    for job_id in rt.redis.smembers(keys.inflight(OWNER)):
        pipe.hmget(rt.jobs.key(job_id.decode()), "type", "params")
    return [json.loads(params) for kind, params in pipe.execute() if kind == job_type.encode() and params]


def schedule_ingests(rt: Runtime, celery: Celery) -> list[str]:
    batches = ingest_batches(champions(rt))
    jobs = [submit(rt, celery, "ingest", "stockq.ingest", {"tickers": batch}) for batch in batches]
    log.info("scheduled %d ingest job(s): %s", len(jobs), jobs)
    return jobs


def schedule_retrains(rt: Runtime, celery: Celery) -> list[str]:
    trained = champions(rt)
    pending = {p["ticker"] for p in _pending(rt, "train")}
    stale = stale_children(trained, {t: _stored_until(rt, t) for t in trained if t not in pending})
    params = [{"ticker": t, "strategy": "fine_tune", "epochs": None} for t in stale]
    jobs = [submit(rt, celery, "train", "stockq.train", p) for p in params]
    log.info("scheduled %d retrain(s) for %s (still pending: %s)", len(jobs), stale, sorted(pending))
    return jobs


def schedule_evaluation(rt: Runtime, celery: Celery) -> list[str]:
    if _pending(rt, "evaluate"):
        log.info("scheduled evaluation skipped: the previous one is still pending")
        return []
    job = submit(rt, celery, "evaluate", "stockq.evaluate", EVALUATE_PARAMS)
    log.info("scheduled evaluation %s", job)
    return [job]


@shared_task(name=PLAN_INGEST, soft_time_limit=60, time_limit=90)
def plan_ingest() -> list[str]:
    return schedule_ingests(runtime(), app)


@shared_task(name=PLAN_RETRAIN, soft_time_limit=120, time_limit=150)
def plan_retrain() -> list[str]:
    return schedule_retrains(runtime(), app)


@shared_task(name=PLAN_EVALUATE, soft_time_limit=60, time_limit=90)
def plan_evaluate() -> list[str]:
    return schedule_evaluation(runtime(), app)
