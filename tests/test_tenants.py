"""Tenants: each key sees only its own jobs; admins see all; caps, pages and fail-closed start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from stockq.settings import Settings
from tests.conftest import flush_db, make_settings
from webapp import create_app
from webapp.auth import AuthConfigError, check_bind, tenant_keys
from workers.jobs import Delivery, JobRegistry
from workers.jobs.model import Start

A, B, ROOT = "alice-secret-0123456789", "bob-secret-0123456789", "root-secret-0123456789"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    s = make_settings(
        tmp_path, 10, 11, api_keys=f"alice:{A},bob:{B}", admin_keys=f"ops:{ROOT}", max_inflight=3
    )
    flush_db(s.redis_url)
    return s


@pytest.fixture()
def client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


def test_a_tenant_never_sees_or_touches_another_tenant_s_jobs(
    client: FlaskClient, settings: Settings
) -> None:
    a_job = client.post("/train", json={"ticker": "AAPL"}, headers=bearer(A)).get_json()["job_id"]
    b_job = client.post("/train", json={"ticker": "MSFT"}, headers=bearer(B)).get_json()["job_id"]
    for method, path in (("get", f"/status/{a_job}"), ("delete", f"/jobs/{a_job}"),
                         ("post", f"/jobs/{a_job}/retry")):  # fmt: skip
        r = getattr(client, method)(path, headers=bearer(B))
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "job_not_found", (method, path)
    assert client.get(f"/status/{a_job}", headers=bearer(A)).get_json()["status"] == "queued"
    assert [j["job_id"] for j in client.get("/jobs", headers=bearer(B)).get_json()["jobs"]] == [b_job]
    assert client.get(f"/status/{a_job}", headers=bearer(A)).get_json()["owner"] == "alice"
    # the admin sees both, filters by owner and may cancel anyone's job
    seen = {j["job_id"] for j in client.get("/jobs", headers=bearer(ROOT)).get_json()["jobs"]}
    assert seen == {a_job, b_job}
    only_b = client.get("/jobs?owner=bob", headers=bearer(ROOT)).get_json()["jobs"]
    assert [j["job_id"] for j in only_b] == [b_job]
    # a tenant's `owner` filter is ignored: it always sees its own
    assert [j["job_id"] for j in client.get("/jobs?owner=alice", headers=bearer(B)).get_json()["jobs"]] == [
        b_job
    ]
    assert client.delete(f"/jobs/{a_job}", headers=bearer(ROOT)).status_code == 200
    # idempotency keys are per tenant: bob's key never returns alice's job
    key = {"Idempotency-Key": "same"}
    first = client.post("/ingest", json={"tickers": ["KO"]}, headers={**bearer(A), **key}).get_json()[
        "job_id"
    ]
    other = client.post("/ingest", json={"tickers": ["KO"]}, headers={**bearer(B), **key}).get_json()[
        "job_id"
    ]
    assert first != other


def test_the_in_flight_cap_answers_429_until_jobs_finish(client: FlaskClient, settings: Settings) -> None:
    ids = [client.post("/jobs/ping", headers=bearer(A)).get_json()["job_id"] for _ in range(3)]
    over = client.post("/jobs/ping", headers=bearer(A))
    assert over.status_code == 429 and over.get_json()["error"]["code"] == "too_many_inflight"
    assert int(over.headers["Retry-After"]) > 0
    assert client.post("/jobs/ping", headers=bearer(B)).status_code == 202  # bob has his own cap
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
    assert jobs.start(Delivery(ids[0], 1), "w", 30) == Start.STARTED
    assert jobs.succeed(ids[0], {"pong": True}, attempt=1)
    assert client.post("/jobs/ping", headers=bearer(A)).status_code == 202


def test_job_lists_come_in_pages_by_cursor(settings: Settings) -> None:
    client = create_app(settings.model_copy(update={"max_inflight": 10})).test_client()
    ids = [client.post("/ingest", json={"tickers": [t]}, headers=bearer(A)).get_json()["job_id"]
           for t in ("AAPL", "MSFT", "KO", "PEP", "JNJ")]  # fmt: skip
    pages, cursor = [], None
    while True:
        url = "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=bearer(A)).get_json()
        pages.append([j["job_id"] for j in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [i for page in pages for i in page] == list(reversed(ids))
    assert [len(p) for p in pages] == [2, 2, 1]


def test_long_polls_beyond_the_per_process_cap_answer_at_once(tmp_path: Path) -> None:
    s = make_settings(tmp_path, 10, 11, max_waiting_per_process=0)
    flush_db(s.redis_url)
    client = create_app(s).test_client()
    r = client.post("/jobs/ping?wait=10")  # no worker: it would block for 10 s if it could wait
    assert r.status_code == 202


def test_bare_secrets_are_named_after_a_hash_never_the_secret(tmp_path: Path) -> None:
    keys = tenant_keys(make_settings(tmp_path, 10, 11, api_keys=A))
    (tenant,) = keys.values()
    assert tenant.name.startswith("key-") and A not in tenant.name and not tenant.admin


@pytest.mark.parametrize(
    ("keys", "why"),
    [
        ("short-key", "shorter than 16"),
        ("change-me-client-key", "placeholder"),
        (f"bad name:{A}", "tenant name"),
    ],
)
def test_bad_keys_refuse_to_start(tmp_path: Path, keys: str, why: str) -> None:
    with pytest.raises(AuthConfigError) as refused:
        create_app(make_settings(tmp_path, 10, 11, api_keys=keys))
    assert why in str(refused.value) and keys.split(":")[-1] not in str(refused.value)


def test_no_keys_serves_loopback_only_unless_auth_is_off_on_purpose(tmp_path: Path) -> None:
    open_settings = make_settings(tmp_path, 10, 11)
    check_bind(["127.0.0.1", "::1", "localhost"], open_settings)
    with pytest.raises(AuthConfigError, match=r"refusing to serve on 0\.0\.0\.0"):
        check_bind(["0.0.0.0"], open_settings)
    with pytest.raises(AuthConfigError):
        create_app(make_settings(tmp_path, 10, 11, api_host="0.0.0.0"))
    check_bind(["0.0.0.0"], make_settings(tmp_path, 10, 11, auth="off"))
    check_bind(["0.0.0.0"], make_settings(tmp_path, 10, 11, api_keys=A))
