"""The champion moves only on a significant Diebold–Mariano improvement on the same walk-forward windows.

The slow tests use the long synthetic series of test_backtest (4 origins x 500 windows: 2000 pooled
windows, seeds fixed, so every run gives the same numbers); the promotion loss weighs every horizon the
same (ml.evaluation.promotion), which is what lets an AR(1) edge at days 1-2 show through the 7-day forecast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ml.evaluation.backtest import walk_forward
from ml.evaluation.promotion import compare_backtests, walk_forward_decision
from ml.training.recipes import strategy_recipe
from tests.test_backtest import LR, POWER, SPEC, synthetic


def _backtest(losses: np.ndarray, start: int = 0, name: str = "model_cqr") -> dict[str, Any]:
    dates = [f"2020-{1 + (start + i) // 28:02d}-{1 + (start + i) % 28:02d}" for i in range(len(losses))]
    return {"windows": {"dates": dates, "pinball": {name: losses.tolist()}}}


def _noise(n: int, seed: int) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(0.01, 0.004, (n, 7))) * np.sqrt(np.arange(1, 8))


def test_a_clearly_better_candidate_is_promoted_and_an_equal_one_is_not() -> None:
    champion = _noise(200, 0)
    better = compare_backtests(_backtest(champion * 0.9), _backtest(champion))
    assert better is not None and better["promote"] is True and better["p_value"] < 0.01
    assert better["candidate_pinball"] == pytest.approx(0.9 * better["champion_pinball"])
    same = compare_backtests(_backtest(champion), _backtest(champion))
    assert same is not None and same["promote"] is False and same["p_value"] >= 0.10
    noisy = compare_backtests(_backtest(_noise(200, 1)), _backtest(champion))
    assert noisy is not None and noisy["promote"] is (noisy["p_value"] < 0.10)


def test_only_common_windows_are_compared_and_too_few_mean_no_test() -> None:
    champion = _noise(200, 0)
    shifted = compare_backtests(_backtest(champion[50:] * 0.9, start=50), _backtest(champion))
    assert shifted is not None and shifted["n"] == 150
    assert compare_backtests(_backtest(champion[:10], start=190), _backtest(champion[:10])) is None
    decision = walk_forward_decision("m", "3", _backtest(champion), {"test": {}})
    assert decision == {
        "promote": True,
        "text": "promoted: champion v3 has no walk-forward windows in common to compare on",
    }
    first = walk_forward_decision("m", None, _backtest(champion), None)
    assert first == {"promote": True, "text": "promoted: first champion of m"}
    kept = walk_forward_decision("m", "3", _backtest(champion), {"backtest": _backtest(champion)})
    assert kept["promote"] is False and kept["text"].startswith("kept champion v3: pinball ")


def _run(kind: str, seed: int = 0) -> dict[str, Any]:
    recipe = strategy_recipe("scratch", SPEC, LR)
    return walk_forward(synthetic(kind, 4000, 0), recipe, POWER.with_(seed=seed), device="cpu")


@pytest.mark.slow
def test_an_ar1_model_replaces_a_baseline_level_champion() -> None:
    candidate = _run("ar1")
    # A champion forecasting like the random walk with RiskMetrics bands, on the very same windows.
    result = compare_backtests(candidate, candidate, champion_name="zero_ewma")
    assert result is not None and result["n"] == 2000
    assert result["promote"] is True and result["p_value"] < 0.05
    decision = walk_forward_decision("m", "1", candidate, {"backtest": _as_champion(candidate, "zero_ewma")})
    assert decision["promote"] is True and decision["text"].startswith("promoted: pinball ")


@pytest.mark.slow
def test_a_retrained_random_walk_model_does_not_replace_the_champion() -> None:
    champion, candidate = _run("random_walk", seed=0), _run("random_walk", seed=1)
    decision = walk_forward_decision("m", "1", candidate, {"backtest": champion})
    assert decision["promote"] is False and decision["p_value"] >= 0.10
    assert decision["text"].startswith("kept champion v1")
    # Nor does it beat the random walk itself: no skill to promote on.
    vs_baseline = compare_backtests(candidate, candidate, champion_name="zero_ewma")
    assert vs_baseline is not None and vs_baseline["promote"] is False


def _as_champion(backtest: dict[str, Any], name: str) -> dict[str, Any]:
    windows = backtest["windows"]
    return {"windows": {"dates": windows["dates"], "pinball": {"model_cqr": windows["pinball"][name]}}}
