"""Charts and batch forecasts keep their bytes on the evicting cache Redis, never on the job Redis, within a
per-tenant byte budget; concurrent chart requests share one job (workers/results.py, webapp/routes.py).

Two real redis-servers (the job Redis, which is also the Redis broker, and the cache Redis, which also holds
Feast's online store), a real gunicorn and a real Celery worker; a tiny parent model trained in-process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import requests

from stockq.settings import Settings
from tests.conftest import BASE_TICKERS, make_settings
from tests.procs import Proc, free_port, start_all, start_gunicorn, start_redis, start_worker, wait_until
from workers.jobs import JobRecord, JobRegistry, JobStatus, keys

pytestmark = pytest.mark.slow

TENANTS = ("five", "crowd", "batch", "greedy", "other")
# About nine PNG charts (each ~65 kB): room for the five of the first test, and quickly filled by `greedy`.
BUDGET = 600_000
SHORT_S = 15 * 60  # Settings.short_job_retention_s
PNG = b"\x89PNG\r\n\x1a\n"


def key_of(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


@dataclass
class Stack:
    base: str
    jobs_redis: redis.Redis
    cache_redis: redis.Redis
    jobs: JobRegistry
    worker: Proc

    def get(self, tenant: str, path: str, **params: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {key_of(tenant)}"}
        return requests.get(self.base + path, headers=headers, params=params, timeout=60)

    def chart(self, tenant: str, ticker: str, fmt: str = "png") -> requests.Response:
        """One client's chart request: asked again while it answers 202 (the same job, joined)."""
        path = f"/forecast/{quote(ticker, safe='')}.{fmt}"

        def answered() -> list[requests.Response] | None:  # a list: a 4xx Response is falsy
            r = self.get(tenant, path)
            return None if r.status_code == 202 else [r]

        return wait_until(answered, 120, path, every=0.2)[0]

    def charts_of(self, tenant: str) -> list[JobRecord]:
        found, _ = self.jobs.list(job_type="chart", owner=tenant, limit=100)
        return sorted(found, key=lambda j: j.submitted_at or 0)


def _train_tiny_parent(s: Settings) -> None:
    from ml.config import PanelModelConfig
    from ml.data import make_source
    from ml.features.pipeline import ingest
    from ml.features.store import FeatureStore
    from ml.registry.mlflow_registry import ModelRegistry
    from ml.training.train import TrainConfig, train_parent

    store = FeatureStore(s.var_path, s.feast_connection_string, window=s.window)
    ingest(BASE_TICKERS, source=make_source("bundled", s.var_path), store=store)
    registry = ModelRegistry(s.tracking_uri, s.artifact_root)
    config = TrainConfig(model=PanelModelConfig(epochs=1, hidden=8, stride=16, device="cpu"), val_days=100)
    train_parent(store=store, registry=registry, config=config)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from ml.registry.mlflow_store import ensure_tracking_store

    tmp: Path = tmp_path_factory.mktemp("cache_results")
    procs: list[Proc] = []
    try:
        jobs_port = free_port()
        procs.append(start_redis(jobs_port, tmp / "jobs-redis"))
        cache_port = free_port()
        procs.append(start_redis(cache_port, tmp / "cache-redis"))
        cache_url = f"redis://127.0.0.1:{cache_port}/0"
        settings = make_settings(
            tmp / "var", 0, 1, fresh_broker=True, redis_url=f"redis://127.0.0.1:{jobs_port}/0",
            cache_redis_url=cache_url, api_keys=",".join(f"{t}:{key_of(t)}" for t in TENANTS),
        )  # fmt: skip
        env = {"STOCKQ_CACHE_REDIS_URL": cache_url, "STOCKQ_TENANT_CACHE_BYTES": str(BUDGET)}
        ensure_tracking_store(settings.tracking_uri, settings.artifact_root)  # before any process races on it
        api_port = free_port()
        with ThreadPoolExecutor(1) as pool:  # the processes start while the model trains
            started = pool.submit(
                start_all,
                partial(start_worker, settings, "inference", "inf", **env),
                partial(start_gunicorn, settings, api_port, **env),
            )
            _train_tiny_parent(settings)
            worker, api = started.result()
        procs += [worker, api]
        jobs_redis = redis.Redis.from_url(settings.redis_url)
        yield Stack(f"http://127.0.0.1:{api_port}", jobs_redis, redis.Redis.from_url(cache_url),
                    JobRegistry(jobs_redis, settings.job_retention_s), worker)  # fmt: skip
    finally:
        for proc in reversed(procs):
            proc.stop()


def _stored_values(client: redis.Redis) -> Iterator[tuple[bytes, bytes]]:
    """Every value the Redis holds, whatever the key's type."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = client.hvals(key)
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        else:
            values = []
        yield from ((key, v) for v in values)


def test_chart_bytes_live_on_the_cache_never_in_the_job_redis(stack: Stack) -> None:
    answers = [stack.chart("five", "MSFT") for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5, [r.text[:200] for r in answers]
    image = answers[0].content
    assert image[:8] == PNG and all(r.content == image for r in answers)
    jobs = stack.charts_of("five")
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 5
    # Not one byte of any chart in the job Redis (before: five PNGs under stockq:chart:<id> there).
    assert not [k for k, v in _stored_values(stack.jobs_redis) if PNG in v or b"<svg" in v]
    assert not list(stack.jobs_redis.scan_iter("stockq:chart:*"))
    # The record keeps a descriptor; the first job drew the chart, the other four copied its rendering.
    assert [j.result["reused"] for j in jobs] == [False, True, True, True, True]
    for job in jobs:
        assert job.result["key"] == keys.chart(job.id) and job.result["bytes"] == len(image)
        assert job.result["mimetype"] == "image/png" and job.result["model"]["name"] == "stockq-parent"
        assert stack.cache_redis.get(keys.chart(job.id)) == image
        assert 0 < stack.cache_redis.ttl(keys.chart(job.id)) <= SHORT_S
    held = sum(int(n) for n in stack.cache_redis.hvals(keys.tenant_bytes("five")))
    assert held == 5 * len(image)


def test_concurrent_chart_requests_share_one_job(stack: Stack) -> None:
    os.killpg(stack.worker.p.pid, signal.SIGSTOP)  # nobody runs it: all five arrive while it is queued
    try:
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda _: stack.get("crowd", "/forecast/AAPL.svg", wait=0), range(5)))
        assert [r.status_code for r in answers] == [202] * 5, [r.text[:200] for r in answers]
        assert len({r.json()["job_id"] for r in answers}) == 1
        assert len(stack.charts_of("crowd")) == 1
    finally:
        os.killpg(stack.worker.p.pid, signal.SIGCONT)
    chart = stack.chart("crowd", "AAPL", "svg")
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
    [job] = stack.charts_of("crowd")
    assert job.id == answers[0].json()["job_id"] and job.status == JobStatus.SUCCEEDED


def test_batch_result_is_read_back_from_the_cache_and_its_expiry_reported(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {key_of('batch')}"}
    body = {"tickers": ["AAPL", "MSFT", "^GSPC", "RRC"]}
    job_id = requests.post(f"{stack.base}/predict", json=body, headers=headers, timeout=30).json()["job_id"]

    def finished() -> dict | None:
        shown = stack.get("batch", f"/status/{job_id}").json()
        return shown if shown["status"] in {"succeeded", "failed", "cancelled"} else None

    job = wait_until(finished, 120, "the batch")
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert len(result["AAPL"]["forecast"]) == 7 and result["^GSPC"]["model"]["name"] == "stockq-parent"
    assert result["RRC"]["error"]["code"] in {"features_missing", "model_not_found"}
    # The job Redis holds a descriptor of a few hundred bytes; the forecasts are on the cache Redis.
    raw = stack.jobs_redis.hget(keys.job(job_id), "result") or b""
    descriptor = json.loads(raw)
    assert len(raw) < 400 and b"forecast" not in raw, raw
    assert descriptor["key"] == keys.result_bytes(job_id) and descriptor["mimetype"] == "application/json"
    stored = stack.cache_redis.get(keys.result_bytes(job_id)) or b""
    assert json.loads(stored) == result and descriptor["bytes"] == len(stored)
    assert 0 < stack.cache_redis.ttl(keys.result_bytes(job_id)) <= SHORT_S
    assert sum(int(n) for n in stack.cache_redis.hvals(keys.tenant_bytes("batch"))) == len(stored)
    # Its TTL runs out: the record still answers 200, saying the result is gone.
    stack.cache_redis.pexpire(keys.result_bytes(job_id), 1)
    time.sleep(0.05)
    gone = stack.get("batch", f"/status/{job_id}")
    assert gone.status_code == 200 and gone.json()["status"] == "succeeded"
    assert gone.json()["result"]["result_expired"] is True and "forecast" not in json.dumps(gone.json())


def test_tenant_byte_budget_refuses_past_it_while_another_tenant_gets_charts(stack: Stack) -> None:
    served: list[bytes] = []
    refused = None
    for _ in range(BUDGET // 20_000):  # far more charts than the budget holds
        r = stack.chart("greedy", "^GSPC")
        if r.status_code != 200:
            refused = r
            break
        served.append(r.content)
    assert refused is not None, f"{len(served)} charts served, none refused"
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "result_budget_exceeded"
    size = len(served[0])
    assert len(served) == BUDGET // size and all(s == served[0] for s in served)
    held = sum(int(n) for n in stack.cache_redis.hvals(keys.tenant_bytes("greedy")))
    assert held == len(served) * size <= BUDGET
    [failed] = [j for j in stack.charts_of("greedy") if j.status == JobStatus.FAILED]
    assert failed.error is not None and failed.error["code"] == "result_budget_exceeded"
    assert not stack.cache_redis.exists(keys.chart(failed.id))  # a refused write leaves nothing behind
    # Another tenant's budget is its own.
    other = stack.chart("other", "^GSPC")
    assert other.status_code == 200 and other.content == served[0]
