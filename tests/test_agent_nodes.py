"""The analyst's numbers, news handling and graph with the deterministic analyst (no model, no network).

Inputs come from tests/data/agent_inputs.json, in the shapes ml.serving.predict and the registry produce; the
end-to-end path through the real predict lives in test_agent_service.py.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from agent.analysts import DeterministicAnalyst
from agent.graph import build_graph
from agent.news import fetch_news, parse_article, score_headlines
from agent.nodes import AgentContext
from agent.numbers import check_report, performance_facts, stance_from_numbers
from agent.state import ReportDraft

INPUTS = json.loads((Path(__file__).parent / "data" / "agent_inputs.json").read_text())


def inputs() -> dict[str, Any]:
    return copy.deepcopy(INPUTS)


def shifted(forecast: dict[str, Any], log_shift: float) -> dict[str, Any]:
    """The same band moved by `log_shift` (log return), so the median's sign can be chosen."""
    out = copy.deepcopy(forecast)
    for step in out["forecast"]:
        for q in ("p10", "p50", "p90"):
            step[f"log_return_{q}"] += log_shift
            step[q] = out["last_close"] * math.exp(step[f"log_return_{q}"])
    out["next_day"], out["seven_day"] = out["forecast"][0], out["forecast"][6]
    return out


def draft(**overrides: Any) -> ReportDraft:
    values: dict[str, Any] = {
        "summary": "s",
        "technicals": "t",
        "news": "n",
        "risks": "r",
        "stance": "neutral",
        "confidence": 0.2,
        "rationale": "x",
    }
    return ReportDraft(**{**values, **overrides})


def run_graph(state: dict[str, Any], stages: list[str] | None = None) -> dict[str, Any]:
    context = AgentContext(analyst=DeterministicAnalyst(), on_stage=None if stages is None else stages.append)
    return build_graph().invoke(state, context=context)


def base_state(question: str = "Analysis for AAPL") -> dict[str, Any]:
    data = inputs()
    return {
        "ticker": "AAPL",
        "question": question,
        "forecast": data["forecast"],
        "snapshot": data["snapshot"],
        "model_card": data["model_card"],
        "news": data["news"],
        "news_note": None,
    }


@pytest.mark.parametrize(
    ("log_shift", "stance"),
    [(0.0, "bearish"), (0.0217, "neutral"), (0.06, "bullish")],
)
def test_stance_follows_the_median_against_the_band(log_shift: float, stance: str) -> None:
    got, confidence, edge = stance_from_numbers(shifted(INPUTS["forecast"], log_shift), quality=0.6)
    assert got == stance
    assert 0.0 <= confidence <= 1.0
    assert {"bearish": edge <= -0.1, "neutral": abs(edge) < 0.1, "bullish": edge >= 0.1}[stance]


def test_confidence_never_exceeds_the_backtest_cap() -> None:
    data = inputs()
    for shift in (-0.2, -0.05, 0.0, 0.02, 0.05, 0.2):
        facts = performance_facts(shifted(data["forecast"], shift), data["snapshot"], data["model_card"])
        assert facts["confidence"] <= facts["confidence_cap"]
        report = draft(stance=facts["stance"], confidence=facts["confidence"])
        assert check_report(report, facts) == []


def test_facts_carry_the_real_numbers() -> None:
    data = inputs()
    facts = performance_facts(data["forecast"], data["snapshot"], data["model_card"])
    seven = data["forecast"]["seven_day"]
    assert facts["seven_day"]["p50"] == seven["p50"]
    assert facts["seven_day"]["return_p50_pct"] == pytest.approx((seven["p50"] / 125.67 - 1) * 100, abs=1e-3)
    assert facts["trend"] == "down"  # both SMAs are above the close in the snapshot
    assert facts["rsi_zone"] == "oversold"
    assert facts["backtest"]["direction_accuracy"] == 0.538
    assert facts["sma_20_gap_pct"] == pytest.approx((1 / 1.104372 - 1) * 100)


def test_critic_rejects_a_stance_against_the_median_and_overconfidence() -> None:
    data = inputs()
    facts = performance_facts(data["forecast"], data["snapshot"], data["model_card"])  # median < 0
    issues = check_report(draft(stance="bullish", confidence=0.99), facts)
    assert len(issues) == 2
    assert "bullish" in issues[0] and f"{facts['seven_day']['p50']:.2f}" in issues[0]
    assert "exceeds" in issues[1]
    up = performance_facts(shifted(data["forecast"], 0.06), data["snapshot"], data["model_card"])
    assert "bearish" in check_report(draft(stance="bearish", confidence=0.1), up)[0]
    assert check_report(draft(stance="neutral", confidence=0.1), facts) == []


def test_missing_indicators_read_as_unknown() -> None:
    data = inputs()
    snapshot = dict.fromkeys(data["snapshot"])
    facts = performance_facts(data["forecast"], snapshot, {"test": {}})
    assert facts["trend"] == "unknown" and facts["rsi_zone"] == "unknown" and facts["macd"] == "unknown"
    assert facts["backtest"]["quality"] == 0.0
    state = {**base_state(), "snapshot": snapshot, "model_card": {"test": {}}}
    assert "n/a" in run_graph(state)["draft"]["markdown"]


def test_headlines_get_vader_scores() -> None:
    scored = score_headlines(INPUTS["news"])
    assert [item["title"] for item in scored] == [item["title"] for item in INPUTS["news"]]
    assert scored[0]["sentiment"] < 0 < scored[1]["sentiment"]


def test_both_yfinance_article_shapes_parse() -> None:
    nested = {
        "id": "x",
        "content": {
            "title": " Apple beats estimates ",
            "pubDate": "2024-05-02T20:31:00Z",
            "provider": {"displayName": "Reuters"},
            "canonicalUrl": {"url": "https://example.com/n"},
        },
    }
    flat = {
        "title": "Apple beats",
        "publisher": "AP",
        "link": "https://e.com/f",
        "providerPublishTime": 1714681860,
    }
    assert parse_article(nested) == {
        "title": "Apple beats estimates",
        "publisher": "Reuters",
        "url": "https://example.com/n",
        "published": "2024-05-02T20:31:00Z",
    }
    assert parse_article(flat) == {
        "title": "Apple beats",
        "publisher": "AP",
        "url": "https://e.com/f",
        "published": "2024-05-02T20:31:00+00:00",
    }
    assert parse_article({"content": {"title": ""}}) is None


def test_news_fails_fast_offline_and_skips_frozen_data(tmp_path: Path) -> None:
    items, note = fetch_news("AAPL", data_source="bundled", limit=5, timeout_s=5, cache_dir=tmp_path)
    assert items == [] and note is not None and "frozen" in note
    start = time.perf_counter()
    items, note = fetch_news("AAPL", data_source="yfinance", limit=5, timeout_s=3, cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    if items:
        pytest.skip("this machine reaches Yahoo Finance; the offline path cannot be observed")
    assert note is not None and note.startswith("no news available")
    assert elapsed < 3.5


def test_deterministic_graph_writes_every_section_from_the_numbers() -> None:
    stages: list[str] = []
    final = run_graph(base_state("Should I buy AAPL?"), stages)
    markdown = final["draft"]["markdown"]
    report = final["draft"]["report"]
    forecast = INPUTS["forecast"]
    assert sorted(stages) == ["critic", "market_expert", "performance_analyst", "report_generator"]
    assert stages[-2:] == ["report_generator", "critic"]
    for section in ("## Summary", "## Forecast", "## Technicals", "## News", "## Risks", "## Stance"):
        assert section in markdown
    assert "Should I buy AAPL?" in markdown
    assert "No LLM was used" in markdown
    for step in forecast["forecast"]:
        assert f"| {step['p10']:.2f} | {step['p50']:.2f} | {step['p90']:.2f} |" in markdown
    # Each specialist's output reaches the report.
    assert final["performance"]["text"] in markdown
    assert final["market"]["text"] in markdown
    assert "Apple shares plunge" in markdown
    assert report.stance == "bearish" and report.confidence == final["performance"]["facts"]["confidence"]
    assert final["critique"].approved and final.get("revisions", 0) == 0


def test_no_news_is_said_plainly() -> None:
    state = {**base_state(), "news": [], "news_note": "no news available: offline"}
    final = run_graph(state)
    assert final["market"]["mean_sentiment"] is None
    assert "No news available for AAPL (no news available: offline)" in final["draft"]["markdown"]
