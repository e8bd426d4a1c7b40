"""The job model (workers/jobs/) against a real Redis of its own: filtered pages that read only their index,
cancel decided and applied in one script, tenant names that reach no global key, a complete JobRecord
schema, and a job type added by one row of the table (tests/echo_job.py) run by a real worker.

The Redis is a private redis-server, so its command statistics (INFO commandstats) count this module's
commands only: what a page or a cancel costs is asserted as commands run, never as time.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from flask.testing import FlaskClient

from stockq.settings import Settings
from tests.conftest import make_settings
from tests.procs import Proc, start_worker, wait_until
from tests.redis_commands import commands, private_redis
from webapp import create_app
from webapp.auth import AuthConfigError, parse_keys
from workers.jobs import Delivery, JobRecord, JobRegistry, JobStatus, keys
from workers.jobs.keys import SCHEDULER_OWNER
from workers.jobs.model import CancelOutcome, RequeueOutcome, Start

ALICE, BOB, ROOT = "alice-secret-0123456789", "bob-secret-0123456789", "root-secret-0123456789"
# Tenants named after global keys of the registry, old and new: each owns only its own keys.
RESERVED = ("expiry", "leases", "queued", "jobs", "outbox", "deadletter", "all", "jobs-expiry", "scheduler")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def reserved_key(name: str) -> str:
    return f"{name}-secret-0123456789"


@pytest.fixture(scope="module")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_redis(tmp_path_factory.mktemp("job-model-redis")) as url:
        yield url


@pytest.fixture()
def settings(tmp_path: Path, redis_base: str) -> Settings:
    tenants = ",".join([f"alice:{ALICE}", f"bob:{BOB}", *(f"{n}:{reserved_key(n)}" for n in RESERVED)])
    s = make_settings(tmp_path, 0, 1, redis_url=f"{redis_base}/0", broker_url=None, api_keys=tenants,
                      admin_keys=f"ops:{ROOT}", max_inflight=100_000)  # fmt: skip
    redis.Redis.from_url(s.redis_url).flushdb()
    return s


@pytest.fixture()
def r(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture()
def jobs(r: redis.Redis) -> JobRegistry:
    return JobRegistry(r, 600)


@pytest.fixture()
def api(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


TASKS = {t: f"stockq.{t}" for t in ("ping", "train", "predict", "ingest")}


def make(jobs: JobRegistry, status: str, owner: str = "alice", job_type: str = "ping",
         retention_s: int | None = None) -> str:  # fmt: skip
    """A job of `owner` brought to `status` the way workers and the API bring it there."""
    job = jobs.create(job_type, {}, TASKS[job_type], owner=owner, retention_s=retention_s)
    if status in ("running", "succeeded", "failed"):
        assert jobs.start(Delivery(job.id, 1), "w1", 30) == Start.STARTED
    if status == "succeeded":
        assert jobs.succeed(job.id, {"ok": True}, attempt=1)
    elif status == "failed":
        assert jobs.fail(job.id, "boom", "it failed", attempt=1)
    elif status == "cancelled":
        assert jobs.cancel(job.id) == CancelOutcome.CANCELLED
    return job.id


def listed(jobs: JobRegistry, **filters: Any) -> list[str]:
    """Every page of a listing, followed by cursor."""
    out: list[str] = []
    cursor = None
    while True:
        page, cursor = jobs.list(limit=2, cursor=cursor, **filters)
        out += [j.id for j in page]
        if cursor is None:
            return out


def assert_indexes_match_records(r: redis.Redis) -> None:
    """Every index the scripts keep holds exactly the jobs whose record says so: per status, per type and
    per both, for everyone and for each owner; the in-flight sets, leases and queued index likewise."""
    want: dict[str, set[str]] = defaultdict(set)
    for key in r.scan_iter(keys.job("*")):
        job = JobRecord.from_redis(r.hgetall(key))
        for owner in (None, job.owner):
            for status in (None, job.status):
                for job_type in (None, job.type):
                    want[keys.filtered_index(owner, status, job_type)].add(job.id)
        if not job.finished:
            want[keys.inflight(job.owner)].add(job.id)
            want[keys.LEASES if job.status == JobStatus.RUNNING else keys.QUEUED].add(job.id)
    found: dict[str, set[str]] = {}
    for pattern in ("stockq:all:by:*", "stockq:tenant:*", keys.INDEX, keys.LEASES, keys.QUEUED):
        for key in r.scan_iter(pattern):
            kind = r.type(key)
            members = r.zrange(key, 0, -1) if kind == b"zset" else r.smembers(key) if kind == b"set" else None
            if members is not None:
                found[key.decode()] = {m.decode() for m in members}
    assert {k: v for k, v in found.items() if v} == dict(want)


@contextmanager
def right_after(command: str, key: str, step: Callable[[], object]) -> Iterator[None]:
    """Run `step` (what another process does) right after the next `command` naming `key` that any client
    of this process sends: two steps that race in production, in the one order that exposes a race."""
    original = redis.Redis.execute_command
    pending = [step]

    def execute(self: redis.Redis, *args: Any, **options: Any) -> Any:
        result = original(self, *args, **options)
        if pending and str(args[0]).upper() == command and key in args[1:]:
            pending.pop()()  # popped first: the step's own commands do not trigger it again
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis.Redis, "execute_command", execute)
        yield
    assert not pending, f"no {command} on {key} was sent"


# -- filtered pages (hole 5) --------------------------------------------------------------------------


def test_filtered_pages_follow_status_changes_retries_requeues_and_owners(
    r: redis.Redis, jobs: JobRegistry
) -> None:
    a1 = make(jobs, "failed", job_type="train")
    a2 = make(jobs, "succeeded")
    a3 = make(jobs, "queued", job_type="train")
    a4 = make(jobs, "failed", job_type="predict")
    b1 = make(jobs, "failed", owner="bob", job_type="train")
    a5 = make(jobs, "cancelled")
    assert_indexes_match_records(r)
    assert listed(jobs, status="failed", owner="alice") == [a4, a1]
    assert listed(jobs, status="failed", job_type="train", owner="alice") == [a1]
    assert listed(jobs, job_type="train", owner="alice") == [a3, a1]
    assert listed(jobs, status="failed", owner="bob") == [b1]
    assert listed(jobs, owner="alice") == [a5, a4, a3, a2, a1]
    # the admin's view: everyone's
    assert listed(jobs, status="failed") == [b1, a4, a1]
    assert listed(jobs, status="failed", job_type="train") == [b1, a1]
    assert listed(jobs, status="cancelled") == [a5]
    assert [jobs.count("failed", t) for t in ("train", "predict", "ping")] == [2, 1, 0]

    # a retry leaves `failed` for `queued` (keeping its place by submission), then runs and succeeds
    assert jobs.retry(a1).attempt == 2
    assert listed(jobs, status="failed", owner="alice") == [a4]
    assert listed(jobs, status="queued", owner="alice") == [a3, a1]
    assert jobs.start(Delivery(a1, 2), "w2", 30) == Start.STARTED
    assert listed(jobs, status="running") == [a1]
    assert jobs.succeed(a1, {"v": 2}, attempt=2)
    assert listed(jobs, status="succeeded", owner="alice") == [a2, a1]
    assert listed(jobs, status="succeeded", job_type="train") == [a1]
    assert_indexes_match_records(r)

    # a worker lost: back to queued, then dead-lettered (failed) at the limit
    assert jobs.start(Delivery(a3, 1), "w3", 30) == Start.STARTED
    lost = jobs.requeue(Delivery(a3, 1), outcome="worker_lost", lost=True, max_lost=2, stage="requeued")
    assert lost.outcome == RequeueOutcome.REQUEUED and listed(jobs, status="queued", job_type="train") == [a3]
    assert_indexes_match_records(r)
    assert jobs.start(Delivery(a3, 2), "w4", 30) == Start.STARTED
    dead = jobs.requeue(Delivery(a3, 2), outcome="worker_lost", lost=True, max_lost=2, stage="requeued")
    assert dead.outcome == RequeueOutcome.DEAD_LETTERED
    assert listed(jobs, status="failed", owner="alice") == [a4, a3]
    assert listed(jobs, status="queued") == [] and listed(jobs, status="running") == []
    assert_indexes_match_records(r)


def test_filtered_pages_by_cursor_through_the_api_for_a_tenant_and_the_admin(
    api: FlaskClient, jobs: JobRegistry
) -> None:
    mine, everyone = [], []
    for i in range(13):
        status = "failed" if i % 2 == 0 else ("succeeded", "queued", "cancelled")[i % 3]
        owner = "bob" if i % 5 == 0 else "alice"
        job_id = make(jobs, status, owner=owner)
        if status == "failed":
            everyone.append(job_id)
            if owner == "alice":
                mine.append(job_id)

    def pages(key: str, query: str) -> list[list[str]]:
        out, cursor = [], None
        while True:
            url = f"/jobs?{query}&limit=2" + (f"&cursor={cursor}" if cursor is not None else "")
            body = api.get(url, headers=bearer(key)).get_json()
            assert all(j["status"] == "failed" for j in body["jobs"]), body
            out.append([j["job_id"] for j in body["jobs"]])
            cursor = body["next_cursor"]
            if cursor is None:
                return out

    got = pages(ALICE, "status=failed")
    assert [i for page in got for i in page] == mine[::-1] and all(len(p) == 2 for p in got[:-1])
    got = pages(ROOT, "status=failed&type=ping")
    assert [i for page in got for i in page] == everyone[::-1]
    theirs = [i for i in everyone[::-1] if i not in mine]
    assert [i for page in pages(ROOT, "status=failed&owner=bob") for i in page] == theirs


def test_expired_records_leave_filtered_pages_and_the_indexes(r: redis.Redis, jobs: JobRegistry) -> None:
    kept = [make(jobs, "failed") for _ in range(3)]
    short = [make(jobs, "failed", retention_s=1) for _ in range(4)]
    wait_until(lambda: not r.exists(*map(keys.job, short)), 5, "the short-lived records to expire")
    # expired, not yet trimmed from the index: skipped, and the page is still filled from older jobs
    page, _ = jobs.list(status="failed", owner="alice", limit=3)
    assert [j.id for j in page] == kept[::-1]
    assert listed(jobs, status="failed") == kept[::-1]
    make(jobs, "queued", owner="bob")  # the next submission (anyone's) trims what expired
    assert r.zcard(keys.filtered_index("alice", "failed", None)) == 3 and jobs.count("failed", "ping") == 3
    assert r.zcount(keys.EXPIRY_INDEX, "-inf", jobs.now()) == 0
    assert_indexes_match_records(r)


def test_a_filtered_page_reads_only_its_own_jobs_among_10_000_others(
    api: FlaskClient, r: redis.Redis, jobs: JobRegistry
) -> None:
    failed = [make(jobs, "failed") for _ in range(7)]  # the oldest: an index walk would meet them last

    def another(i: int) -> None:
        jobs.create("ping", {}, "stockq.ping", owner=("bob", "alice")[i % 2])

    with ThreadPoolExecutor(8) as pool:  # scripts in flight together: the fill is not what is measured
        list(pool.map(another, range(10_000)))
    cursors = []
    for key, query, want in (
        (ALICE, "status=failed&limit=5", failed[:1:-1]),
        (ALICE, "status=failed&type=ping&limit=5", failed[:1:-1]),
        (ROOT, "status=failed&limit=50", failed[::-1]),
    ):
        r.config_resetstat()
        body = api.get(f"/jobs?{query}", headers=bearer(key)).get_json()
        ran = commands(r)
        assert [j["job_id"] for j in body["jobs"]] == want, query
        # one read of the index, one record per job on the page: nothing proportional to what is stored
        assert ran["hgetall"] == len(want) and ran["zrevrangebyscore"] <= 2, (query, ran)
        assert sum(ran.values()) < 40, (query, ran)
        cursors.append(body["next_cursor"])
    r.config_resetstat()
    rest = api.get(f"/jobs?status=failed&limit=5&cursor={cursors[0]}", headers=bearer(ALICE)).get_json()
    assert [j["job_id"] for j in rest["jobs"]] == failed[1::-1] and rest["next_cursor"] is None
    assert commands(r)["hgetall"] == 2


# -- cancel (hole 6) ----------------------------------------------------------------------------------


def test_cancel_answers_and_applies_in_one_step_for_every_status(r: redis.Redis, jobs: JobRegistry) -> None:
    queued = make(jobs, "queued", job_type="train")
    running = make(jobs, "running", job_type="train")
    ping = make(jobs, "running")
    done = make(jobs, "succeeded")
    r.config_resetstat()
    assert jobs.cancel(queued) == CancelOutcome.CANCELLED
    assert jobs.cancel(running) == CancelOutcome.CANCELLING
    assert jobs.cancel(ping) == CancelOutcome.NOT_CANCELLABLE
    assert jobs.cancel(done) == CancelOutcome.FINISHED
    assert jobs.cancel("0" * 32) == CancelOutcome.MISSING
    ran = commands(r)
    assert ran["evalsha"] == 5 and ran["hgetall"] == 0, ran  # one script per cancel, no read to decide on
    # a cancelled job's message is not published again (the others were never confirmed published here)
    assert {m.decode() for m in r.zrange(keys.OUTBOX, 0, -1)} == {f"{j}|1" for j in (running, ping, done)}
    cancelled, cancelling, pinged = (jobs.get(j) for j in (queued, running, ping))
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert cancelling is not None and cancelling.cancel_requested and cancelling.status == JobStatus.RUNNING
    assert pinged is not None and not pinged.cancel_requested  # a ping refused is left untouched
    # the running training stops at its next stage boundary; a late success is recorded cancelled
    assert not jobs.enter_stage(Delivery(running, 1), "epoch2")
    assert jobs.finish(running, JobStatus.SUCCEEDED, {"v": 1}, attempt=1) == JobStatus.CANCELLED
    assert jobs.succeed(ping, {"pong": True}, attempt=1)
    assert_indexes_match_records(r)


def test_a_job_requeued_right_after_its_cancel_was_accepted_ends_cancelled(
    api: FlaskClient, r: redis.Redis, jobs: JobRegistry
) -> None:
    """Hole 6: the cancel answers 202 `cancelling`, then the worker gives the attempt up (preempted,
    handed off, lost) before its next stage boundary. The job must end cancelled, its next attempt never
    published nor run to the end."""
    job_id = make(jobs, "running", job_type="train")
    preempt = partial(jobs.requeue, Delivery(job_id, 1), outcome="preempted", lost=False, max_lost=3,
                      stage="preempted")  # fmt: skip
    with right_after("EVALSHA", keys.job(job_id), preempt):
        answer = api.delete(f"/jobs/{job_id}", headers=bearer(ALICE))
    assert answer.status_code == 202, answer.get_json()
    # whatever the record now says is queued is what a worker would run: run it to the end
    queued = jobs.get(job_id)
    assert queued is not None
    if queued.status == JobStatus.QUEUED:
        nxt = Delivery(job_id, queued.attempt)
        if jobs.start(nxt, "w2", 30) == Start.STARTED and jobs.enter_stage(nxt, "train"):
            jobs.succeed(job_id, {"trained": True}, attempt=nxt.attempt)
    job = jobs.get(job_id)
    assert job is not None and job.status == JobStatus.CANCELLED, job
    assert job.result is None and job.error == {"code": "cancelled", "message": "cancelled by request"}
    assert (job.attempt, [a["outcome"] for a in job.attempts]) == (1, ["preempted"])
    assert r.zscore(keys.OUTBOX, f"{job_id}|2") is None
    # a stale delivery of the attempt that was never published changes nothing
    assert jobs.start(Delivery(job_id, 2), "w3", 30) == Start.STALE
    assert_indexes_match_records(r)


def test_a_ping_that_starts_while_its_cancel_is_decided_answers_not_cancellable(
    api: FlaskClient, jobs: JobRegistry
) -> None:
    """The API read the ping queued; it started before the cancel was applied: one script decides on the
    status it applies to, so the answer is 409 not_cancellable and the ping runs on, untouched."""
    job_id = make(jobs, "queued")
    with right_after("HGETALL", keys.job(job_id), partial(jobs.start, Delivery(job_id, 1), "w1", 30)):
        answer = api.delete(f"/jobs/{job_id}", headers=bearer(ALICE))
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "not_cancellable"
    job = jobs.get(job_id)
    assert job is not None and job.status == JobStatus.RUNNING and not job.cancel_requested
    assert jobs.enter_stage(Delivery(job_id, 1), "pong") and jobs.succeed(job_id, {"pong": True}, attempt=1)
    assert api.delete(f"/jobs/{job_id}", headers=bearer(ALICE)).get_json()["error"]["code"] == "job_finished"


# -- reserved names (hole 8) --------------------------------------------------------------------------


def test_tenants_named_after_global_keys_break_nobody(api: FlaskClient, r: redis.Redis) -> None:
    mine: dict[str, str] = {}
    for name in RESERVED:
        made = api.post("/jobs/ping", headers=bearer(reserved_key(name)))
        assert made.status_code == 202, (name, made.get_json())
        mine[name] = made.get_json()["job_id"]
        after = api.post("/jobs/ping", headers=bearer(ALICE))  # every later submission of anyone still works
        assert after.status_code == 202, (name, after.get_json())
    # the global keys kept their kind and shape
    assert {r.type(k) for k in (keys.INDEX, keys.EXPIRY_INDEX, keys.QUEUED)} == {b"zset"}
    assert all(m.count(b"|") == 2 for m in r.zrange(keys.EXPIRY_INDEX, 0, -1))
    for name in RESERVED:
        key = bearer(reserved_key(name))
        assert [j["job_id"] for j in api.get("/jobs", headers=key).get_json()["jobs"]] == [mine[name]], name
        assert [j["job_id"] for j in api.get("/jobs?status=queued", headers=key).get_json()["jobs"]] == [
            mine[name]
        ]
        assert api.delete(f"/jobs/{mine[name]}", headers=key).status_code == 200
    assert len(api.get("/jobs?limit=200", headers=bearer(ALICE)).get_json()["jobs"]) == len(RESERVED)


@pytest.mark.parametrize("name", [SCHEDULER_OWNER, "@all", "a|b"])  # and a ":" ends the name
def test_no_tenant_can_be_named_like_an_internal_owner_or_a_key_path(name: str) -> None:
    with pytest.raises(AuthConfigError, match="tenant name"):
        parse_keys(f"{name}:{ALICE}", admin=False, variable="STOCKQ_API_KEYS")


def test_a_tenant_called_scheduler_neither_sees_nor_touches_the_scheduler_s_jobs(
    api: FlaskClient, settings: Settings
) -> None:
    from workers.runtime import Runtime
    from workers.scheduled import OWNER, submit

    celery = api.application.extensions["stockq"].submitter.celery
    job_id = submit(Runtime(settings), celery, "ingest", "stockq.ingest", {"tickers": ["KO"]})
    tenant = bearer(reserved_key("scheduler"))
    assert api.get("/jobs", headers=tenant).get_json()["jobs"] == []
    assert api.get("/jobs?status=queued&type=ingest", headers=tenant).get_json()["jobs"] == []
    for method, path in (("get", f"/status/{job_id}"), ("delete", f"/jobs/{job_id}"),
                         ("post", f"/jobs/{job_id}/retry")):  # fmt: skip
        answer = getattr(api, method)(path, headers=tenant)
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "job_not_found", path
    seen = api.get(f"/jobs?owner={OWNER}", headers=bearer(ROOT)).get_json()["jobs"]
    assert [(j["job_id"], j["owner"], j["status"]) for j in seen] == [(job_id, OWNER, "queued")]


# -- the record's schema ------------------------------------------------------------------------------


def test_the_openapi_job_record_is_exactly_what_every_response_shows(
    api: FlaskClient, jobs: JobRegistry
) -> None:
    doc = api.get("/openapi.json").get_json()
    schema = doc["components"]["schemas"]["JobRecord"]
    shown = set(JobRecord(id="x", type="ping", owner="o", status=JobStatus.QUEUED).to_api())
    assert set(schema["properties"]) == shown
    validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
    trained = make(jobs, "running", job_type="train")
    jobs.set_fields(Delivery(trained, 1), progress={"epoch": 1, "loss": 0.5}, resumed_from_epoch=1)
    lost = jobs.requeue(Delivery(trained, 1), outcome="worker_lost", lost=True, max_lost=3, stage="requeued")
    assert lost.attempt == 2
    ids = [make(jobs, s) for s in ("queued", "running", "succeeded", "failed", "cancelled")] + [trained]
    for job_id in ids:
        body = api.get(f"/status/{job_id}", headers=bearer(ALICE)).get_json()
        assert set(body) == shown, job_id
        validator.validate(body)
    body = api.get(f"/status/{trained}", headers=bearer(ALICE)).get_json()
    assert (body["lost"], body["resumed_from_epoch"], body["attempts"][0]["outcome"]) == (1, 1, "worker_lost")
    listing = api.get("/jobs?limit=10", headers=bearer(ALICE)).get_json()
    for body in listing["jobs"]:
        validator.validate(body)


# -- a new job type is one row (acceptance) -----------------------------------------------------------


@pytest.mark.slow
def test_a_job_type_added_by_one_row_is_routed_run_cancelled_kept_listed_and_counted(
    settings: Settings, r: redis.Redis
) -> None:
    from tests.test_exporter import scrape, value
    from workers.celery_app import QUEUES
    from workers.exporter import BackendCollector
    from workers.exporter_sources import WorkerLiveness

    settings = settings.model_copy(update={"short_job_retention_s": 120})
    app = create_app(settings)
    # Registered after the app's modules loaded, as a deployment's own module would register it.
    importlib.import_module("tests.echo_job")
    api, submitter = app.test_client(), app.extensions["stockq"].submitter

    def submit(text: str, seconds: float = 0.0) -> str:
        return submitter.submit("echo", {"text": text, "seconds": seconds}, owner="alice")[0].id

    def status(job_id: str) -> dict[str, Any]:
        answer = api.get(f"/status/{job_id}", headers=bearer(ALICE))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()

    first = submit("hello")
    # routed by its row: on its queue, none other (an unknown task would land on `inference`)
    assert {q: r.llen(q) for q in QUEUES} == {q: int(q == "ingest") for q in QUEUES}
    # kept as long as its row says: the short retention
    record_ttl = r.ttl(keys.job(first))
    assert 100 < record_ttl <= 120
    [(member, expires)] = r.zrange(keys.EXPIRY_INDEX, 0, -1, withscores=True)
    assert member.decode() == f"alice|echo|{first}"
    assert expires - float(r.hget(keys.job(first), "submitted_at") or 0) == pytest.approx(120, abs=0.01)

    worker: Proc = start_worker(settings, "ingest", "echo", app="tests.echo_job")
    try:
        wait_until(lambda: status(first)["status"] == "succeeded", 60, "the first echo")
        assert status(first)["result"] == {"echo": "hello"} and status(first)["type"] == "echo"
        slow, behind = submit("slow", seconds=3.0), submit("behind")
        wait_until(lambda: status(slow)["status"] == "running", 30, "the slow echo to run")
        # cancellable or not as its row says: not while running, always while queued
        refused = api.delete(f"/jobs/{slow}", headers=bearer(ALICE))
        assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_cancellable"
        dropped = api.delete(f"/jobs/{behind}", headers=bearer(ALICE))
        assert dropped.status_code == 200 and dropped.get_json()["status"] == "cancelled"
        wait_until(lambda: status(slow)["status"] == "succeeded", 30, "the slow echo to finish")
        assert status(slow)["result"] == {"echo": "slow"} and status(behind)["executions"] == 0
    finally:
        worker.stop()

    listing = api.get("/jobs?type=echo", headers=bearer(ALICE))
    assert listing.status_code == 200, listing.get_data(as_text=True)
    assert [j["job_id"] for j in listing.get_json()["jobs"]] == [behind, slow, first]
    succeeded = api.get("/jobs?type=echo&status=succeeded", headers=bearer(ALICE)).get_json()["jobs"]
    assert [j["job_id"] for j in succeeded] == [slow, first]
    found = scrape(BackendCollector(r, WorkerLiveness(r, QUEUES, 600), None, {}))
    counted = {s: value(found, "stockq_jobs", type="echo", status=s) for s in JobStatus}
    assert counted == {"queued": 0, "running": 0, "succeeded": 2, "failed": 0, "cancelled": 1}
    assert value(found, "stockq_jobs_submitted_total", type="echo") == 3
    assert_indexes_match_records(r)


# -- bookkeeping around the record --------------------------------------------------------------------


def test_a_message_for_a_job_whose_record_is_gone_leaves_no_hollow_record(
    r: redis.Redis, jobs: JobRegistry
) -> None:
    """A worker takes a message whose record expired meanwhile (a short-lived job behind a long queue):
    noting who took it must not create a record without status or expiry."""
    gone = "0" * 32
    jobs.mark_received(Delivery(gone, 1), "w1")
    assert not r.exists(keys.job(gone))
    assert jobs.get(gone) is None


# -- change notifications (contract C2) ---------------------------------------------------------------


def test_every_change_of_a_record_is_announced_once_on_its_channel(r: redis.Redis, jobs: JobRegistry) -> None:
    """Each script that changes a record publishes "job" on the job's channel (keys.job_events) in the same
    step, once however many fields it wrote; a script that changes nothing (stale, refused, finished) or
    only the workers' own bookkeeping (a lease renewal, a receipt) publishes nothing; a log line is "log"."""
    events = r.pubsub()
    events.psubscribe(keys.job_events("*"))
    assert events.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    end = keys.job_events("end-of-step")

    def heard(step: Callable[[], object]) -> list[tuple[str, str]]:
        """What the channels carried during `step` (up to a marker published after it, on one connection
        to one server: delivered in order)."""
        step()
        r.publish(end, "")
        out = []
        while (m := events.get_message(timeout=5)) is not None and m["channel"].decode() != end:
            out.append((m["channel"].decode().removeprefix(keys.EVENTS_PREFIX), m["data"].decode()))
        return out

    made: list[str] = []
    created = heard(lambda: made.append(jobs.create("train", {}, "stockq.train", owner="alice").id))
    job_id = made[0]
    assert created == [(job_id, "job")]
    d = partial(Delivery, job_id)
    line = {"level": "INFO", "logger": "t", "message": "m"}
    preempted = partial(jobs.requeue, outcome="preempted", lost=False, max_lost=3, stage="preempted")
    steps: list[tuple[str, Callable[[], object], list[str]]] = [
        ("RECEIVED", lambda: jobs.mark_received(d(1), "w1"), []),
        ("START", lambda: jobs.start(d(1), "w1", 30), ["job"]),
        ("START", lambda: jobs.start(d(1), "w2", 30), []),  # already running
        ("RENEW", lambda: jobs.renew(d(1), 30), []),
        ("STAGE", lambda: jobs.enter_stage(d(1), "train"), ["job"]),
        ("SET_IF_RUNNING", lambda: jobs.set_fields(d(1), progress={"epoch": 1}, stage="x"), ["job"]),
        ("SET_IF_RUNNING", lambda: jobs.set_fields(d(9), progress={"epoch": 9}), []),  # stale
        ("APPEND_LOG", lambda: jobs.append_log(job_id, line), ["log"]),
        ("LOG_LINES", lambda: jobs.log_lines(job_id), []),
        ("CANCEL", lambda: jobs.cancel(job_id), ["job"]),  # cancelling: the flag is set
        ("STAGE", lambda: jobs.enter_stage(d(1), "refit"), []),  # stops here: nothing written
        ("REQUEUE", lambda: preempted(d(1)), ["job"]),  # ends cancelled
        ("RETRY", lambda: jobs.retry(job_id), ["job"]),
        ("REPUBLISH", lambda: jobs.republish(d(2), ""), ["job"]),
        ("REPUBLISH", lambda: jobs.republish(d(2), ""), []),  # stale
        ("OUTBOX_DUE", lambda: jobs.outbox_due(0.0), []),
        ("START", lambda: jobs.start(d(3), "w3", 30), ["job"]),
        ("TRANSITION", lambda: jobs.transition(job_id, ["running"], "failed", attempt=3), ["job"]),
        ("TRANSITION", lambda: jobs.transition(job_id, ["running"], "failed", attempt=3), []),  # refused
        ("FINISH", lambda: jobs.finish(job_id, JobStatus.SUCCEEDED, {}, attempt=3), []),  # refused
        ("RETRY", lambda: jobs.retry(job_id), ["job"]),
        ("START", lambda: jobs.start(d(4), "w4", 30), ["job"]),
        ("FINISH", lambda: jobs.succeed(job_id, {"v": 4}, attempt=4), ["job"]),
        ("TRIM", lambda: jobs.trim_expired(), []),
    ]
    for name, step, want in steps:
        assert heard(step) == [(job_id, kind) for kind in want], name
    assert {"CREATE", *(name for name, _, _ in steps)} == set(jobs._scripts)  # a new script gets its line
    job = jobs.get(job_id)
    assert job is not None and job.status == JobStatus.SUCCEEDED and job.attempt == 4
    events.close()
