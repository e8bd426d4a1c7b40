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
from ml.evaluation.promotion import NOT_EVALUATED, card_verdict

INPUTS = json.loads((Path(__file__).parent / "data" / "agent_inputs.json").read_text())


def inputs() -> dict[str, Any]:
    return copy.deepcopy(INPUTS)


def shifted(forecast: dict[str, Any], log_shift: float) -> dict[str, Any]:
    """The same band moved by `log_shift` (log return): a median the stance must ignore."""
    out = copy.deepcopy(forecast)
    for step in out["forecast"]:
        for q in ("p10", "p50", "p90"):
            step[f"log_return_{q}"] += log_shift
            step[q] = out["last_close"] * math.exp(step[f"log_return_{q}"])
    out["next_day"], out["seven_day"] = out["forecast"][0], out["forecast"][6]
    return out


def placed(snapshot: dict[str, Any], gap_20: float, gap_50: float) -> dict[str, Any]:
    """The snapshot with the close `gap` (log) above its 20- and 50-day averages (stored as average / close
    - 1)."""
    return {**snapshot, "sma_20_rel": math.exp(-gap_20) - 1.0, "sma_50_rel": math.exp(-gap_50) - 1.0}


def half_width(forecast: dict[str, Any]) -> float:
    seven = forecast["seven_day"]
    return (seven["log_return_p90"] - seven["log_return_p10"]) / 2.0


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
    ("gap_20", "gap_50", "stance", "edge"),
    [
        (-0.0993, -0.1302, "bearish", -0.0993 / 0.074886),  # below both: the nearer average counts
        (0.03, 0.05, "bullish", 0.03 / 0.074886),
        (0.004, 0.06, "neutral", 0.004 / 0.074886),  # above both, but by less than a tenth of the band
        (0.05, -0.02, "neutral", 0.0),  # between the averages: no trend
    ],
)
def test_stance_follows_the_trend_against_the_band(
    gap_20: float, gap_50: float, stance: str, edge: float
) -> None:
    snapshot = placed(INPUTS["snapshot"], gap_20, gap_50)
    assert half_width(INPUTS["forecast"]) == pytest.approx(0.074886)
    for log_shift in (-0.03, 0.0, 0.03):  # the model's median takes no part in the stance
        got, confidence, got_edge = stance_from_numbers(shifted(INPUTS["forecast"], log_shift), snapshot, 0.6)
        assert (got, got_edge) == (stance, pytest.approx(edge))
        clarity = {"bullish": min(1.0, edge), "bearish": min(1.0, -edge), "neutral": 1.0 - abs(edge) / 0.1}
        assert confidence == math.floor(clarity[stance] * (0.3 + 0.7 * 0.6) * 100) / 100


def test_confidence_never_exceeds_the_evaluation_cap() -> None:
    data = inputs()
    for gaps in ((-0.2, -0.1), (-0.01, -0.03), (0.0, 0.0), (0.002, 0.01), (0.05, 0.02), (0.3, 0.2)):
        facts = performance_facts(data["forecast"], placed(data["snapshot"], *gaps), data["model_card"])
        assert facts["confidence"] <= facts["confidence_cap"]
        report = draft(stance=facts["stance"], confidence=facts["confidence"])
        assert check_report(report, facts) == []


def test_facts_carry_the_real_numbers_and_the_tickers_own_evaluation() -> None:
    data = inputs()
    facts = performance_facts(data["forecast"], data["snapshot"], data["model_card"])
    seven = data["forecast"]["seven_day"]
    assert facts["seven_day"]["p50"] == seven["p50"]
    assert facts["seven_day"]["return_p50_pct"] == pytest.approx((seven["p50"] / 125.67 - 1) * 100, abs=1e-3)
    assert facts["daily_sigma_pct"] == pytest.approx(2.1)
    assert facts["trend"] == "down"  # both SMAs are above the close in the snapshot
    assert facts["rsi_zone"] == "oversold"
    assert facts["sma_20_gap_pct"] == pytest.approx((1 / 1.104372 - 1) * 100)
    assert facts["edge"] == pytest.approx(math.log(1 / 1.104372) / 0.074886, abs=1e-3)
    evaluation = facts["evaluation"]
    # AAPL has its own row: +0.9 % [-0.3 %, +2.1 %] over zero+EWMA, 78.1 % coverage; the pooled +1.2 %
    # [+0.6 %, +1.8 %] is measurable, AAPL's alone is not, so only the coverage earns quality.
    assert (evaluation["scope"], evaluation["skill"], evaluation["lo"], evaluation["hi"]) == (
        "AAPL", 0.009, -0.003, 0.021,
    )  # fmt: skip
    assert evaluation["measurable"] is False and evaluation["coverage_80"] == 0.781
    assert evaluation["quality"] == pytest.approx((0.0 + (1 - 0.019 / 0.2)) / 2)
    assert facts["confidence_cap"] == pytest.approx(0.3 + 0.7 * 0.4525)
    assert (facts["stance"], facts["confidence"]) == ("bearish", 0.61)  # a clear trend: the full cap
    assert evaluation["text"].startswith(
        "over the panel, skill +1.2% (90 % interval +0.6% to +1.8%) over zero+EWMA"
    )
    assert "(walk-forward 2005-01-03 to 2022-12-16, evaluated 2023-01-03)" in evaluation["text"]
    assert evaluation["basis"] == (
        "AAPL alone: no measurable skill over zero+EWMA: +0.9% (90 % interval -0.3% to +2.1%), "
        "80% band coverage 78% (well calibrated)"
    )


def test_a_ticker_outside_the_evaluation_reads_the_pooled_figures() -> None:
    data = inputs()
    del data["model_card"]["evaluation"]["per_ticker"]["AAPL"]
    evaluation = performance_facts(data["forecast"], data["snapshot"], data["model_card"])["evaluation"]
    assert (evaluation["scope"], evaluation["lo"], evaluation["measurable"]) == ("pooled", 0.006, True)
    assert evaluation["coverage_80"] == 0.793  # the served recipe's pooled coverage, not a baseline's
    assert evaluation["quality"] == pytest.approx((0.006 / 0.02 + (1 - 0.007 / 0.2)) / 2)
    assert evaluation["text"].endswith("AAPL was not in it; pooled 80% band coverage 79% (well calibrated)")


def test_without_an_evaluation_the_report_claims_nothing_and_confidence_stays_low() -> None:
    data = inputs()
    card = {**data["model_card"], "evaluation": None, "verdict": card_verdict(None)}
    facts = performance_facts(data["forecast"], data["snapshot"], card)
    assert facts["evaluation"]["text"] == NOT_EVALUATED and facts["evaluation"]["quality"] == 0.0
    assert facts["confidence_cap"] == 0.3 and (facts["stance"], facts["confidence"]) == ("bearish", 0.3)
    issue = check_report(draft(stance="bearish", confidence=0.5), facts)
    assert issue == [
        f"Confidence 0.50 exceeds what the model's evaluation supports (at most 0.30: {NOT_EVALUATED})."
    ]
    markdown = run_graph({**base_state(), "model_card": card})["draft"]["markdown"]
    assert f"Evaluation: {NOT_EVALUATED}." in markdown
    assert f"The model's band is unproven: {NOT_EVALUATED}." in markdown


def test_critic_rejects_a_stance_against_the_trend_and_overconfidence() -> None:
    data = inputs()
    facts = performance_facts(data["forecast"], data["snapshot"], data["model_card"])  # trend down
    issues = check_report(draft(stance="bullish", confidence=0.99), facts)
    assert issues == [
        "The stance is bullish but the trend is down (close -9.45% against its 20-day and -12.21% against "
        "its 50-day average); the model's median is zero by design, so only the trend can give a direction.",
        "Confidence 0.99 exceeds what the model's evaluation supports (at most 0.62: AAPL alone: no "
        "measurable skill over zero+EWMA: +0.9% (90 % interval -0.3% to +2.1%), 80% band coverage 78% "
        "(well calibrated)).",
    ]
    mixed = performance_facts(data["forecast"], placed(data["snapshot"], 0.05, -0.02), data["model_card"])
    assert "bearish but the trend is mixed" in check_report(draft(stance="bearish", confidence=0.1), mixed)[0]
    # A median far above zero does not license a bullish call against the trend.
    up_median = performance_facts(shifted(data["forecast"], 0.06), data["snapshot"], data["model_card"])
    assert (
        "bullish but the trend is down" in check_report(draft(stance="bullish", confidence=0.1), up_median)[0]
    )
    assert check_report(draft(stance="bearish", confidence=0.1), facts) == []
    assert check_report(draft(stance="neutral", confidence=0.1), facts) == []


def test_missing_indicators_read_as_unknown() -> None:
    data = inputs()
    snapshot = dict.fromkeys(data["snapshot"])
    facts = performance_facts(data["forecast"], snapshot, {})
    assert facts["trend"] == "unknown" and facts["rsi_zone"] == "unknown" and facts["macd"] == "unknown"
    assert facts["evaluation"]["quality"] == 0.0 and facts["stance"] == "neutral"
    state = {**base_state(), "snapshot": snapshot, "model_card": {}}
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
    assert "No LLM was used" in markdown and "model stockq-parent v3 (parent)." in markdown
    for step in forecast["forecast"]:
        low, high = (step[q] / forecast["last_close"] * 100 - 100 for q in ("p10", "p90"))
        row = f"| {step['p10']:.2f} | {step['p50']:.2f} | {step['p90']:.2f} | {low:+.2f}% to {high:+.2f}% |"
        assert row in markdown
    assert "| 7 | 2023-01-09 | 116.60 | 125.77 | 135.44 | -7.22% to +7.78% |" in markdown
    # The model is described as what it is, and quoted by its evaluation; no retired metric survives.
    assert "volatility-scaled quantile forecaster: its median is zero by design (+0.08% at 7 days" in markdown
    assert f"Evaluation: {final['performance']['facts']['evaluation']['text']}." in markdown
    assert "The direction rests on the moving averages alone: the model forecasts none." in markdown
    assert (
        "The evaluation does not show the band beating zero+EWMA: AAPL alone: no measurable skill" in markdown
    )
    for retired in ("direction accuracy", "MAE", "mase", "persistence", "backtest", "Backtest"):
        assert retired not in markdown
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
