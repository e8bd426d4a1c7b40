"""Block lengths, bootstrap skill intervals and DM tests on simulated losses with known skill (pure, fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import signal
from scipy import stats as sps
from statsmodels.regression.linear_model import OLS

from ml.evaluation.panel_stats import (
    block_length,
    bootstrap_skill,
    diebold_mariano,
    panel_bootstrap_skill,
    pooled_diebold_mariano,
)


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    return signal.lfilter([1.0], [1.0, -phi], rng.standard_normal(n))


def _losses(n: int, skill: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pinball-like losses with volatility clustering: a shared persistent scale times independent
    exponential noise; the candidate's expected loss is (1 - skill) x the baseline's at every date."""
    scale = np.exp(0.15 * _ar1(n, 0.95, rng))
    return scale * (1 - skill) * rng.exponential(size=n), scale * rng.exponential(size=n)


# -- block length -------------------------------------------------------------------------------------
def test_block_length_grows_with_dependence_and_ignores_nan() -> None:
    rng = np.random.default_rng(0)
    iid, persistent = rng.standard_normal(2000), _ar1(2000, 0.9, rng)
    assert block_length(iid) <= 2 < 10 <= block_length(persistent)
    assert block_length(np.r_[np.nan, np.nan, persistent]) == block_length(persistent)
    assert block_length(persistent, "circular") >= block_length(persistent)  # PW: b_CB = 1.14 b_SB
    assert block_length(np.full(50, 0.3)) == 1
    with pytest.raises(ValueError, match="at least 8"):
        block_length(np.r_[np.full(10, np.nan), 1.0, 2.0])


# -- bootstrap skill ------------------------------------------------------------------------------------
def test_bootstrap_interval_covers_the_true_skill_and_separates_better_from_equal() -> None:
    rng = np.random.default_rng(1)
    better = [bootstrap_skill(*_losses(1000, 0.2, rng), reps=200, seed=k) for k in range(50)]
    equal = [bootstrap_skill(*_losses(1000, 0.0, rng), reps=200, seed=k) for k in range(50)]
    assert np.mean([b["lo"] <= 0.2 <= b["hi"] for b in better]) >= 0.75  # nominal 0.90
    assert np.mean([b["lo"] > 0 for b in better]) >= 0.9
    assert np.mean([e["lo"] <= 0 <= e["hi"] for e in equal]) >= 0.75
    assert all(b["lo"] <= b["skill"] <= b["hi"] and b["n"] == 1000 and b["level"] == 0.9 for b in better)


def test_bootstrap_skill_drops_pairs_with_a_missing_side() -> None:
    loss, base = _losses(300, 0.1, np.random.default_rng(2))
    holed_loss, holed_base = loss.copy(), base.copy()
    holed_loss[:10], holed_base[-5:] = np.nan, np.nan
    out = bootstrap_skill(holed_loss, holed_base, reps=50)
    assert out["n"] == 285
    assert out["skill"] == pytest.approx(1 - loss[10:-5].mean() / base[10:-5].mean(), rel=1e-12)


def test_panel_bootstrap_resamples_the_same_dates_for_every_ticker() -> None:
    loss, base = _losses(1500, 0.05, np.random.default_rng(3))
    single = bootstrap_skill(loss, base, reps=300, seed=4)
    # Perfectly correlated tickers carry no more information than one: with the same date blocks for
    # all of them the pooled interval is the single ticker's (independent blocks per ticker would shrink it
    # by about sqrt(5)).
    copies = [f"T{i}" for i in range(5)]
    same = panel_bootstrap_skill(
        pd.DataFrame(dict.fromkeys(copies, loss)), pd.DataFrame(dict.fromkeys(copies, base)), reps=300, seed=4
    )
    assert (same["block"], same["n_dates"], same["n_cells"]) == (single["block"], 1500, 7500)
    for key in ("skill", "lo", "hi"):
        assert same[key] == pytest.approx(single[key], rel=1e-9)


def test_panel_bootstrap_pools_available_cells() -> None:
    rng = np.random.default_rng(5)
    pairs = [_losses(400, s, rng) for s in (0.0, 0.1, 0.2)]
    loss = pd.DataFrame({f"T{i}": p[0] for i, p in enumerate(pairs)})
    base = pd.DataFrame({f"T{i}": p[1] for i, p in enumerate(pairs)})
    loss.iloc[:100, 0] = np.nan  # a late starter
    loss.iloc[:20, 1:] = np.nan  # and 20 dates with no ticker at all
    out = panel_bootstrap_skill(loss, base, reps=100)
    ok = loss.notna().to_numpy()
    assert (out["n_dates"], out["n_cells"]) == (380, ok.sum())
    expected = 1 - loss.to_numpy()[ok].sum() / base.to_numpy()[ok].sum()
    assert out["skill"] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="same dates and tickers"):
        panel_bootstrap_skill(loss, base.iloc[:, :2])


# -- Diebold–Mariano ------------------------------------------------------------------------------------
def test_dm_is_newey_west_at_the_reported_lag() -> None:
    loss, base = _losses(800, 0.05, np.random.default_rng(6))
    out = diebold_mariano(loss, base, horizon=3)
    d = loss - base
    fit = OLS(d, np.ones(len(d))).fit(
        cov_type="HAC", cov_kwds={"maxlags": out["lag"], "use_correction": False}
    )
    assert out["statistic"] == pytest.approx(d.mean() / fit.bse[0], rel=1e-10)
    assert out["p_value"] == pytest.approx(sps.t.cdf(out["statistic"], df=799), rel=1e-10)
    assert out["lag"] == max(2, block_length(d, "circular") - 1) and out["n"] == 800


def test_dm_lag_is_at_least_the_overlap_and_identical_losses_are_neutral() -> None:
    rng = np.random.default_rng(7)
    iid = rng.exponential(size=500)
    assert diebold_mariano(iid, rng.exponential(size=500), horizon=10)["lag"] == 9
    tie = diebold_mariano(iid, iid.copy(), horizon=5)
    assert (tie["statistic"], tie["p_value"], tie["mean_diff"]) == (0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="at least 16 pairs"):
        diebold_mariano(iid[:15], iid[:15] + 1, horizon=7)


def test_dm_rejects_a_better_forecaster_and_is_uniform_for_equal_ones() -> None:
    rng = np.random.default_rng(8)
    assert diebold_mariano(*_losses(1500, 0.1, rng), horizon=5)["p_value"] < 0.01
    assert diebold_mariano(*reversed(_losses(1500, 0.1, rng)), horizon=5)["p_value"] > 0.99
    p = np.array([diebold_mariano(*_losses(600, 0.0, rng), horizon=5)["p_value"] for _ in range(200)])
    assert 0.04 <= (p < 0.10).mean() <= 0.17
    assert sps.kstest(p, "uniform").pvalue > 0.01


def test_pooled_dm_tests_the_per_date_mean_differential() -> None:
    rng = np.random.default_rng(9)
    pairs = [_losses(500, 0.05, rng) for _ in range(4)]
    loss = pd.DataFrame({f"T{i}": p[0] for i, p in enumerate(pairs)})
    base = pd.DataFrame({f"T{i}": p[1] for i, p in enumerate(pairs)})
    base.iloc[:50, 0] = np.nan
    pooled = pooled_diebold_mariano(loss, base, horizon=3)
    d = (loss - base).mean(axis=1, skipna=True).to_numpy()  # the tickers present each date
    single = diebold_mariano(d, np.zeros_like(d), horizon=3)
    assert {k: pooled[k] for k in single} == pytest.approx(single)
    assert pooled["n_cells"] == 1950 and pooled["p_value"] < 0.05
