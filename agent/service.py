"""The analyst as a service: forecast in-process, semantic cache, the specialists' graph, one JSON result.

One instance per worker process. Stages reported through `on_stage`, in order: forecast, cache_lookup, news,
performance_analyst and market_expert (in parallel), report_generator, critic (report_generator and critic
again per revision), fallback (only when the LLM failed and fallback is on), cache_store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from agent.analysts import Analyst, DeterministicAnalyst, LLMAnalyst
from agent.cache import DETERMINISTIC, UNCALIBRATED, CacheHit, CacheKey, SemanticCache
from agent.configuration import AgentConfig
from agent.graph import build_graph
from agent.llm import ChatLLM, LLMError
from agent.news import fetch_news
from agent.nodes import AgentContext
from agent.report import question_line, with_reviewer_notes
from agent.state import AgentState
from ml.errors import InvalidInput
from ml.features.store import FeatureStore
from ml.tickers import validate_ticker

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 500


def normalize_question(question: str | None, ticker: str) -> str:
    text = re.sub(r"\s+", " ", question or "").strip()
    if not text:
        return f"Analysis for {ticker}"
    if len(text) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"question is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return text


def _ignore(_stage: str) -> None:
    pass


class AnalystService:
    def __init__(
        self,
        config: AgentConfig,
        *,
        store: FeatureStore,
        registry: Any,
        get_model: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.get_model = get_model
        self.cache = SemanticCache(config)
        self._analyst: Analyst = LLMAnalyst(ChatLLM(config)) if config.llm_enabled else DeterministicAnalyst()

    def close(self) -> None:
        """Releases the embedded Qdrant folder, which admits one process at a time."""
        self.cache.close()

    def analyze(
        self,
        ticker: str,
        question: str | None = None,
        *,
        model: str = "auto",
        on_stage: Callable[[str], None] | None = None,
        cache_scope: str = "global",
    ) -> dict[str, Any]:
        from ml.serving.predict import predict

        ticker = validate_ticker(ticker)
        question = normalize_question(question, ticker)
        stage = on_stage or _ignore

        stage("forecast")
        forecast = predict(ticker, model, store=self.store, registry=self.registry, get_model=self.get_model)
        used = forecast["model"]
        name, version = used["name"], str(used["version"])
        key = CacheKey(
            ticker,
            forecast["as_of"],
            name,
            version,
            self._analyst.model or DETERMINISTIC,
            cache_scope,
            evaluation=forecast["band"]["calibration"] or UNCALIBRATED,
        )

        stage("cache_lookup")
        hit = self.cache.lookup(key, question)
        if hit is not None and (served := answered_from(hit, question)) is not None:
            log.info("agent cache hit for %s (%.3f): %r ~ %r", ticker, hit.score, question, hit.question)
            return served

        stage("news")
        news, news_note = fetch_news(
            ticker,
            data_source=forecast.get("data_source"),
            limit=self.config.news_limit,
            timeout_s=self.config.news_timeout_s,
            cache_dir=self.config.var_dir / "yfinance",
        )
        card = self.registry.model_card(name, version)
        state: AgentState = {
            "ticker": ticker,
            "question": question,
            "forecast": forecast,
            "snapshot": self.store.online_features(ticker),
            "model_card": card,
            "news": news,
            "news_note": news_note,
        }
        analyst, fell_back = self._analyst, False
        try:
            final = self._run(state, analyst, stage)
        except LLMError as exc:
            if not self.config.llm_fallback:
                raise
            log.warning("LLM failed for %s; the deterministic analyst takes over: %s", ticker, exc.message)
            stage("fallback")
            analyst, fell_back = DeterministicAnalyst(llm_failure=exc.message), True
            final = self._run(state, analyst, stage)

        draft, critique = final["draft"], final["critique"]
        result = {
            "ticker": ticker,
            "question": question,
            "report_markdown": with_reviewer_notes(draft["markdown"], critique.issues),
            "stance": draft["report"].stance,
            "confidence": draft["report"].confidence,
            "forecast": forecast,
            "sources": _sources(forecast, card, final),
            "cached": False,
            "llm": {"model": analyst.model},
            "revisions": final.get("revisions", 0),
            "as_of": forecast["as_of"],
            "model_version": version,
        }
        # Neither a fallback report nor one the Critic never approved is worth serving for a day: the next
        # request should get the LLM again.
        if not fell_back and critique.approved:
            stage("cache_store")
            self.cache.store(key, question, result)
        return result

    def _run(self, state: AgentState, analyst: Analyst, stage: Callable[[str], None]) -> AgentState:
        context = AgentContext(analyst=analyst, max_revisions=self.config.max_revisions, on_stage=stage)
        return build_graph().invoke(state, context=context)


def answered_from(hit: CacheHit, question: str) -> dict[str, Any] | None:
    """A cached report as the answer to `question`: its question line says this question. None when the
    report quotes the question it was written for anywhere else (an LLM echoing it in its prose): under
    STOCKQ_AGENT_CACHE_SCOPE=global that question may be another tenant's, which no other tenant may read."""
    markdown = hit.response["report_markdown"]
    if hit.question != question:
        before, line, after = markdown.partition(question_line(hit.question))
        if not line or hit.question in before + after:
            return None
        markdown = before + question_line(question) + after
    return {**hit.response, "report_markdown": markdown, "question": question, "cached": True}


def _sources(forecast: dict[str, Any], card: dict[str, Any], final: AgentState) -> list[dict[str, Any]]:
    model = forecast["model"]
    sources: list[dict[str, Any]] = [
        {
            "kind": "forecast",
            "model": model["name"],
            "version": str(model["version"]),
            "as_of": forecast["as_of"],
            "data_source": forecast.get("data_source"),
        },
        {
            "kind": "model_card",
            "name": card.get("name"),
            "version": card.get("version"),
            "trained_at": card.get("trained_at"),
            # The evaluation the report's skill, coverage and confidence cap come from (None: none yet).
            "evaluation_run_id": (card.get("evaluation") or {}).get("run_id"),
        },
        {"kind": "features", "ticker": forecast["ticker"], "as_of": forecast["as_of"]},
    ]
    sources.extend({"kind": "news", **item} for item in final["market"]["items"])
    return sources
