"""What the agent's report says about a model's skill: the card's interval, never "beats persistence"."""

from __future__ import annotations

from typing import Any

from agent.numbers import performance_facts
from agent.report import backtest_line
from ml.evaluation.compare import NO_SKILL, verdict

STEP = {"date": "2023-01-09", "p10": 95.0, "p50": 101.0, "p90": 106.0, "log_return_p10": -0.05,
        "log_return_p50": 0.01, "log_return_p90": 0.06}  # fmt: skip
MODEL = {"name": "stockq-child-AAPL", "version": "2"}
FORECAST = {"ticker": "AAPL", "as_of": "2022-12-28", "data_source": "bundled", "last_close": 100.0,
            "model": MODEL, "next_day": STEP, "seven_day": STEP}  # fmt: skip


def _card(lo: float, hi: float) -> dict[str, Any]:
    skills = {"zero_ewma": {"skill": (lo + hi) / 2, "lo": lo, "hi": hi, "dm_p_value": 0.3}}
    v = verdict(skills, {"zero_ewma": 0.01})
    metrics = {"direction_accuracy": 0.52, "coverage_80": 0.79, "rel_mae_zero": 0.97}
    return {"backtest": {"metrics": {"model_cqr": metrics}}, "verdict": v}


def test_an_interval_including_zero_is_reported_as_no_measurable_skill() -> None:
    facts = performance_facts(FORECAST, {}, _card(-0.02, 0.03))
    line = backtest_line(facts)
    assert facts["backtest"]["skill"].startswith(NO_SKILL) and "-2.0% to +3.0%" in line
    assert "walk-forward" in line and "beats persistence" not in line
    measurable = performance_facts(FORECAST, {}, _card(0.01, 0.05))
    assert measurable["backtest"]["skill"].startswith("skill +3.0% (90 % interval +1.0% to +5.0%)")
    # Measurable skill raises the quality the confidence is capped by; none earns nothing there.
    assert measurable["backtest"]["quality"] > facts["backtest"]["quality"]


def test_a_holdout_card_claims_no_skill_whatever_its_relative_mae() -> None:
    card = {"test": {"mase_persistence_mean": 0.9, "coverage_80_mean": 0.8, "direction_accuracy_mean": 0.55}}
    facts = performance_facts(FORECAST, {}, card)
    assert facts["backtest"]["evaluation"] == "holdout"
    assert facts["backtest"]["skill"] == f"{NO_SKILL} shown: a single holdout, no interval"
    assert "beats persistence" not in backtest_line(facts) + facts["backtest"]["verdict"]
