"""The evaluation can show skill where there is some and reports none where there is none (issue 18).

Real models trained by the project's loop on synthetic panels with a known volatility process; the
baselines, bootstrap and DM tests are the ones the `evaluate` job and bench/skill.py use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.config import EvaluationConfig, PanelModelConfig
from ml.evaluation.neural import GlobalRecipe, PerTickerRecipe
from ml.evaluation.promotion import decide
from ml.evaluation.quantile_calibration import apply_shifts, fit_shifts
from ml.evaluation.run import daily_returns, evaluate
from ml.evaluation.vol_baselines import baseline_quantiles
from ml.evaluation.walk_forward import origin_rows
from ml.model.vol_lstm import LEVELS, VolQuantileLSTM, VolSpec, horizon_scale, predict_z
from ml.training.panel import build_panel, fit_input_scaler, gather_windows, scaled_inputs, select_samples
from tests.synthetic_panel import garch_factor_panel, riskmetrics_panel

H = 7


def test_the_untrained_model_is_zero_ewma_on_the_same_windows() -> None:
    panel = build_panel(garch_factor_panel(n_tickers=3, years=3, seed=5))
    samples = select_samples(panel, window=20, horizon=H, first_row=300, last_row=len(panel.dates) - 1)
    torch.manual_seed(0)
    model = VolQuantileLSTM(VolSpec(inputs=panel.input_names, tickers=panel.tickers))
    scaler = fit_input_scaler(panel, samples, H)
    z = predict_z(
        model, gather_windows(scaled_inputs(panel, scaler), samples, 20), np.zeros(len(samples), int)
    )
    ours = z * horizon_scale(panel.sigma[samples.rows, samples.cols], H)[..., None]

    rows = np.unique(samples.rows)
    reference = baseline_quantiles(
        daily_returns(panel),
        panel.dates[rows],
        panel.dates[rows[:1]],
        H,
        np.asarray(LEVELS),
        names=("zero_ewma",),
    )["zero_ewma"]
    theirs = np.stack(
        [
            reference[panel.tickers[c]][np.searchsorted(rows, r)]
            for r, c in zip(samples.rows, samples.cols, strict=True)
        ]
    )
    assert np.isfinite(theirs).all() and len(theirs) > 1000
    np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-9)


def test_recalibration_moves_a_too_narrow_band_to_its_nominal_coverage() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, H))
    narrow = np.broadcast_to(0.5 * np.quantile(rng.standard_normal(100_000), LEVELS), (4000, H, len(LEVELS)))
    shifts = fit_shifts(narrow[:2000], z[:2000], np.asarray(LEVELS))
    fixed = apply_shifts(narrow[2000:], shifts)
    covered = ((z[2000:] >= fixed[..., 1]) & (z[2000:] <= fixed[..., 7])).mean()
    before = ((z[2000:] >= narrow[2000:, :, 1]) & (z[2000:] <= narrow[2000:, :, 7])).mean()
    assert before < 0.5 and 0.77 < covered < 0.83


def _config(first_year: int) -> EvaluationConfig:
    model = PanelModelConfig(stride=1, batch_size=128, hidden=16)
    return EvaluationConfig(first_year=first_year, bootstrap_reps=300, model=model)


@pytest.mark.slow
def test_a_global_model_finds_the_skill_in_a_factor_garch_panel_and_beats_750_day_models() -> None:
    panel = build_panel(garch_factor_panel(n_tickers=8, years=12, seed=1))
    config = _config(2006)
    result = evaluate(
        panel, [GlobalRecipe("global", config.model), PerTickerRecipe("per_ticker_750", config.model)], config
    )
    pooled = result.reports["global"]["pooled"]["skill"]["zero_ewma"]
    assert pooled["dm_p_value"] < 0.05 and pooled["lo"] > 0, pooled
    assert result.reports["global"]["verdict"]["measurable"] is True
    # Per-ticker models trained from scratch on their last 750 days learn less of it, but not nothing:
    # 750 days of this process are enough for some skill (+0.27 % against the panel's +0.60 %, measured
    # here), so the "they do not beat zero+EWMA" is not what happens (the README says so).
    alone = result.reports["per_ticker_750"]["pooled"]["skill"]["zero_ewma"]
    assert pooled["skill"] > alone["skill"] > 0, (pooled, alone)
    # Every figure recomputes from the per-window losses kept with the evaluation.
    losses = result.losses
    mean = losses.groupby("forecaster", observed=True)[[c for c in losses if c.startswith("loss_q")]].mean()
    assert set(mean.index) >= {"global", "zero_ewma", "garch_t_fhs", "har_pooled"}


@pytest.mark.slow
def test_a_panel_with_nothing_beyond_zero_ewma_shows_no_measurable_skill_and_promotes_nothing() -> None:
    panel = build_panel(riskmetrics_panel(n_tickers=6, years=10, seed=2))
    config = _config(2005)
    result = evaluate(panel, [GlobalRecipe("global", config.model)], config)
    report = result.reports["global"]
    assert report["verdict"]["measurable"] is False
    assert report["verdict"]["text"].startswith("no measurable skill")
    assert len(origin_rows(panel, config)) >= 5
    # Nothing is promoted on it: the champion stays, and the decision says why.
    evaluation = {"verdict": report["verdict"], "recipe": "global", "universe": "panel", "run_id": "r1"}
    decision = decide("stockq-parent", "2", "1", evaluation)
    assert decision["promote"] is False and decision["text"].startswith("kept champion v1")
