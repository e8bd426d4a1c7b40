"""Three Redis troubles, three answers from a real app on a private redis-server: full (maxmemory reached
with noeviction: 503 `broker_full`), unreachable (503 `broker_unavailable`) and a script that fails on
damaged data (500 `broker_error` with an error_id; Redis' own words only in the log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import make_settings
from tests.procs import Proc, free_port, start_redis
from webapp import create_app
from workers.jobs import keys

Server = tuple[Proc, redis.Redis, FlaskClient]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    settings = make_settings(tmp_path / "var", 0, 1, redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        yield proc, redis.Redis(port=port), create_app(settings).test_client()
    finally:
        proc.stop()


def fill(client: redis.Redis) -> None:
    """A tiny maxmemory just above what the server holds, then writes until Redis refuses them."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 256 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(10_000):
            client.set(f"ballast:{n}", b"x" * 4096)


def error_of(response: TestResponse) -> dict[str, str]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_a_full_redis_answers_broker_full_and_reads_still_work(server: Server) -> None:
    _, client, api = server
    queued = api.post("/jobs/ping").get_json()["job_id"]
    fill(client)
    r = api.post("/jobs/ping")
    assert r.status_code == 503, r.get_json()
    assert error_of(r)["code"] == "broker_full"
    assert int(r.headers["Retry-After"]) >= 30  # an operator must free memory: no hammering meanwhile
    # Redis still answers reads when full: the API is no more down than Redis is.
    assert api.get(f"/status/{queued}").get_json()["status"] == "queued"
    client.config_set("maxmemory", 0)  # memory freed: submissions work again
    assert api.post("/jobs/ping").status_code == 202


def test_an_unreachable_redis_answers_broker_unavailable(server: Server) -> None:
    proc, _, api = server
    proc.stop()
    r = api.post("/jobs/ping")
    assert r.status_code == 503
    assert error_of(r)["code"] == "broker_unavailable"
    assert int(r.headers["Retry-After"]) <= 10


def test_a_failing_script_is_a_500_whose_detail_stays_in_the_log(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, api = server
    # Damaged data: the tenant's in-flight set (a Redis set) overwritten by a string. The submit script's
    # SCARD on it fails with WRONGTYPE.
    client.set(keys.inflight("anonymous"), "not a set")
    with caplog.at_level(logging.ERROR, logger="webapp.errors"):
        r = api.post("/jobs/ping")
    assert r.status_code == 500
    error = error_of(r)
    assert error["code"] == "broker_error" and len(error["error_id"]) == 12
    assert error["error_id"] in error["message"]
    assert "WRONGTYPE" not in r.get_data(as_text=True) and "script" not in r.get_data(as_text=True)
    logged = [rec for rec in caplog.records if error["error_id"] in rec.getMessage()]
    assert logged and "WRONGTYPE" in str(logged[0].exc_info[1])
