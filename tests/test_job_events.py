"""GET /jobs/<id>/events (Server-Sent Events) and GET /jobs/<id>/log: in process against Redis for the
stream's rules (its opening, a change, a log line, the end, no waiting slot), then end to end through
gunicorn and a real Celery worker: a job followed from queued to its final status, tenants kept apart,
short ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from stockq.settings import Settings
from tests.conftest import flush_db, fresh_settings, make_settings
from tests.procs import Proc, free_port, start_all, start_gunicorn, start_worker, wait_until
from webapp import create_app
from webapp.events import BUSY_RETRY_MS, RETRY_MS
from workers.jobs import JobRegistry

ALICE = "alice-events-key-0123456789"
BOB = "bob-events-key-0123456789ab"
RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}


def parse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events as dicts (event, id, data as JSON, retry); a comment is {"comment": text}."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value
    if event:
        yield event


def body_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    for chunk in chunks:
        yield from chunk.decode().split("\n")


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path, 10, 11)
    flush_db(s.redis_url)
    return s


def line(message: str) -> dict[str, str]:
    return {"level": "INFO", "logger": "tests", "message": message}


def test_the_stream_opens_with_the_record_follows_changes_and_ends_at_the_final_status(settings) -> None:
    app = create_app(settings)
    client, jobs = app.test_client(), app.extensions["stockq"].jobs
    job_id = client.post("/train", json={"ticker": "AAPL"}).get_json()["job_id"]
    jobs.append_log(job_id, line("before the stream"))
    response = client.get(f"/jobs/{job_id[:8]}/events", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    chunks = iter(response.response)
    opening = list(parse(body_lines(iter([next(chunks), next(chunks)]))))
    assert [e["event"] for e in opening] == ["job", "log"]
    assert (
        opening[0]["retry"] == str(RETRY_MS)
        and opening[0]["data"] == client.get(f"/status/{job_id}").get_json()
    )
    assert opening[1]["data"]["lines"][0]["message"] == "before the stream" and opening[1]["id"] == "1"
    jobs.append_log(job_id, line("while streaming"))
    (logged,) = parse(body_lines(iter([next(chunks)])))
    assert (logged["event"], logged["id"], logged["data"]["next"]) == ("log", "2", 2)
    assert [entry["message"] for entry in logged["data"]["lines"]] == ["while streaming"]
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    rest = list(parse(body_lines(chunks)))  # the cancelled record, then the stream ends by itself
    assert [(e["event"], e["data"]["status"], e["id"]) for e in rest] == [("job", "cancelled", "2")]
    response.close()
    assert app.extensions["stockq"].waiting._value == settings.max_waiting_per_process  # the slot is back


def test_a_finished_job_s_stream_resumes_its_log_and_ends_at_once(settings) -> None:
    app = create_app(settings)
    client, jobs = app.test_client(), app.extensions["stockq"].jobs
    job_id = client.post("/train", json={"ticker": "AAPL"}).get_json()["job_id"]
    for i in range(3):
        jobs.append_log(job_id, line(f"line {i}"))
    client.delete(f"/jobs/{job_id}")
    events = list(
        parse(body_lines(client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "1"}).response))
    )
    assert [e["event"] for e in events] == ["job", "log"] and events[0]["data"]["status"] == "cancelled"
    assert [entry["n"] for entry in events[1]["data"]["lines"]] == [1, 2]
    events = list(parse(body_lines(client.get(f"/jobs/{job_id}/events?after=3").response)))
    assert [e["event"] for e in events] == ["job"]  # nothing new in the log
    page = client.get(f"/jobs/{job_id}/log?after=2").get_json()
    assert page["next"] == 3 and [(entry["n"], entry["message"]) for entry in page["lines"]] == [
        (2, "line 2")
    ]
    assert set(page["lines"][0]) == {"n", "ts", "level", "logger", "message"}
    assert client.get(f"/jobs/{job_id}/log?after=-1").status_code == 422
    assert client.get(f"/jobs/{'0' * 32}/events").status_code == 404
    assert client.get(f"/jobs/{'0' * 32}/log").status_code == 404


def test_without_a_free_waiting_slot_the_stream_is_one_answer(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, max_waiting_per_process=0)
    flush_db(s.redis_url)
    client = create_app(s).test_client()
    job_id = client.post("/jobs/ping").get_json()["job_id"]  # queued: no worker
    events = list(parse(body_lines(client.get(f"/jobs/{job_id}/events").response)))
    assert [(e["event"], e["retry"], e["data"]["status"]) for e in events] == [
        ("job", str(BUSY_RETRY_MS), "queued")
    ]


# -- end to end: gunicorn and a real worker ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = fresh_settings(
        tmp_path_factory.mktemp("job_events"), 10, 11, api_keys=f"alice:{ALICE},bob:{BOB}"
    )
    procs: list[Proc] = []
    port = free_port()
    try:
        procs += start_all(
            partial(start_gunicorn, settings, port), partial(start_worker, settings, "ingest", "ingest")
        )
        yield {"settings": settings, "base": f"http://127.0.0.1:{port}"}
    finally:
        for proc in procs:
            proc.stop()


def call(stack: dict, method: str, path: str, key: str = ALICE, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return requests.request(method, stack["base"] + path, headers=headers, timeout=(5, 40), **kwargs)


def follow(stack: dict, ref: str) -> tuple[list[dict[str, Any]], int]:
    """Every event of the job until its final record, reconnecting with Last-Event-ID as EventSource does;
    and how many streams that took."""
    events: list[dict[str, Any]] = []
    streams, last_id = 0, None
    while not events or events[-1].get("data", {}).get("status") not in {"succeeded", "failed", "cancelled"}:
        assert streams < 6, events
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with call(stack, "GET", f"/jobs/{ref}/events", headers=headers, stream=True) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            streams += 1
            for event in parse(r.iter_lines(decode_unicode=True)):
                if "event" in event:
                    events.append(event)
                    last_id = event["id"]
    return events, streams


@pytest.mark.slow
def test_a_job_is_followed_from_queued_to_succeeded_with_its_log_lines(stack: dict) -> None:
    busy = call(stack, "POST", "/ingest", json={"tickers": ["^GSPC", "AAPL"]}).json()["job_id"]
    job_id = call(stack, "POST", "/ingest", json={"tickers": ["MSFT", "KO"]}).json()[
        "job_id"
    ]  # waits for `busy`
    events, _ = follow(stack, job_id[:8])
    first = events[0]
    assert (first["event"], first["data"]["job_id"], first["data"]["status"]) == ("job", job_id, "queued")
    records = [e["data"] for e in events if e["event"] == "job"]
    ranks = [RANK[r["status"]] for r in records]
    assert ranks == sorted(ranks) and records[-1]["status"] == "succeeded", [r["status"] for r in records]
    assert "running" in {r["status"] for r in records}
    assert records[-1] == call(stack, "GET", f"/status/{job_id}").json()
    streamed = [entry for e in events if e["event"] == "log" for entry in e["data"]["lines"]]
    assert streamed, "the ingest logs what it ingested"
    assert [entry["n"] for entry in streamed] == list(range(len(streamed)))
    assert any("MSFT" in entry["message"] for entry in streamed), streamed
    assert call(stack, "GET", f"/jobs/{job_id[:6]}/log").json()["lines"] == streamed
    # Each event's id is the log cursor: a reconnect after the last one gets the final record, no old line.
    resumed = call(stack, "GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": events[-1]["id"]})
    again = list(parse(resumed.iter_lines(decode_unicode=True)))
    assert [e["event"] for e in again] == ["job"] and again[0]["data"]["status"] == "succeeded"
    wait_until(
        lambda: call(stack, "GET", f"/status/{busy}").json()["status"] == "succeeded", 120, "the first job"
    )


@pytest.mark.slow
def test_another_tenant_s_job_is_not_found_on_every_path(stack: dict) -> None:
    job_id = call(stack, "POST", "/jobs/ping").json()["job_id"]
    for ref in (job_id, job_id[:8]):
        for path in (f"/jobs/{ref}/events", f"/jobs/{ref}/log", f"/status/{ref}"):
            r = call(stack, "GET", path, key=BOB)
            assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", path
    assert call(stack, "GET", f"/jobs/{job_id[:8]}/log").status_code == 200


class _PrefixedIds(JobRegistry):
    """Ids with a known start, so two jobs share a prefix without creating thousands of them."""

    prefix = "fee" + uuid.uuid4().hex[:2]

    def new_id(self) -> str:
        return self.prefix + uuid.uuid4().hex[len(self.prefix) :]


@pytest.mark.slow
def test_a_prefix_names_the_one_job_it_starts_and_several_are_a_409(stack: dict) -> None:
    jobs = _PrefixedIds(redis.Redis.from_url(stack["settings"].redis_url), 600)
    ids = sorted(jobs.create("ping", {}, "stockq.ping", owner="alice").id for _ in range(2))
    r = call(stack, "GET", f"/status/{jobs.prefix}")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert (error["code"], error["details"]["candidates"]) == ("ambiguous_job_id", ids)
    assert call(stack, "GET", f"/jobs/{jobs.prefix}/events").status_code == 409
    unique = next(i[:n] for n in range(6, 32) for i in ids if sum(j.startswith(i[:n]) for j in ids) == 1)
    assert call(stack, "GET", f"/status/{unique}").json()["job_id"] in ids
    assert call(stack, "GET", f"/status/{jobs.prefix}", key=BOB).status_code == 404  # not bob's jobs
    assert call(stack, "GET", f"/status/{ids[0][:3]}").status_code == 404  # under 4 characters: no prefix
