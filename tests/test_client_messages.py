"""What a client reads was written for clients: real failures (a damaged model file, yfinance offline, an
LLM answering with an error) reach it as a stable code, a message of ours and an error_id, while what the
library said stays in the log under that id. A report served from the shared semantic cache quotes no
other tenant's question, and the console renders no external image.

A private redis-server, bundled data, a tiny parent trained into a real MLflow registry, real embeddings and
embedded Qdrant, the real ChatOpenAI client against the loopback fake (tests/fakellm.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from pydantic import SecretStr

from agent.configuration import AgentConfig
from agent.prompts import REPORT_GENERATOR
from agent.service import AnalystService
from agent.state import ReportDraft
from ml.errors import DataUnavailable
from stockq.settings import Settings
from tests.conftest import make_settings
from tests.fakellm import FakeOpenAI, Garbage, Reply, canned_analyst, user_prompt
from tests.procs import Proc, free_port, start_redis
from workers.runtime import agent_config

pytestmark = pytest.mark.slow  # trains a model

PARENT = "stockq-parent"
# A paraphrase pair the calibrated threshold (0.90) takes for one question (cosine 0.967).
ASKED = "Is AAPL overbought according to RSI?"
PARAPHRASE = "Does the RSI show AAPL as overbought?"
# What a provider's error body may hold: an account, a key prefix; none of it is the client's business.
PROVIDER_ERROR = '{"error": {"message": "Incorrect API key provided: sk-live-4f9a. Org org-Q7Z3 quota."}}'


@dataclass
class Env:
    settings: Settings
    store: Any
    registry: Any
    redis: Proc


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from agent.embeddings import embed
    from ml.config import PanelModelConfig
    from ml.data import make_source
    from ml.features.pipeline import ingest
    from ml.features.store import FeatureStore
    from ml.registry.mlflow_registry import ModelRegistry
    from ml.training.train import TrainConfig, train_parent

    tmp = tmp_path_factory.mktemp("client_messages")
    port = free_port()
    redis_proc = start_redis(port, tmp / "redis")
    settings = make_settings(tmp / "var", 0, 1, redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
        ingest(["^GSPC", "AAPL"], source=make_source("bundled", settings.var_path), store=store)
        registry = ModelRegistry(settings.tracking_uri, settings.artifact_root)
        config = TrainConfig(
            model=PanelModelConfig(epochs=1, hidden=8, stride=16, device="cpu"), val_days=100
        )
        train_parent(store=store, registry=registry, config=config)
        embed("warm up")  # the embedding model loads once per process
        yield Env(settings, store, registry, redis_proc)
    finally:
        redis_proc.stop()


def artifact(env: Env, file: str) -> Path:
    run_id = env.registry.client.get_model_version(PARENT, "1").run_id
    uri = env.registry.client.get_run(run_id).info.artifact_uri
    return Path(url2pathname(urlparse(uri).path)) / "model" / file


@pytest.fixture
def damaged(env: Env) -> Iterator[Any]:
    """Damages one of version 1's files; each is restored after the test."""
    originals: dict[Path, bytes] = {}

    def damage(file: str, make: Any) -> None:
        path = artifact(env, file)
        originals.setdefault(path, path.read_bytes())
        path.write_bytes(make(originals[path]))

    yield damage
    for path, data in originals.items():
        path.write_bytes(data)


def logged_detail(caplog: pytest.LogCaptureFixture, error_id: str) -> str:
    found = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert found, f"nothing logged under error_id {error_id}"
    return "\n".join(found)


# ------------------------------------------------------------------------------ errors from libraries


def test_a_damaged_model_card_answers_corrupt_model_without_the_parser_s_words(
    env: Env, damaged: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from webapp import create_app

    damaged("model_card.json", lambda data: data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        r = create_app(env.settings).test_client().get(f"/models/{PARENT}?version=1")
    assert r.status_code == 500
    error = r.get_json()["error"]
    assert error["code"] == "corrupt_model" and re.fullmatch(r"[0-9a-f]{12}", error["error_id"])
    assert (
        error["message"]
        == f"the stored model cannot be loaded (damaged or altered files) (error_id {error['error_id']})"
    )
    for word in ("model_card", "json", "JSON", "line", "char", "/"):
        assert word not in error["message"]
    assert "model card unreadable" in logged_detail(caplog, error["error_id"])


def test_truncated_weights_fail_a_batch_forecast_with_our_words_only(
    env: Env, damaged: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from ml.registry.mlflow_registry import ModelRegistry
    from ml.serving.predict import predict_many

    damaged("state_dict.pt", lambda data: data[:100])
    fresh = ModelRegistry(env.settings.tracking_uri, env.settings.artifact_root)  # nothing loaded yet
    with caplog.at_level(logging.WARNING):
        results = predict_many(["AAPL"], "parent", store=env.store, registry=fresh)
    error = results["AAPL"]["error"]
    assert error["code"] == "corrupt_model" and error["error_id"] in error["message"]
    assert "state_dict" not in error["message"] and "weights" not in error["message"]
    assert "weights file missing or altered" in logged_detail(caplog, error["error_id"])


def test_yfinance_offline_reports_unavailable_in_our_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import yfinance.cache

    from ml.data.yfinance_source import YFinanceSource

    # yfinance's caches hold the database they first opened (see tests/test_data_sources.py).
    yfinance.cache._TzCacheManager._tz_cache = None
    yfinance.cache._CookieCacheManager._Cookie_cache = None
    with caplog.at_level(logging.WARNING), pytest.raises(DataUnavailable) as err:
        YFinanceSource(tmp_path / "yf", timeout_s=2).fetch("AAPL")  # no network here
    error = err.value.to_dict()
    said = "yfinance: cannot fetch AAPL from Yahoo Finance (offline or unreachable)"
    assert error["message"] == f"{said} (error_id {error['error_id']})"
    cause = err.value.__cause__
    assert cause is not None and str(cause) not in error["message"]
    assert str(cause) in logged_detail(caplog, error["error_id"])


# ------------------------------------------------------------------------------------- the analyst


@pytest.fixture
def make_service(env: Env, tmp_path: Path) -> Iterator[Any]:
    services: list[AnalystService] = []

    def make(server: FakeOpenAI | None = None, **overrides: Any) -> AnalystService:
        values = {**agent_config(env.settings).__dict__, "var_dir": tmp_path, "cache_threshold": 0.90}
        if server is not None:
            values |= {
                "llm_model": "fake-analyst",
                "openai_api_key": SecretStr("test-key"),
                "openai_base_url": server.base_url,
                "llm_timeout_s": 2.0,
                "llm_max_retries": 0,
            }
        service = AnalystService(
            AgentConfig(**{**values, **overrides}), store=env.store, registry=env.registry
        )
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


def test_an_llm_error_is_not_quoted_in_the_fallback_report(
    make_service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def refusing(role: str, body: dict[str, Any]) -> Reply:
        return Garbage(PROVIDER_ERROR, status=401)

    with FakeOpenAI(refusing) as server, caplog.at_level(logging.WARNING):
        report = make_service(server).analyze("AAPL", "Analysis for AAPL")
    markdown = report["report_markdown"]
    assert "No LLM text is in this report: LLM fake-analyst failed (error_id" in markdown
    for leak in ("sk-live-4f9a", "org-Q7Z3", "Incorrect API key", "AuthenticationError", "Error code"):
        assert leak not in json.dumps(report), leak
    error_id = re.search(r"error_id ([0-9a-f]{12})", markdown).group(1)  # type: ignore[union-attr]
    assert "org-Q7Z3" in logged_detail(caplog, error_id)


def test_a_shared_cache_answers_a_paraphrase_without_the_first_tenant_s_question(make_service: Any) -> None:
    service = make_service()
    first = service.analyze("AAPL", ASKED, cache_scope="global")
    assert first["cached"] is False and f"> **Question:** {ASKED}" in first["report_markdown"]
    second = service.analyze("AAPL", PARAPHRASE, cache_scope="global")
    assert second["cached"] is True and second["stance"] == first["stance"]
    assert ASKED not in json.dumps(second)
    assert f"> **Question:** {PARAPHRASE}" in second["report_markdown"]


def test_a_cached_report_whose_prose_quotes_its_question_is_not_served_to_another(make_service: Any) -> None:
    def echoing(role: str, body: dict[str, Any]) -> Reply:
        """A model that repeats the question in its summary, as models do."""
        if role != REPORT_GENERATOR:
            return canned_analyst(role, body)
        question = re.search(r"^Question: (.*)$", user_prompt(body), flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
        draft = canned_analyst(role, body)
        assert isinstance(draft, ReportDraft)
        return draft.model_copy(update={"summary": f"You asked: {question} {draft.summary}"})

    with FakeOpenAI(echoing) as server:
        service = make_service(server)
        first = service.analyze("AAPL", ASKED, cache_scope="global")
        assert f"You asked: {ASKED}" in first["report_markdown"] and first["cached"] is False
        second = service.analyze("AAPL", PARAPHRASE, cache_scope="global")
    assert second["cached"] is False  # written afresh for this tenant
    assert ASKED not in json.dumps(second) and f"You asked: {PARAPHRASE}" in second["report_markdown"]


# ----------------------------------------------------------------------------------------- console


def test_the_console_renders_no_external_image(env: Env) -> None:
    from webapp import create_app
    from webapp.console import render_markdown

    html = render_markdown(
        "Up.\n\n![beacon](https://tracker.test/p.png?u=1)\n\n[a source](https://news.test/a)"
    )
    assert "<img" not in html and "src=" not in html  # the beacon is at most a link nobody has to follow
    assert '<a href="https://news.test/a" rel="noopener noreferrer">a source</a>' in html
    # And the page itself lets the browser load images from this origin (and the chart's blob:) only.
    policy = create_app(env.settings).test_client().get("/").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["img-src"] == "'self' blob: data:" and directives["default-src"] == "'self'"
