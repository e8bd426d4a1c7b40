"""Walk-forward backtest on synthetic series with a known answer (tiny LSTMs, no Feast, no Redis).

The AR(1) signal (phi = 0.3) lives in the first days: E[r_{t+h} | r_t] = phi^h r_t, so days 3-7 of a
7-day forecast are close to unpredictable and their larger losses (and the drift the model estimates
from its training years) dilute a 7-day-average skill. The AR(1) test therefore asks for significant
skill where the signal is (horizons 1 and 2, DM at lags 0 and 1) and reports the 7-day aggregate.
2000 pooled windows (4 origins x 500) give the tests their power; the production default is 8 x 21.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml.config import BacktestConfig
from ml.errors import InsufficientHistory, InvalidInput, ParentOverlap
from ml.evaluation.backtest import origin_splits, parent_cutoff, walk_forward
from ml.evaluation.compare import NO_SKILL
from ml.features.technical import MODEL_FEATURES, compute_features, model_rows
from ml.model.lstm import ModelSpec, QuantileLSTM
from ml.model.scaler import Scaler
from ml.training.dataprep import Dataset, dataset_from_frame
from ml.training.recipes import ParentModel, strategy_recipe

WINDOW, HORIZON = 20, 7
SPEC = ModelSpec(len(MODEL_FEATURES), hidden=8, layers=1, dropout=0.0, window=WINDOW, horizon=HORIZON)
POWER = BacktestConfig(origins=4, step=500, epochs=30, patience=3, bootstrap_reps=300)
LR = 1e-2


def synthetic(kind: str, n: int, seed: int) -> Dataset:
    """Daily log returns of a known process -> prices -> the project's features -> a Dataset."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    r = np.zeros(n)
    if kind == "ar1":
        for t in range(1, n):
            r[t] = 0.3 * r[t - 1] + 0.01 * e[t]
    elif kind == "random_walk":
        r = 0.01 * e
    elif kind == "garch":  # GARCH(1, 1): persistent volatility clusters, unconditional vol 1 %
        var = 1e-4
        for t in range(1, n):
            var = 2e-6 + 0.08 * r[t - 1] ** 2 + 0.9 * var
            r[t] = np.sqrt(var) * e[t]
    close = 100.0 * np.exp(np.cumsum(r))
    days = pd.bdate_range("2005-01-03", periods=n)
    frame = model_rows(compute_features(pd.DataFrame({"close": close}, index=days)))
    return dataset_from_frame(kind, frame, WINDOW, HORIZON)


def run(kind: str, seed: int = 0, n: int = 4000, config: BacktestConfig = POWER) -> dict[str, Any]:
    return walk_forward(synthetic(kind, n, seed), strategy_recipe("scratch", SPEC, LR), config, device="cpu")


def _parent(trained_until: Any) -> ParentModel:
    rng = np.random.default_rng(0)
    scaler = Scaler.fit(
        rng.normal(size=(100, len(MODEL_FEATURES))),
        rng.normal(0, 0.01, (100, HORIZON)),
        feature_names=MODEL_FEATURES,
        fit_start="2000-01-03",
        fit_end="2000-05-19",
    )
    return ParentModel(QuantileLSTM(SPEC), scaler, trained_until, "stockq-parent v1")


# -- the plan ---------------------------------------------------------------------------------------
def test_origins_are_purged_adjacent_and_cover_the_most_recent_windows() -> None:
    config = BacktestConfig()
    splits = origin_splits(600, HORIZON, config)
    assert len(splits) == 8 and splits[-1].test.stop == 600
    for s in splits:
        assert s.train.start == 0 and s.train.stop + HORIZON == s.val.start
        assert s.val.stop + HORIZON == s.test.start and s.test.stop - s.test.start == 21
        assert s.val.stop - s.val.start == max(10, round((s.test.start - 2 * HORIZON) * 0.15))
    assert all(a.test.stop == b.test.start for a, b in itertools.pairwise(splits))
    # Expanding: every origin trains on more than the one before.
    assert [s.train.stop for s in splits] == sorted({s.train.stop for s in splits})
    with pytest.raises(InsufficientHistory, match="use fewer origins"):
        origin_splits(200, HORIZON, config)
    with pytest.raises(InvalidInput, match=r"origins must be an integer in 1\.\.100"):
        BacktestConfig(origins=0)
    with pytest.raises(InvalidInput, match="need at least 16 evaluation windows"):
        walk_forward(
            synthetic("random_walk", 300, 0),
            strategy_recipe("scratch", SPEC, LR),
            BacktestConfig(origins=1, step=15),
        )


def test_the_last_train_and_val_targets_end_before_each_origin() -> None:
    data = synthetic("random_walk", 600, seed=1)
    for s in origin_splits(len(data.targets), HORIZON, BacktestConfig()):
        decision_row = s.test.start + WINDOW - 1
        last_val_target_row = s.val.stop - 1 + WINDOW - 1 + HORIZON
        last_train_target_row = s.train.stop - 1 + WINDOW - 1 + HORIZON
        assert last_val_target_row < decision_row
        assert last_train_target_row < s.val.start + WINDOW - 1


# -- parents ----------------------------------------------------------------------------------------
def test_an_overlapping_parent_is_refused_with_a_clear_error() -> None:
    data = synthetic("random_walk", 600, seed=2)
    config = BacktestConfig(origins=2, epochs=1)
    cutoff = parent_cutoff(data, origin_splits(len(data.targets), HORIZON, config))
    first_origin = data.sample_date(len(data.targets) - 42)
    # The cutoff is the purge (7 trading days) and one more day before the first origin.
    assert data.dates.get_loc(pd.Timestamp(first_origin)) - data.dates.get_loc(pd.Timestamp(cutoff)) == 8
    for until in (cutoff + timedelta(days=1), data.dates[-1].date()):
        recipe = strategy_recipe("fine_tune", SPEC, LR, _parent(until))
        with pytest.raises(ParentOverlap) as err:
            walk_forward(data, recipe, config, device="cpu")
        assert isinstance(err.value, InvalidInput) and err.value.code == "parent_overlaps_evaluation"
        assert f"stockq-parent v1 trained until {until.isoformat()}, past {cutoff.isoformat()}" in str(
            err.value
        )
        assert f"first origin is {first_origin}" in str(err.value)


def test_a_parent_that_stopped_in_time_is_used_and_scored_as_a_baseline() -> None:
    data = synthetic("random_walk", 600, seed=3)
    config = BacktestConfig(origins=2, epochs=2, bootstrap_reps=100)
    cutoff = parent_cutoff(data, origin_splits(len(data.targets), HORIZON, config))
    progress: list[tuple[int, int]] = []
    recipe = strategy_recipe("freeze", SPEC, LR, _parent(cutoff))
    result = walk_forward(data, recipe, config, device="cpu", on_origin=lambda *k: progress.append(k))
    assert progress == [(1, 2), (2, 2)]
    assert result["parent"] == {
        "label": "stockq-parent v1",
        "trained_until": cutoff.isoformat(),
        "cutoff": cutoff.isoformat(),
    }
    assert result["recipe"] == "freeze" and len(result["origins"]) == 2 and result["n_windows"] == 42
    assert set(result["metrics"]) == {
        "model_cqr",
        "model",
        "zero_ewma",
        "empirical",
        "linear_quantile",
        "parent",
    }
    assert set(result["skill"]["model_cqr"]) == {"zero_ewma", "empirical", "linear_quantile", "parent"}
    assert 1 <= result["refit_epochs"] <= 2 and [o["n_eval"] for o in result["origins"]] == [21, 21]
    assert result["origins"][0]["trained_until"] < result["first_origin"]
    json.dumps(result, allow_nan=False)  # a card field as it is


def test_recipes_take_a_parent_exactly_when_they_start_from_one() -> None:
    with pytest.raises(ValueError, match="scratch takes no parent"):
        strategy_recipe("scratch", SPEC, LR, _parent(pd.Timestamp("2001-01-01").date()))
    with pytest.raises(ValueError):
        strategy_recipe("freeze", SPEC, LR)
    freeze = strategy_recipe("freeze", SPEC, LR, _parent(pd.Timestamp("2001-01-01").date()))
    model = freeze.build()
    assert freeze.freeze_lstm and not any(p.requires_grad for p in model.lstm.parameters())
    assert strategy_recipe("fine_tune", SPEC, LR, freeze.parent).lr == pytest.approx(LR * 0.1)


# -- known answers ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_ar1_signal_is_found_and_significant() -> None:
    result = run("ar1")
    skill = result["skill"]["model_cqr"]["zero_ewma"]
    h1, h2 = skill["per_horizon"][:2]
    assert h1["dm_p_value"] < 0.05 and h2["dm_p_value"] < 0.05
    assert h1["skill"] > 0.01
    # The median moves with yesterday's return: MAE at day 1 clearly below the zero forecast's.
    assert result["metrics"]["model_cqr"]["per_horizon"][0]["rel_mae_zero"] < 0.985
    # So does the linear quantile regression on the same features: the signal is in the features.
    assert result["baseline_skill"]["linear_quantile"]["per_horizon"][0]["dm_p_value"] < 0.05
    assert result["n_windows"] == 2000 and len(result["origins"]) == 4


@pytest.mark.slow
def test_a_random_walk_shows_no_measurable_skill() -> None:
    result = run("random_walk")
    skill = result["skill"]["model_cqr"]["zero_ewma"]
    assert skill["dm_p_value"] >= 0.10 and skill["per_horizon"][0]["dm_p_value"] >= 0.10
    assert result["verdict"]["measurable"] is False
    assert result["verdict"]["text"].startswith(NO_SKILL)


@pytest.mark.slow
def test_cqr_calibrates_the_band_on_garch_returns() -> None:
    # A badly fitted model on purpose (a random LSTM frozen, its head trained for one epoch): its band
    # misses far more than 20 % of the time; CQR on each origin's validation windows repairs it.
    data = synthetic("garch", 4000, seed=0)
    config = POWER.with_(epochs=1)
    parent = _parent(parent_cutoff(data, origin_splits(len(data.targets), HORIZON, config)))
    result = walk_forward(data, strategy_recipe("freeze", SPEC, 1e-4, parent), config, device="cpu")
    coverage = result["coverage"]
    assert coverage["before"] < 0.65
    assert 0.75 <= coverage["after"] <= 0.85
    assert all(0.75 <= c <= 0.85 for c in coverage["per_horizon_after"])
    m = result["metrics"]["model_cqr"]
    assert m["miss_below"] + m["miss_above"] == pytest.approx(1 - coverage["after"])
    assert [o["calibration"]["n_calibration"] for o in result["origins"]] == [
        o["n_val"] for o in result["origins"]
    ]
    assert result["serving_calibration"]["method"] == "cqr"
    assert len(result["serving_calibration"]["correction"]) == HORIZON
