"""What the agent's report says about a model's skill: the card's verdict (the latest evaluation of its
recipe, with its interval), never "beats persistence"; without an evaluation it claims none."""

from __future__ import annotations

from typing import Any

from agent.numbers import performance_facts
from agent.report import backtest_line
from ml.evaluation.panel_report import verdict
from ml.evaluation.promotion import NO_SKILL, NOT_EVALUATED, card_verdict

STEP = {"date": "2023-01-09", "p10": 95.0, "p50": 101.0, "p90": 106.0, "log_return_p10": -0.05,
        "log_return_p50": 0.01, "log_return_p90": 0.06}  # fmt: skip
MODEL = {"name": "stockq-child-AAPL", "version": "2"}
FORECAST = {"ticker": "AAPL", "as_of": "2022-12-28", "data_source": "bundled", "last_close": 100.0,
            "model": MODEL, "next_day": STEP, "seven_day": STEP}  # fmt: skip


def _card(lo: float, hi: float) -> dict[str, Any]:
    skill = {"skill": (lo + hi) / 2, "lo": lo, "hi": hi, "dm_p_value": 0.3, "dm_statistic": -0.5}
    report = {"pooled": {"skill": {"zero_ewma": skill}, "coverage_80": {"global": 0.79},
                         "pinball": {"global": 0.01, "zero_ewma": 0.0101}}}  # fmt: skip
    evaluation = {"recipe": "child_fine_tune", "universe": "panel", "evaluated_at": "2024-05-01",
                  "run_id": "r1", "verdict": verdict(report), "pooled": report["pooled"]}  # fmt: skip
    return {"recipe": "child_fine_tune", "universe": "panel", "evaluation": evaluation,
            "verdict": card_verdict(evaluation)}  # fmt: skip


def test_an_interval_including_zero_is_reported_as_no_measurable_skill() -> None:
    facts = performance_facts(FORECAST, {}, _card(-0.02, 0.03))
    line = backtest_line(facts)
    assert facts["backtest"]["skill"].startswith(NO_SKILL) and "-2.0% to +3.0%" in line
    assert "walk-forward" in line and "beats persistence" not in line
    measurable = performance_facts(FORECAST, {}, _card(0.01, 0.05))
    assert measurable["backtest"]["skill"].startswith("skill +3.0% (90 % interval +1.0% to +5.0%)")
    # Measurable skill raises the quality the confidence is capped by; none earns nothing there.
    assert measurable["backtest"]["quality"] > facts["backtest"]["quality"]


def test_a_card_without_an_evaluation_claims_no_skill() -> None:
    card = {"recipe": "global", "universe": "panel", "evaluation": None, "verdict": card_verdict(None)}
    facts = performance_facts(FORECAST, {}, card)
    assert facts["backtest"]["skill"] == NOT_EVALUATED
    assert "beats persistence" not in backtest_line(facts) + facts["backtest"]["verdict"]
