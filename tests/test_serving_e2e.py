"""Serving with real workers: warm cache, champion pickup, single-flight auto-training, batch, charts."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient

from ml.registry.mlflow_registry import ModelRegistry
from ml.tickers import PARENT_NAME, child_name
from tests.conftest import fresh_settings
from tests.procs import FAST_TRAINING, Proc, free_port, start_all, start_gunicorn, start_worker, wait_until
from tests.test_backbone_e2e import submit, wait_job
from webapp import create_app
from workers.counters import Counters

pytestmark = pytest.mark.slow

WORKER_ENV = {
    **FAST_TRAINING,
    "STOCKQ_MODEL_ALIAS_CHECK_S": "0.5",
    "STOCKQ_SINGLEFLIGHT_TTL_S": "6",
}


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = fresh_settings(tmp_path_factory.mktemp("serving"), 12, 13, train_history_days=700)
    procs: dict[str, Proc] = {}
    try:
        port = free_port()
        procs["training"], procs["cpu"], procs["agent"], procs["api"] = start_all(
            partial(start_worker, settings, "training", "training", **WORKER_ENV),
            partial(start_worker, settings, "inference,ingest", "cpu", concurrency=2, **WORKER_ENV),
            # one agent process: embedded Qdrant allows one process per path
            partial(start_worker, settings, "agent", "agent", **WORKER_ENV),
            partial(start_gunicorn, settings, port),
        )
        client = create_app(settings).test_client()
        ingest = wait_job(
            client, submit(client, "/ingest", {"tickers": ["^GSPC", "AAPL", "MSFT", "KO", "PEP"]})
        )
        assert ingest["status"] == "succeeded", ingest
        parent = wait_job(client, submit(client, "/train", {"ticker": "^GSPC", "epochs": 2}))
        assert parent["status"] == "succeeded", parent
        yield {
            "settings": settings,
            "client": client,
            "base": f"http://127.0.0.1:{port}",
            "procs": procs,
            "registry": ModelRegistry(settings.tracking_uri, settings.artifact_root),
        }
    finally:
        for proc in procs.values():
            proc.stop()


def child_runs(registry: ModelRegistry, ticker: str) -> int:
    runs = registry.client.search_runs([registry.experiment_id()], max_results=1000)
    return sum(1 for r in runs if r.data.params.get("ticker") == ticker)


def test_warm_second_prediction_is_a_cache_hit_with_the_same_numbers(serving: dict) -> None:
    client: FlaskClient = serving["client"]
    assert (
        wait_job(client, submit(client, "/train", {"ticker": "AAPL", "epochs": 2}))["status"] == "succeeded"
    )
    counters = Counters(redis.Redis.from_url(serving["settings"].redis_url))  # the exporter serves these
    before = (
        counters.read("redis_cache_hit_total").get("", 0),
        counters.read("redis_cache_miss_total").get("", 0),
    )
    first = wait_job(client, submit(client, "/predict-child", {"ticker": "AAPL"}))["result"]
    second = wait_job(client, submit(client, "/predict-child", {"ticker": "AAPL"}))["result"]
    after = (
        counters.read("redis_cache_hit_total").get("", 0),
        counters.read("redis_cache_miss_total").get("", 0),
    )
    assert first["cached"] is False and second["cached"] is True
    assert second["forecast"] == first["forecast"] and second["model"] == first["model"]
    assert after[0] == before[0] + 1 and after[1] >= before[1] + 1


def test_agent_chat_reports_from_the_real_forecast_and_caches_paraphrases(serving: dict) -> None:
    client: FlaskClient = serving["client"]
    question = "What is the outlook for AAPL over the next week?"
    first = wait_job(client, submit(client, "/agent/chat", {"ticker": "AAPL", "question": question}), 180)
    assert first["status"] == "succeeded", first
    report = first["result"]
    assert report["cached"] is False and report["llm"] == {"model": None}
    assert report["stance"] in {"bullish", "neutral", "bearish"} and 0 <= report["confidence"] <= 1
    median = report["forecast"]["seven_day"]["p50"]
    assert f"{median:.2f}" in report["report_markdown"]
    again = wait_job(client, submit(client, "/agent/chat", {"ticker": "AAPL", "question": question}), 60)
    assert again["result"]["cached"] is True
    assert again["result"]["report_markdown"] == report["report_markdown"]
    other = wait_job(client, submit(client, "/agent/chat", {"ticker": "MSFT", "question": question}), 180)
    assert other["status"] == "succeeded", other
    assert other["result"]["cached"] is False and other["result"]["ticker"] == "MSFT"


def test_moving_the_champion_alias_changes_the_served_version_without_restart(serving: dict) -> None:
    client: FlaskClient = serving["client"]
    registry: ModelRegistry = serving["registry"]
    name = child_name("MSFT")
    for strategy in ("freeze", "scratch"):
        job = wait_job(
            client, submit(client, "/train", {"ticker": "MSFT", "strategy": strategy, "epochs": 2})
        )
        assert job["status"] == "succeeded", job
    versions = sorted(int(v.version) for v in registry.client.search_model_versions(f"name='{name}'"))
    assert len(versions) >= 2
    pid = serving["procs"]["cpu"].p.pid
    for version in (str(versions[0]), str(versions[-1])):
        registry.set_champion(name, version)
        time.sleep(1.0)  # longer than the workers' alias check interval
        result = wait_job(client, submit(client, "/predict-child", {"ticker": "MSFT"}))["result"]
        assert result["model"]["version"] == version
    assert serving["procs"]["cpu"].p.poll() is None and serving["procs"]["cpu"].p.pid == pid


def test_fifty_concurrent_requests_for_an_untrained_ticker_train_once(serving: dict) -> None:
    base, registry = serving["base"], serving["registry"]
    assert child_runs(registry, "KO") == 0

    def one(_: int) -> str:
        return requests.post(f"{base}/predict-child", json={"ticker": "KO"}, timeout=30).json()["job_id"]

    with ThreadPoolExecutor(16) as pool:
        job_ids = list(pool.map(one, range(50)))
    assert len(set(job_ids)) == 50
    client: FlaskClient = serving["client"]
    stages = {client.get(f"/status/{j}").get_json().get("stage") for j in job_ids[:10]}
    jobs = [wait_job(client, j, 300) for j in job_ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 50, [j.get("error") for j in jobs if j["error"]]
    assert child_runs(registry, "KO") == 1
    versions = {j["result"]["model"]["version"] for j in jobs}
    assert {j["result"]["model"]["name"] for j in jobs} == {child_name("KO")} and len(versions) == 1
    assert len({tuple(d["p50"] for d in j["result"]["forecast"]) for j in jobs}) == 1
    assert stages & {"training_queued", "waiting_for_training", "ingest", "train_child", None}


def test_a_killed_lock_holder_does_not_block_beyond_the_lock_expiry(serving: dict) -> None:
    client: FlaskClient = serving["client"]
    settings = serving["settings"]
    procs = serving["procs"]
    r = redis.Redis.from_url(settings.redis_url)
    first = submit(client, "/predict-child", {"ticker": "PEP"})
    wait_until(lambda: r.get("stockq:lock:train:PEP"), 60, "the single-flight lock")
    wait_until(lambda: client.get(f"/status/{first}").get_json()["stage"] == "train_child", 120, "training")
    procs["training"].kill()  # the whole worker, as a crashed host would
    assert r.get("stockq:lock:train:PEP") is not None
    procs["training"] = start_worker(settings, "training", "training2", **WORKER_ENV)
    started = time.monotonic()
    second = wait_job(client, submit(client, "/predict-child", {"ticker": "PEP"}), 240)
    assert second["status"] == "succeeded", second
    assert second["result"]["model"]["name"] == child_name("PEP")
    # it waited for the lock to expire (6 s), not for the dead holder's task to come back
    assert time.monotonic() - started < 120


def test_batch_predicts_many_tickers_in_one_job(serving: dict) -> None:
    client: FlaskClient = serving["client"]
    r = client.post("/predict?wait=10", json={"tickers": ["AAPL", "^GSPC", "KO", "RRC"]})
    assert r.status_code == 200, r.get_json()
    results = r.get_json()["result"]
    has_child = serving["registry"].champion_version(child_name("AAPL")) is not None
    assert results["AAPL"]["model"]["name"] == (child_name("AAPL") if has_child else PARENT_NAME)
    assert results["^GSPC"]["model"]["name"] == PARENT_NAME
    assert len(results["KO"]["forecast"]) == 7
    assert results["RRC"]["error"]["code"] in {"features_missing", "model_not_found"}


def test_forecast_chart_png_and_svg(serving: dict) -> None:
    from PIL import Image

    client: FlaskClient = serving["client"]
    r = client.get("/forecast/AAPL.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    image = Image.open(io.BytesIO(r.data)).convert("RGB")
    assert image.size == (1000, 500)
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50
    svg = client.get("/forecast/AAPL.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"AAPL" in svg.data and b"2022-12-28" in svg.data
    assert client.get("/forecast/AAPL.gif").status_code == 422
    missing = client.get("/forecast/NOPE.png")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "features_missing"


def test_cancelling_the_training_holder_hands_its_waiters_over(serving: dict) -> None:
    client: FlaskClient = serving["client"]
    r = redis.Redis.from_url(serving["settings"].redis_url)
    holder = submit(client, "/predict-child", {"ticker": "JNJ"})
    wait_until(lambda: r.get("stockq:lock:train:JNJ") == holder.encode(), 60, "the holder to take the lock")
    waiters = [submit(client, "/predict-child", {"ticker": "JNJ"}) for _ in range(3)]
    wait_until(
        lambda: all(
            client.get(f"/status/{w}").get_json()["stage"] == "waiting_for_training" for w in waiters
        ),
        60,
        "the others to wait",
    )
    assert client.delete(f"/jobs/{holder}").status_code == 202
    assert wait_job(client, holder, 120)["status"] == "cancelled"
    jobs = [wait_job(client, w, 240) for w in waiters]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j.get("error") for j in jobs]
    assert {j["result"]["model"]["name"] for j in jobs} == {child_name("JNJ")}
