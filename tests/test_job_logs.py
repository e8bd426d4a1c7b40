"""Each job's own log and its change notifications (contract C2), and short job ids.

A real Celery worker runs tests/log_job.py: its lines land in the job's log in order, its secrets masked,
the newest 500 kept, expiring with the record, and a subscriber to the job's channel hears "job" on each
change of the record and "log" on each line. The handler itself, the masking and JobRegistry.resolve_id
are checked against a private redis-server (whose command statistics count this module's commands only).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import socket
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from stockq.settings import Settings
from tests.conftest import make_settings
from tests.procs import Proc, start_worker, wait_until
from tests.redis_commands import commands, private_redis
from workers import logs
from workers.celery_app import create_celery
from workers.dispatch import publish
from workers.job_log import JobLogHandler
from workers.jobs import JobRegistry, JobStatus, keys
from workers.redaction import MASK, Redactor

ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789"
OPENAI = "sk-live-4242424242"


@pytest.fixture(scope="module")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_redis(tmp_path_factory.mktemp("job-logs-redis")) as url:
        yield url


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, redis_base: str) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("job-logs"), 0, 1, redis_url=f"{redis_base}/0", broker_url=None,
        api_keys=f"alice:{ALICE},bob:{BOB}", openai_api_key=OPENAI,
    )  # fmt: skip


@pytest.fixture(scope="module")
def r(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture(scope="module")
def jobs(r: redis.Redis) -> JobRegistry:
    return JobRegistry(r, 600)


# -- masking --------------------------------------------------------------------------------------------


def test_the_settings_secrets_and_credential_shapes_are_masked(settings: Settings) -> None:
    redact = Redactor.from_settings(
        settings.model_copy(update={"redis_url": "redis://:url-pass-99@db:6379/0", "flower_auth": None})
    )
    cases = [  # (logged, stored); MASK is "***"
        (f"key {ALICE} and {BOB}!", "key *** and ***!"),
        (f"the whole entry alice:{ALICE}", "the whole entry ***"),
        (f"llm key {OPENAI}", "llm key ***"),
        ("url-pass-99 (the settings' URL password, alone)", "*** (the settings' URL password, alone)"),
        ("amqp://guest:guest@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        ("redis://:pw@cache:6379/0 or https://ghp_tok@github.com/x", "redis://:***@cache:6379/0 or https://***@github.com/x"),
        ("password=abc123 user=bob", "password=*** user=bob"),
        ("{'password': 'two words', 'user': 'x'}", "{'password': ***, 'user': 'x'}"),
        ('{"api_key": "zz", "epochs": 3}', '{"api_key": ***, "epochs": 3}'),
        ("token: xyz, secret_key=k, OPENAI_API_KEY=sk-1", "token: ***, secret_key=***, OPENAI_API_KEY=***"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer ***"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': 'Basic ***'}"),
        ("sent Bearer eyJhbGciOiJIUzI1NiJ9", "sent Bearer ***"),
        # what stays: ordinary text that merely resembles a credential
        ("max_tokens=50 epochs=3 loss 0.12 at 3/8", "max_tokens=50 epochs=3 loss 0.12 at 3/8"),
        ("user@example.com read http://host/a@b", "user@example.com read http://host/a@b"),
    ]  # fmt: skip
    assert MASK == "***" and [(text, redact(text)) for text, _ in cases] == cases


# -- the handler, in this process -----------------------------------------------------------------------


def _logger(handler: logging.Handler, name: str = "stockq.test.job_log") -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    return logger


def test_the_handler_keeps_only_job_lines_and_never_raises_into_the_job(
    settings: Settings, r: redis.Redis, jobs: JobRegistry
) -> None:
    job = jobs.create("ping", {}, "stockq.ping", owner="alice")
    handler = JobLogHandler(settings.redis_url, Redactor.from_settings(settings))
    logger = _logger(handler)
    logger.info("outside any job: not kept")
    with logs.job_context(job_id=job.id, attempt=1):
        logger.debug("below INFO: not kept")
        logger.info("first %s", ALICE)
        try:
            {}["missing"]
        except KeyError:
            logger.exception("a lookup failed")
        logger.error("third")
        # library noise is not the job's story: warnings of deprecations, Feast's registry chatter at INFO
        _logger(handler, "py.warnings").warning("DeprecationWarning: something old")
        _logger(handler, "feast.infra.registry").info("Registry cache expired, so refreshing")
    lines, cursor = jobs.log_lines(job.id)
    assert [(ln["n"], ln["level"], ln["logger"], ln["message"]) for ln in lines] == [
        (0, "INFO", "stockq.test.job_log", f"first {MASK}"),
        (1, "ERROR", "stockq.test.job_log", "a lookup failed"),
        (2, "ERROR", "stockq.test.job_log", "third"),
    ]
    assert lines[1]["exception"] == "KeyError" and "exception" not in lines[0] and cursor == 3
    assert "Traceback" not in r.lrange(keys.job_log(job.id), 0, -1)[1].decode()
    # a job whose record is gone keeps no log (it would outlive its job)
    with logs.job_context(job_id="0" * 32, attempt=1):
        logger.info("nobody's")
    assert not r.exists(keys.job_log("0" * 32))

    # Redis that never answers: the line is dropped after the short timeout, logging never raises, and the
    # job's next lines (for a few seconds) do not even try
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever answers on them
        stuck = JobLogHandler(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", Redactor([]))
        logger = _logger(stuck)
        with logs.job_context(job_id=job.id, attempt=1):
            for i in range(5):
                logger.info("dropped %d", i)
        silent.setblocking(False)
        tried = 0
        with contextlib.suppress(BlockingIOError):
            while silent.accept()[0].close() is None:
                tried += 1
    assert tried == 1 and jobs.log_lines(job.id)[1] == 3


# -- cursors --------------------------------------------------------------------------------------------


def test_log_cursors_survive_the_trim(jobs: JobRegistry) -> None:
    job = jobs.create("ping", {}, "stockq.ping", owner="alice")
    assert jobs.log_lines(job.id) == ([], 0)
    for i in range(510):
        assert jobs.append_log(job.id, {"level": "INFO", "logger": "t", "message": f"m{i}"}) == i
    lines, cursor = jobs.log_lines(job.id)
    assert [ln["n"] for ln in lines] == list(range(10, 510)) and cursor == 510
    assert [ln["message"] for ln in jobs.log_lines(job.id, after=3, limit=2)[0]] == ["m10", "m11"]
    page, cursor = jobs.log_lines(job.id, after=505, limit=3)
    assert [ln["message"] for ln in page] == ["m505", "m506", "m507"] and cursor == 508
    assert jobs.log_lines(job.id, after=510) == ([], 510)
    assert jobs.log_lines(job.id, after=3, limit=0) == ([], 3)


# -- short ids ------------------------------------------------------------------------------------------


def test_short_ids_resolve_within_the_tenant_by_scanning_its_index(
    r: redis.Redis, jobs: JobRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(["abcd1" + "0" * 27, "abcd2" + "0" * 27, "abce1" + "0" * 27, "dead1" + "0" * 27,
                *(f"feed{i:02d}" + "0" * 26 for i in range(12))])  # fmt: skip
    monkeypatch.setattr(JobRegistry, "new_id", staticmethod(lambda: next(ids)))
    first, second = (jobs.create("ping", {}, "stockq.ping", owner="alice").id for _ in range(2))
    theirs = jobs.create("ping", {}, "stockq.ping", owner="bob").id
    gone = jobs.create("ping", {}, "stockq.ping", owner="alice", retention_s=1).id
    many = [jobs.create("ping", {}, "stockq.ping", owner="alice").id for _ in range(12)]

    r.config_resetstat()
    assert jobs.resolve_id("alice", "abcd1") == [first]
    ran = commands(r)
    assert ran["hgetall"] == ran["hget"] == 0 and ran["zscan"] >= 1 and ran["exists"] == 1, ran
    assert jobs.resolve_id("alice", "ABCD") == [second, first]  # ambiguous: every candidate, newest first
    assert jobs.resolve_id("alice", first) == [first]  # a whole id
    assert jobs.resolve_id("alice", "abce") == []  # another tenant's
    assert jobs.resolve_id("bob", "abce") == [theirs] and jobs.resolve_id("bob", first) == []
    assert jobs.resolve_id(None, "abc") == []  # too short to look up
    assert jobs.resolve_id(None, "abce1") == [theirs]  # the admin sees every tenant's
    assert jobs.resolve_id(None, "abcd") == [second, first]
    assert jobs.resolve_id("alice", "feed") == many[::-1][:10]  # at most ten
    for junk in ("abcd-", "zzzz", "", " ", "abcd1" + "0" * 28):
        assert jobs.resolve_id("alice", junk) == [], junk
    wait_until(lambda: not r.exists(keys.job(gone)), 5, "the short-lived record to expire")
    assert jobs.resolve_id("alice", "dead") == []  # still in the index until trimmed, but no job any more


# -- a real worker --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[Celery]:
    importlib.import_module("tests.log_job")  # the job type, in this process too (it submits)
    proc: Proc = start_worker(settings, "ingest", "logs", app="tests.log_job", OPENAI_API_KEY=OPENAI)
    try:
        yield create_celery(settings)
    finally:
        proc.stop()


def _run(celery: Celery, jobs: JobRegistry, r: redis.Redis, lines: int) -> tuple[str, list[str]]:
    """Run a logtest job to its end; its id and the messages its channel carried meanwhile."""
    from tests.log_job import LOG_JOB

    job = jobs.create(LOG_JOB.name, {"lines": lines}, LOG_JOB.task, owner="alice", retention_s=300)
    events = r.pubsub()
    events.subscribe(keys.job_events(job.id))
    assert events.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    publish(celery, jobs, job.id, job.task, job.attempt, kwargs=job.task_kwargs)
    wait_until(lambda: (j := jobs.get(job.id)) is not None and j.finished, 60, "the logtest job")
    heard: list[str] = []
    while (message := events.get_message(timeout=0.5)) is not None:  # all were sent before it finished
        heard.append(message["data"].decode())
    events.close()
    return job.id, heard


@pytest.mark.slow
def test_a_job_s_lines_are_kept_in_order_masked_expiring_with_it_and_announced(
    worker: Celery, jobs: JobRegistry, r: redis.Redis
) -> None:
    from tests.log_job import KV_PASSWORD, URL_PASSWORD

    job_id, heard = _run(worker, jobs, r, lines=5)
    job = jobs.get(job_id)
    assert job is not None and job.status == JobStatus.SUCCEEDED, job
    lines, cursor = jobs.log_lines(job_id)
    assert [ln["n"] for ln in lines] == list(range(cursor)) and cursor == len(lines)
    mine = [(ln["level"], ln["message"]) for ln in lines if ln["logger"] == "tests.log_job"]
    assert mine == [
        ("INFO", f"tenant key {MASK}, whole entry {MASK}"),
        ("INFO", f"tenant key {MASK}, whole entry {MASK}"),
        ("INFO", f"connecting to redis://:{MASK}@cache:6379/0 with password={MASK}"),
        ("WARNING", "the step failed; going on"),
        *(("INFO", f"line {i}") for i in range(5)),
    ]
    assert next(ln for ln in lines if ln["level"] == "WARNING")["exception"] == "ValueError"
    # the stages and the outcome are in the job's log too, in their place
    messages = [ln["message"] for ln in lines]
    assert messages.index("stage secrets") < messages.index(mine[0][1])
    assert messages.index(mine[3][1]) < messages.index("stage count") < messages.index("line 0")
    assert messages[-1] == f"job {job_id} succeeded"
    stored = b"".join(r.lrange(keys.job_log(job_id), 0, -1)).decode()
    for secret in (ALICE, BOB, OPENAI, URL_PASSWORD, KV_PASSWORD, "boom", "Traceback", "below INFO"):
        assert secret not in stored, secret
    # Redis time, in order, within the job's run
    stamps = [ln["ts"] for ln in lines]
    assert stamps == sorted(stamps) and job.started_at is not None and job.finished_at is not None
    assert job.started_at <= stamps[0] and stamps[-1] <= job.finished_at + 1
    # it expires with its record
    assert abs(r.pttl(keys.job_log(job_id)) - r.pttl(keys.job(job_id))) < 5000 and r.ttl(keys.job(job_id)) > 0
    # the channel: "job" for the start and every change after it, "log" for every line kept
    assert heard[0] == "job" and heard.count("log") == len(lines)
    assert heard.count("job") >= 4  # started, two stages, finished
    assert heard.index("log") >= 1  # the first line follows the start's change
    assert messages[0].startswith("attempt 1 started on ")


@pytest.mark.slow
def test_a_job_that_logs_600_lines_keeps_the_last_500(
    worker: Celery, jobs: JobRegistry, r: redis.Redis
) -> None:
    job_id, heard = _run(worker, jobs, r, lines=600)
    lines, cursor = jobs.log_lines(job_id)
    assert len(lines) == 500 == r.llen(keys.job_log(job_id)) and cursor == heard.count("log")
    assert [ln["n"] for ln in lines] == list(range(cursor - 500, cursor))
    counted = [ln["message"] for ln in lines if ln["logger"] == "tests.log_job"]
    assert counted == [f"line {i}" for i in range(600 - len(counted), 600)] and len(counted) >= 490
    assert jobs.log_lines(job_id, after=cursor) == ([], cursor)
    assert json.loads(r.lindex(keys.job_log(job_id), -1) or b"{}")["message"] == f"job {job_id} succeeded"
