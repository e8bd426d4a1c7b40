"""AnalystService end to end: real features (bundled data, Feast on Redis DBs 6/7), a real (tiny) trained
parent in a real MLflow registry, the real ml.serving.predict, real embeddings and embedded Qdrant, and the
real ChatOpenAI client against a scripted server on loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agent.configuration import AgentConfig
from agent.embeddings import embed
from agent.llm import LLMError
from agent.numbers import CONFIDENCE_FLOOR, performance_facts
from agent.prompts import PERFORMANCE_ANALYST, REPORT_GENERATOR
from agent.report import question_line
from agent.service import AnalystService
from agent.state import ReportDraft
from ml.errors import InvalidInput, InvalidTicker
from ml.evaluation.promotion import NOT_EVALUATED
from tests.conftest import flush_db, make_settings
from tests.fakellm import FakeOpenAI, Reply, Stall, canned_analyst, user_prompt
from workers.runtime import agent_config

pytestmark = pytest.mark.slow  # trains a model

RESULT_KEYS = {
    "ticker",
    "question",
    "report_markdown",
    "stance",
    "confidence",
    "forecast",
    "sources",
    "cached",
    "llm",
    "revisions",
    "as_of",
    "model_version",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ml.config import PanelModelConfig
    from ml.data import make_source
    from ml.features.pipeline import ingest
    from ml.features.store import FeatureStore
    from ml.registry.mlflow_registry import ModelRegistry
    from ml.training.train import TrainConfig, train_parent

    settings = make_settings(tmp_path_factory.mktemp("agent_env"), 6, 7)
    flush_db(settings.feast_redis_url)
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    ingest(["^GSPC", "AAPL", "MSFT"], source=make_source("bundled", settings.var_path), store=store)
    registry = ModelRegistry(settings.tracking_uri, settings.artifact_root)
    # No `stockq evaluate` runs here: the card says "not evaluated yet", and the report must too.
    config = TrainConfig(model=PanelModelConfig(epochs=1, hidden=8, stride=16, device="cpu"), val_days=100)
    train_parent(store=store, registry=registry, config=config)
    embed("warm up")  # the embedding model loads once per process; no test below pays for it
    yield {"settings": settings, "store": store, "registry": registry}
    flush_db(settings.feast_redis_url)


@pytest.fixture
def make_service(env: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    services: list[AnalystService] = []

    def make(**overrides: Any) -> AnalystService:
        config = agent_config(env["settings"])
        values = {**config.__dict__, "var_dir": tmp_path, "cache_threshold": 0.90, **overrides}
        service = AnalystService(AgentConfig(**values), store=env["store"], registry=env["registry"])
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


def llm_overrides(server: FakeOpenAI, **more: Any) -> dict[str, Any]:
    return {
        "llm_model": "fake-analyst",
        "openai_api_key": SecretStr("test-key"),
        "openai_base_url": server.base_url,
        "llm_timeout_s": 2.0,
        "llm_max_retries": 0,
        **more,
    }


def test_deterministic_report_from_the_real_forecast(env: dict[str, Any], make_service: Any) -> None:
    from ml.serving.predict import predict

    stages: list[str] = []
    result = make_service().analyze("aapl", on_stage=stages.append)
    expected = predict("AAPL", "auto", store=env["store"], registry=env["registry"])
    assert set(result) == RESULT_KEYS
    assert result["ticker"] == "AAPL" and result["question"] == "Analysis for AAPL"
    assert result["forecast"] == expected
    assert result["as_of"] == expected["as_of"] == "2022-12-28"
    assert result["model_version"] == expected["model"]["version"]
    assert result["llm"] == {"model": None} and result["cached"] is False and result["revisions"] == 0
    assert "No LLM was used" in result["report_markdown"]
    for step in expected["forecast"]:
        assert f"| {step['p10']:.2f} | {step['p50']:.2f} | {step['p90']:.2f} |" in result["report_markdown"]
    card = env["registry"].model_card(expected["model"]["name"], expected["model"]["version"])
    facts = performance_facts(expected, env["store"].online_features("AAPL"), card)
    assert card["evaluation"] is None and facts["confidence_cap"] == CONFIDENCE_FLOOR
    assert (result["stance"], result["confidence"]) == (facts["stance"], facts["confidence"])
    assert result["confidence"] <= CONFIDENCE_FLOOR
    assert f"Evaluation: {NOT_EVALUATED}." in result["report_markdown"]
    assert "its median is zero by design" in result["report_markdown"]
    assert [s["kind"] for s in result["sources"]] == ["forecast", "model_card", "features"]
    assert result["sources"][1]["evaluation_run_id"] is None
    assert stages[:3] == ["forecast", "cache_lookup", "news"] and stages[-1] == "cache_store"
    assert json.loads(json.dumps(result)) == result


def test_a_paraphrase_is_served_from_the_cache(make_service: Any) -> None:
    service = make_service()
    miss = service.analyze("AAPL", "What is the 7-day forecast for AAPL?")
    stages: list[str] = []
    hit = service.analyze("AAPL", "Forecast AAPL for the coming seven days", on_stage=stages.append)
    assert stages == ["forecast", "cache_lookup"]
    assert hit["cached"] is True and set(hit) == set(miss)
    assert hit["question"] == "Forecast AAPL for the coming seven days"
    # the cached report, its question line saying the question asked (never another's question)
    asked = miss["report_markdown"].replace(question_line(miss["question"]), question_line(hit["question"]))
    assert hit["report_markdown"] == asked != miss["report_markdown"]
    same = {"cached": False, "question": miss["question"], "report_markdown": miss["report_markdown"]}
    assert {**hit, **same} == miss
    assert service.analyze("AAPL", "What does the news say about AAPL?")["cached"] is False
    assert service.analyze("MSFT", "What is the 7-day forecast for MSFT?")["cached"] is False


def test_llm_report_carries_the_real_forecast(make_service: Any) -> None:
    with FakeOpenAI() as server:
        service = make_service(**llm_overrides(server))
        result = service.analyze("MSFT", "Should I buy MSFT?")
        prompt = server.prompts(PERFORMANCE_ANALYST)[0]
        for step in result["forecast"]["forecast"]:
            assert f"| {step['p10']:.2f} | {step['p50']:.2f} | {step['p90']:.2f} |" in prompt
        assert result["llm"] == {"model": "fake-analyst"}
        assert "Written with the LLM fake-analyst." in result["report_markdown"]
        assert (result["stance"], result["confidence"]) == ("neutral", 0.3)  # the structured answer
        calls = len(server.requests)
        assert service.analyze("MSFT", "Is MSFT a buy right now?")["cached"] is False
        assert service.analyze("MSFT", "Should I buy MSFT?")["cached"] is True
        assert len(server.requests) == 2 * calls  # the hit cost no model call


def test_a_report_the_critic_never_approves_keeps_its_notes_and_is_not_cached(make_service: Any) -> None:
    def contrarian(role: str, body: dict[str, Any]) -> Reply:
        """Always a stance the real trend does not show, whatever the Critic says."""
        if role != REPORT_GENERATOR:
            return canned_analyst(role, body)
        trend = re.search(r"Trend: (\w+)", user_prompt(body)).group(1)
        stance = "bearish" if trend == "up" else "bullish"
        return ReportDraft(
            summary="s", technicals="t", news="n", risks="r", stance=stance, confidence=0.2, rationale="x"
        )

    with FakeOpenAI(contrarian) as server:
        service = make_service(**llm_overrides(server))
        result = service.analyze("AAPL")
        assert result["revisions"] == 2
        assert "## Reviewer notes" in result["report_markdown"]
        assert "but the trend is " in result["report_markdown"]
        assert service.cache.count() == 0


def test_a_failing_llm_falls_back_or_fails_the_job_as_configured(make_service: Any) -> None:
    def stall(role: str, body: dict[str, Any]) -> Reply:
        return Stall(3.0) if role == PERFORMANCE_ANALYST else canned_analyst(role, body)

    with FakeOpenAI(stall) as server:
        fallback = make_service(**llm_overrides(server, llm_timeout_s=0.3))
        stages: list[str] = []
        result = fallback.analyze("AAPL", on_stage=stages.append)
        assert result["llm"] == {"model": None} and "fallback" in stages
        assert "LLM fake-analyst did not answer within 0.3 s" in result["report_markdown"]
        assert fallback.cache.count() == 0  # a fallback report is not cached
        strict = make_service(**llm_overrides(server, llm_timeout_s=0.3, llm_fallback=False))
        with pytest.raises(LLMError) as err:
            strict.analyze("MSFT")
        assert err.value.code == "llm_error"


def test_bad_requests_fail_before_any_work(make_service: Any) -> None:
    service = make_service()
    with pytest.raises(InvalidTicker):
        service.analyze("../etc")
    with pytest.raises(InvalidInput, match="limit is 500"):
        service.analyze("AAPL", "why? " * 200)
    with pytest.raises(InvalidInput):
        service.analyze("AAPL", model="best")
