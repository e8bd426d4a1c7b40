"""API contract without workers: validation, errors, auth, idempotency, cancel, readiness, OpenAPI."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from prometheus_client import generate_latest

from tests.conftest import flush_db, make_settings
from tests.procs import free_port, start_redis
from webapp import create_app
from workers.jobs import Delivery, JobRegistry, JobStatus
from workers.jobs.model import Start


@pytest.fixture()
def settings(tmp_path: Path):
    s = make_settings(tmp_path, 10, 11)
    flush_db(s.redis_url)
    return s


@pytest.fixture()
def client(settings) -> FlaskClient:
    return create_app(settings).test_client()


KEY_A = "a" * 8 + "-key-0123456789"
KEY_B = "b" * 8 + "-key-0123456789"


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return body["error"]


def test_submit_answers_202_with_location_and_a_queued_record(client: FlaskClient) -> None:
    r = client.post("/train", json={"ticker": "aapl", "strategy": "freeze", "epochs": 3})
    assert r.status_code == 202
    body = r.get_json()
    assert body["status"] == "queued"
    assert r.headers["Location"] == body["status_url"] == f"/status/{body['job_id']}"
    job = client.get(body["status_url"]).get_json()
    assert job["type"] == "train"
    assert job["params"] == {"ticker": "AAPL", "strategy": "freeze", "epochs": 3}
    assert job["status"] == "queued" and job["submitted_at"] > 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/train", {"ticker": "../etc"}, "ticker"),
        ("/train", {"ticker": ""}, "ticker"),
        ("/train", {"ticker": "A" * 200}, "ticker"),
        ("/train", {"ticker": "AAPL;DEL"}, "ticker"),
        ("/train", {"ticker": "AAPL", "epochs": 0}, "epochs"),
        ("/train", {"ticker": "AAPL", "epochs": 501}, "epochs"),
        ("/train", {"ticker": "AAPL", "strategy": "magic"}, "strategy"),
        ("/train", {"ticker": "AAPL", "extra": 1}, "extra"),
        ("/train", {}, "ticker"),
        ("/predict-child", {"ticker": "AAPL", "model": "best"}, "model"),
        ("/predict", {"tickers": []}, "tickers"),
        ("/predict", {"tickers": [f"T{i}" for i in range(101)]}, "tickers"),
        ("/predict", {"tickers": ["AAPL", "MSFT", "AAPL"]}, "tickers"),
        ("/agent/chat", {"ticker": "AAPL", "question": "x" * 501}, "question"),
        ("/evaluate", {"tickers": []}, "tickers"),
        ("/evaluate", {"tickers": ["AAPL", "AAPL"]}, "tickers"),
        ("/evaluate", {"tickers": ["../etc"]}, "tickers"),
        ("/evaluate", {"tickers": "AAPL"}, "tickers"),
        ("/evaluate", {"universe": "world"}, "universe"),
        ("/evaluate", {"first_year": 1899}, "first_year"),
        ("/evaluate", {"first_year": "2021"}, "first_year"),
        ("/evaluate", {"first_year": 2021.5}, "first_year"),
        ("/evaluate", {"first_year": True}, "first_year"),
        ("/evaluate", {"refit_months": 0}, "refit_months"),
        ("/evaluate", {"refit_months": 61}, "refit_months"),
        ("/evaluate", {"epochs": 3}, "epochs"),
    ],
)
def test_schema_errors_are_422_naming_the_field(
    client: FlaskClient, path: str, body: dict, field: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422
    err = error_of(r)
    assert err["code"] == "validation_error"
    assert field in err["message"]


def test_evaluate_answers_202_and_records_what_was_asked(client: FlaskClient) -> None:
    r = client.post("/evaluate", json={})
    assert r.status_code == 202 and r.headers["Location"] == r.get_json()["status_url"]
    job = client.get(r.headers["Location"]).get_json()
    # Left out: every ingested ticker and the worker's settings, filled in where the job runs.
    assert (job["type"], job["status"]) == ("evaluate", "queued")
    assert job["params"] == {"tickers": None, "universe": None, "first_year": None, "refit_months": None}
    body = {"tickers": ["aapl", "^gspc"], "universe": "gspc", "first_year": 2021, "refit_months": 6}
    job = client.get(client.post("/evaluate", json=body).headers["Location"]).get_json()
    assert job["params"] == {**body, "tickers": ["AAPL", "^GSPC"]}
    # JSON has one number type (2021.0 is the integer 2021); a ticker in another case is the same ticker,
    # taken once where it first appears
    body = {"tickers": ["msft", "AAPL", "MSFT"], "universe": None, "first_year": 2021.0, "refit_months": 6.0}
    job = client.get(client.post("/evaluate", json=body).headers["Location"]).get_json()
    assert job["params"] == {**body, "tickers": ["MSFT", "AAPL"], "first_year": 2021, "refit_months": 6}
    assert [j["type"] for j in client.get("/jobs?type=evaluate").get_json()["jobs"]] == ["evaluate"] * 3


def test_a_running_evaluation_is_cancelled_between_origins(client: FlaskClient, settings) -> None:
    job_id = client.post("/evaluate", json={"first_year": 2021}).get_json()["job_id"]
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
    assert jobs.start(Delivery(job_id, 1), "w@h", 30) == Start.STARTED
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 202 and r.get_json()["cancel_requested"] is True
    assert jobs.cancel_requested(job_id)


@pytest.mark.parametrize("wait", ["-1", "10.5", "abc"])
def test_wait_out_of_range_is_422(client: FlaskClient, wait: str) -> None:
    r = client.post(f"/predict-child?wait={wait}", json={"ticker": "AAPL"})
    assert r.status_code == 422
    assert "wait" in error_of(r)["message"]


def test_hostile_bodies_get_clear_4xx(client: FlaskClient) -> None:
    r = client.post("/train", data="[" * 60_000, content_type="application/json")
    assert r.status_code == 400 and "nested" in error_of(r)["message"]
    for body in ("null", "[1]", '"{\\"ticker\\": \\"AAPL\\"}"', "5"):
        r = client.post("/train", data=body, content_type="application/json")
        assert r.status_code == 422 and error_of(r)["message"].startswith("body: must be a JSON object"), body
    for epochs in ("5", 5.5, True):
        assert client.post("/train", json={"ticker": "AAPL", "epochs": epochs}).status_code == 422
    accepted = client.post("/train", json={"ticker": "AAPL", "epochs": 5.0})  # JSON's 5.0 is the integer 5
    assert accepted.status_code == 202
    assert client.get(accepted.headers["Location"]).get_json()["params"]["epochs"] == 5
    r = client.post("/train", json={"ticker": "AAPL"}, headers={"Authorization": "Bearer kéy"})
    assert r.status_code == 202  # auth is off here; the header is simply ignored
    r = client.put("/train", json={"ticker": "AAPL"})
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    r = client.post("/status/abc", data="x", content_type="text/plain")
    assert r.status_code == 405
    r = client.post("/predict", json={"tickers": ["A"] * 13_000})
    assert r.status_code == 422 and "tickers" in error_of(r)["message"]
    # empty filters are values the schema refuses (an enum, an integer), not "no filter"
    assert client.get("/jobs?status=&type=&limit=").status_code == 422


def test_chunked_body_over_the_limit_is_413_not_truncated(settings) -> None:
    app = create_app(settings)
    body = b'{"ticker": "AAPL"}' + b" " * 70_000
    environ = {"wsgi.input_terminated": True}
    client = app.test_client()
    r = client.post(
        "/train",
        data=body,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=environ,
    )
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
    assert client.get("/jobs").get_json()["count"] == 0


def test_malformed_json_wrong_type_and_oversize_bodies(client: FlaskClient) -> None:
    r = client.post("/train", data="{not json", content_type="application/json")
    assert r.status_code == 400 and error_of(r)["code"] == "malformed_json"
    r = client.post("/train", data="ticker=AAPL", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415 and error_of(r)["code"] == "unsupported_media_type"
    r = client.post("/train", data='{"ticker": "' + "A" * 70_000 + '"}', content_type="application/json")
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
    r = client.post("/train", data="", content_type="application/json")
    assert r.status_code == 400


def test_unknown_job_is_404_whatever_its_shape(client: FlaskClient) -> None:
    for job_id in ("0" * 32, "does-not-exist", "123e4567-e89b-12d3-a456-426614174000", "ABC"):
        r = client.get(f"/status/{job_id}")
        assert r.status_code == 404 and error_of(r)["code"] == "job_not_found", job_id
        assert client.delete(f"/jobs/{job_id}").status_code == 404
    assert client.get("/status/" + "x" * 200).status_code == 422
    r = client.get("/nowhere")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"


def test_every_job_path_takes_a_unique_prefix_of_the_caller_s_job(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, api_keys=f"alice:{KEY_A},bob:{KEY_B}", admin_keys=f"ops:{'o' * 24}")
    flush_db(s.redis_url)
    app = create_app(s)
    client, jobs = app.test_client(), app.extensions["stockq"].jobs
    alice, bob, ops = ({"Authorization": f"Bearer {k}"} for k in (KEY_A, KEY_B, "o" * 24))
    # Ids with a known start (the registry's own id source, replaced), so two jobs share a prefix.
    jobs.new_id = lambda: "beef" + uuid.uuid4().hex[4:]
    first, second = (client.post("/train", json={"ticker": "AAPL"}, headers=alice).get_json()["job_id"]
                     for _ in range(2))  # fmt: skip
    jobs.new_id = lambda: "cafe" + uuid.uuid4().hex[4:]
    other = client.post("/train", json={"ticker": "KO"}, headers=bob).get_json()["job_id"]
    unique = next(first[:n] for n in range(5, 32) if not second.startswith(first[:n]))
    for method, path in (("GET", "/status/{}"), ("GET", "/jobs/{}/log"), ("GET", "/jobs/{}/events"),
                         ("DELETE", "/jobs/{}"), ("POST", "/jobs/{}/retry")):  # fmt: skip
        r = client.open(path.format("beef"), method=method, headers=alice)
        assert r.status_code == 409, (path, r.get_json())
        body = r.get_json()["error"]
        assert (body["code"], body["details"]["candidates"]) == ("ambiguous_job_id", sorted([first, second]))
        for ref in ("cafe", other[:8], "bee"):  # another tenant's job, and under 4 characters: no job
            r = client.open(path.format(ref), method=method, headers=alice)
            assert r.status_code == 404 and error_of(r)["code"] == "job_not_found", (path, ref)
    assert client.get(f"/status/{unique.upper()}", headers=alice).get_json()["job_id"] == first
    assert client.delete(f"/jobs/{unique}", headers=alice).get_json()["job_id"] == first  # cancels that one
    assert client.get(f"/status/{first}", headers=alice).get_json()["status"] == "cancelled"
    assert client.post(f"/jobs/{unique}/retry", headers=alice).get_json()["job_id"] == first
    assert client.get(f"/status/{second}", headers=alice).get_json()["status"] == "queued"
    assert client.get("/status/cafe", headers=ops).get_json()["job_id"] == other  # an admin sees every job


def test_idempotency_key_returns_the_first_job_and_rejects_another_body(
    client: FlaskClient, settings
) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/predict-child", json={"ticker": "AAPL"}, headers=headers)
    again = client.post("/predict-child", json={"ticker": "AAPL"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["job_id"] == again.get_json()["job_id"]
    other = client.post("/predict-child", json={"ticker": "MSFT"}, headers=headers)
    assert other.status_code == 422 and error_of(other)["code"] == "idempotency_key_reused"
    jobs = client.get("/jobs?type=predict").get_json()
    assert jobs["count"] == 1
    # the same key on another endpoint is another body too
    assert client.post("/agent/chat", json={"ticker": "AAPL"}, headers=headers).status_code == 422


def test_cancel_queued_job_then_finished_job_is_409(client: FlaskClient, settings) -> None:
    job_id = client.post("/train", json={"ticker": "AAPL"}).get_json()["job_id"]
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200
    assert r.get_json()["status"] == "cancelled"
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 409 and error_of(r)["code"] == "job_finished"
    # a worker that picks the message up later must not run it
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
    assert jobs.start(Delivery(job_id, 1), "w@h", 30) == Start.FINISHED
    assert jobs.get(job_id).status == JobStatus.CANCELLED


def test_cancel_running_job_sets_the_flag_and_answers_202(client: FlaskClient, settings) -> None:
    job_id = client.post("/train", json={"ticker": "AAPL"}).get_json()["job_id"]
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
    assert jobs.start(Delivery(job_id, 1), "w@h", 30) == Start.STARTED
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 202
    assert r.get_json()["cancel_requested"] is True
    assert jobs.cancel_requested(job_id)


def test_a_running_ping_is_not_cancellable(client: FlaskClient, settings) -> None:
    job_id = client.post("/jobs/ping").get_json()["job_id"]
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
    assert jobs.start(Delivery(job_id, 1), "w@h", 30) == Start.STARTED
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 409 and error_of(r)["code"] == "not_cancellable"
    assert jobs.get(job_id).cancel_requested is False


def test_retry_only_failed_or_cancelled_jobs_under_the_same_id(client: FlaskClient, settings) -> None:
    job_id = client.post("/train", json={"ticker": "AAPL"}).get_json()["job_id"]
    r = client.post(f"/jobs/{job_id}/retry")
    assert r.status_code == 409 and error_of(r)["code"] == "not_retryable"
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    r = client.post(f"/jobs/{job_id}/retry")
    assert r.status_code == 202 and r.get_json()["job_id"] == job_id
    job = client.get(f"/status/{job_id}").get_json()
    assert job["status"] == "queued" and job["attempt"] == 2 and job["lost"] == 0 and job["error"] is None
    # the new attempt is the one a worker may start; the first delivery is stale now
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
    assert jobs.start(Delivery(job_id, 1), "w@h", 30) == Start.STALE
    assert jobs.start(Delivery(job_id, 2), "w@h", 30) == Start.STARTED
    assert client.post(f"/jobs/{'0' * 32}/retry").status_code == 404


def test_job_list_is_newest_first_and_filters(client: FlaskClient) -> None:
    ids = []
    for ticker in ("AAPL", "MSFT", "KO"):
        ids.append(client.post("/predict-child", json={"ticker": ticker}).get_json()["job_id"])
        time.sleep(0.01)
    train_id = client.post("/train", json={"ticker": "KO"}).get_json()["job_id"]
    client.delete(f"/jobs/{ids[0]}")
    listed = client.get("/jobs").get_json()["jobs"]
    assert [j["id"] for j in listed] == [train_id, *reversed(ids)]
    assert [j["id"] for j in client.get("/jobs?type=predict&limit=2").get_json()["jobs"]] == [ids[2], ids[1]]
    assert [j["id"] for j in client.get("/jobs?status=cancelled").get_json()["jobs"]] == [ids[0]]
    assert client.get("/jobs?status=weird").status_code == 422
    assert client.get("/jobs?limit=0").status_code == 422


def test_auth_required_when_keys_are_set(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, api_keys=f"alice:{KEY_A}, {KEY_B}")
    client = create_app(s).test_client()
    r = client.post("/train", json={"ticker": "AAPL"})
    assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"
    assert client.get("/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/jobs", headers={"Authorization": f"Basic {KEY_A}"}).status_code == 401
    assert client.get("/jobs", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 200
    # probes, the OpenAPI document and its docs page are public
    for path in ("/health", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    assert "auth" not in client.get("/ready").get_json()  # nobody learns from a probe whether auth is on


def test_ready_names_what_is_missing(client: FlaskClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 503
    body = r.get_json()
    assert body["redis"] is True and "auth" not in body
    assert body["missing"] == ["worker:training", "worker:inference", "worker:agent", "worker:ingest"]


def test_openapi_is_generated_from_the_models(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in ("/train", "/predict-child", "/predict", "/agent/chat", "/evaluate", "/status/{job_id}",
                 "/jobs/{job_id}"):  # fmt: skip
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert schemas["TrainRequest"]["properties"]["epochs"]["anyOf"][0]["maximum"] == 500
    assert set(schemas["PredictRequest"]["properties"]["model"]["enum"]) == {"auto", "child", "parent"}


def test_api_metrics_are_per_process_http_figures_only(client: FlaskClient) -> None:
    """Backend-wide figures come from `stockq exporter` once; the API's own would double with replicas."""

    def count(text: str, labels: str) -> float:
        match = re.search(rf"^stockq_http_request_total\{{{re.escape(labels)}\}} ([0-9.]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    health, predict = (
        'endpoint="/health",method="GET",status="200"',
        'endpoint="/predict-child",method="POST",status="202"',
    )

    def own() -> str:
        # This app's own registry: in prometheus_client's multiprocess mode (Feast turns it on in this
        # test process) /metrics sums every file of the process's directory, other apps' included.
        registry = client.application.extensions["stockq_metrics"].registry
        return generate_latest(registry).decode()

    # In that mode a label set's value starts from the process file's slot, which another app of this
    # test process may have counted in: the first request of each kind only creates the series here.
    client.post("/predict-child", json={"ticker": "AAPL"})
    client.get("/health")
    before = own()
    client.post("/predict-child", json={"ticker": "AAPL"})
    client.get("/health")
    after = own()
    assert count(after, health) - count(before, health) == 1
    assert count(after, predict) - count(before, predict) == 1
    text = client.get("/metrics").get_data(as_text=True)
    assert "stockq_http_request_total" in text
    assert "stockq_jobs_submitted_total" not in text and "stockq_queue_length" not in text


def test_redis_down_is_503_broker_unavailable_within_2s(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    s = make_settings(tmp_path, 0, 1, redis_url=f"redis://127.0.0.1:{port}/0")
    client = create_app(s).test_client()
    job_id = client.post("/train", json={"ticker": "AAPL"}).get_json()["job_id"]
    server.kill()
    for method, path, body in (
        ("post", "/train", {"ticker": "AAPL"}),
        ("get", f"/status/{job_id}", None),
        ("get", "/jobs", None),
        ("delete", f"/jobs/{job_id}", None),
    ):
        started = time.monotonic()
        r = getattr(client, method)(path, json=body) if body else getattr(client, method)(path)
        elapsed = time.monotonic() - started
        assert r.status_code == 503, (path, r.get_json())
        assert error_of(r)["code"] == "broker_unavailable"
        assert elapsed < 2.0, (path, elapsed)
    ready = client.get("/ready")
    assert ready.status_code == 503 and "redis" in ready.get_json()["missing"]


def test_rate_limits_are_per_tenant_and_per_endpoint_class(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, api_keys=f"alice:{KEY_A},bob:{KEY_B}", rate_limit_train="2/minute",
                      rate_limit_agent="1/minute", rate_limit="5/minute")  # fmt: skip
    flush_db(s.redis_url)
    client = create_app(s).test_client()
    alice = {"Authorization": f"Bearer {KEY_A}"}
    codes = [client.post("/train", json={"ticker": "AAPL"}, headers=alice).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    limited = client.post("/train", json={"ticker": "MSFT"}, headers=alice)
    assert limited.status_code == 429 and error_of(limited)["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    # other classes have their own budgets; the agent's is smaller than a ping's
    assert client.post("/agent/chat", json={"ticker": "AAPL"}, headers=alice).status_code == 202
    assert client.post("/agent/chat", json={"ticker": "AAPL"}, headers=alice).status_code == 429
    assert client.post("/predict-child", json={"ticker": "AAPL"}, headers=alice).status_code == 202
    # reads are limited too, probes never
    reads = [client.get("/jobs", headers=alice).status_code for _ in range(6)]
    assert reads == [200] * 5 + [429]
    assert all(client.get("/health").status_code == 200 for _ in range(10))
    # another tenant has its own budget
    bob = {"Authorization": f"Bearer {KEY_B}"}
    assert client.post("/train", json={"ticker": "AAPL"}, headers=bob).status_code == 202


def test_an_evaluation_is_charged_like_a_training(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, rate_limit_train="2/minute")
    flush_db(s.redis_url)
    client = create_app(s).test_client()
    assert client.post("/train", json={"ticker": "AAPL"}).status_code == 202
    assert client.post("/evaluate", json={}).status_code == 202
    limited = client.post("/evaluate", json={})
    assert limited.status_code == 429 and error_of(limited)["code"] == "rate_limited"
    assert client.post("/predict-child", json={"ticker": "AAPL"}).status_code == 202  # its own budget
    assert client.get("/jobs?type=evaluate").get_json()["count"] == 1  # the refused one made no job


def test_with_auth_off_the_limit_identity_is_the_address_not_the_token(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, rate_limit_train="1/minute")
    flush_db(s.redis_url)
    client = create_app(s).test_client()
    assert (
        client.post("/train", json={"ticker": "AAPL"}, headers={"Authorization": "Bearer a"}).status_code
        == 202
    )
    rotated = client.post("/train", json={"ticker": "AAPL"}, headers={"Authorization": "Bearer b"})
    assert rotated.status_code == 429


def test_non_ascii_bearer_token_is_401_not_500(tmp_path: Path) -> None:
    client = create_app(make_settings(tmp_path, 10, 11, api_keys=KEY_A)).test_client()
    r = client.get("/jobs", headers={"Authorization": "Bearer kéy"})
    assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"


def test_job_results_are_plain_json() -> None:
    import numpy as np

    from workers.tasks import jsonable

    value = {
        "loss": float("nan"),
        "n": np.int64(3),
        "x": np.float32(0.5),
        "a": np.arange(2),
        "d": [float("inf")],
    }
    assert jsonable(value) == {"loss": None, "n": 3, "x": 0.5, "a": [0, 1], "d": [None]}
