"""What the agent's report says about a model's skill: the card's verdict (the latest evaluation of its
recipe, with its interval) and the ticker's own row of it, never a retired metric ("beats persistence",
direction accuracy, MAE ratios); without an evaluation it claims none and caps confidence at the floor."""

from __future__ import annotations

from typing import Any

import pytest

from agent.numbers import CONFIDENCE_FLOOR, performance_facts
from agent.prompts import facts_brief
from ml.evaluation.panel_report import verdict
from ml.evaluation.promotion import NO_SKILL, NOT_EVALUATED, card_verdict

STEP = {"date": "2023-01-09", "p10": 95.0, "p50": 100.0, "p90": 106.0, "log_return_p10": -0.05,
        "log_return_p50": 0.0, "log_return_p90": 0.06}  # fmt: skip
MODEL = {"name": "stockq-parent", "version": "2", "kind": "parent", "strategy": None}
FORECAST = {"ticker": "AAPL", "as_of": "2022-12-28", "data_source": "bundled", "last_close": 100.0,
            "model": MODEL, "band": {"sigma": 0.02, "calibration": None}, "forecast": [{**STEP, "day": 7}],
            "next_day": STEP, "seven_day": STEP}  # fmt: skip
RETIRED = ("beats persistence", "direction accuracy", "mase", "MAE", "backtest")


def _skill(lo: float, hi: float) -> dict[str, Any]:
    return {
        "skill": (lo + hi) / 2,
        "lo": lo,
        "hi": hi,
        "dm_p_value": 0.3,
        "dm_statistic": -0.5,
        "block_length": 8,
    }


def _card(lo: float, hi: float, aapl: tuple[float, float] | None = None) -> dict[str, Any]:
    """A parent's card whose evaluation has pooled skill [lo, hi] and, when given, AAPL's own row."""
    pooled = {"skill": {"zero_ewma": _skill(lo, hi)}, "coverage_80": {"global": 0.79, "zero_ewma": 0.76},
              "pinball": {"global": 0.01, "zero_ewma": 0.0101}}  # fmt: skip
    per_ticker = {} if aapl is None else {"AAPL": {"pinball": 0.012, "coverage_80": 0.70,
                                                    "skill": {"zero_ewma": _skill(*aapl)}}}  # fmt: skip
    report = {"pooled": pooled, "per_ticker": per_ticker}
    evaluation = {"recipe": "global", "universe": "panel", "evaluated_at": "2024-05-01T06:00:00+00:00",
                  "run_id": "r1", "period": ["2005-01-03", "2022-12-16"], "verdict": verdict(report),
                  **report}  # fmt: skip
    return {
        "recipe": "global",
        "universe": "panel",
        "evaluation": evaluation,
        "verdict": card_verdict(evaluation),
    }


def _said(facts: dict[str, Any]) -> str:
    return facts_brief(facts, FORECAST)


def test_an_interval_including_zero_is_reported_as_no_measurable_skill() -> None:
    facts = performance_facts(FORECAST, {}, _card(-0.02, 0.03))
    evaluation = facts["evaluation"]
    assert evaluation["basis"].startswith(
        f"pooled, AAPL not evaluated alone: {NO_SKILL} over zero+EWMA: +0.5%"
    )
    assert "(90 % interval -2.0% to +3.0%)" in _said(
        facts
    ) and "walk-forward 2005-01-03 to 2022-12-16" in _said(facts)
    measurable = performance_facts(FORECAST, {}, _card(0.01, 0.05))
    assert measurable["evaluation"]["text"].startswith(
        "over the panel, skill +3.0% (90 % interval +1.0% to +5.0%)"
    )
    # Measurable skill raises the quality the confidence is capped by; none earns nothing there (coverage
    # 79 % earns 0.95 in both).
    assert facts["evaluation"]["quality"] == pytest.approx(0.95 / 2)
    assert measurable["evaluation"]["quality"] == pytest.approx((0.01 / 0.02 + 0.95) / 2)
    for said in (_said(facts), _said(measurable)):
        assert not any(word in said for word in RETIRED)


def test_the_tickers_own_row_decides_over_the_pooled_verdict() -> None:
    facts = performance_facts(FORECAST, {}, _card(0.01, 0.05, aapl=(-0.01, 0.02)))
    evaluation = facts["evaluation"]
    assert (evaluation["scope"], evaluation["measurable"], evaluation["coverage_80"]) == ("AAPL", False, 0.70)
    assert evaluation["basis"] == (
        f"AAPL alone: {NO_SKILL} over zero+EWMA: +0.5% (90 % interval -1.0% to +2.0%), "
        "80% band coverage 70% (too narrow)"
    )
    # The pooled verdict is still quoted, and AAPL's numbers are what the cap is made of.
    assert "over the panel, skill +3.0% (90 % interval +1.0% to +5.0%)" in _said(facts)
    assert evaluation["quality"] == pytest.approx((0.0 + 0.5) / 2)
    assert facts["confidence_cap"] == pytest.approx(CONFIDENCE_FLOOR + (1 - CONFIDENCE_FLOOR) * 0.25)


def test_a_card_without_an_evaluation_claims_no_skill() -> None:
    card = {"recipe": "global", "universe": "panel", "evaluation": None, "verdict": card_verdict(None)}
    facts = performance_facts(FORECAST, {}, card)
    assert facts["evaluation"]["text"] == NOT_EVALUATED
    assert f"Model evaluation: {NOT_EVALUATED}." in _said(facts)
    assert facts["confidence_cap"] == CONFIDENCE_FLOOR
    assert not any(word in _said(facts) for word in RETIRED)


def test_the_brief_says_the_median_is_zero_and_the_direction_is_the_trends() -> None:
    said = _said(performance_facts(FORECAST, {}, _card(0.01, 0.05)))
    assert "its median is zero by design (+0.00% at 7 days after calibration)" in said
    assert "not which way, from a daily volatility estimate of 2.00%" in said
    assert (
        "Trend: unknown (the close against its 20- and 50-day averages; the only source of a direction)."
        in said
    )
