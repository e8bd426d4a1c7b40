"""Volatility baselines on a simulated GARCH(1,1)-t panel with a market factor (pure, fast)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ml.evaluation.garch import cumulative_variance, fit_garch_t, next_day_variance
from ml.evaluation.quantile_loss import pinball
from ml.evaluation.vol_baselines import BASELINES, _ewma_variance, baseline_quantiles, forward_returns
from ml.features.volatility import ewma_sigma

LEVELS = np.array((0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95))
H = 5
DAYS = 3000
FIRST_ORIGIN = 1500
LATE_START = 1200  # T0's history starts here: too short to fit at the first origin, enough at the second


@dataclass(frozen=True)
class Sim:
    panel: dict[str, pd.Series]
    calendar: pd.DatetimeIndex
    true_sigma: np.ndarray  # (days, tickers): sigma of day t + 1 given returns through t
    decisions: pd.DatetimeIndex
    origins: pd.DatetimeIndex


def simulate(
    n_tickers: int = 5, seed: int = 0, alpha: float = 0.1, beta: float = 0.85, nu: float = 5.0
) -> Sim:
    """GARCH(1,1) per ticker on unit-variance t(nu) shocks that share a market factor (correlation 0.25)."""
    rng = np.random.default_rng(seed)

    def shocks(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_t(nu, size=shape) / np.sqrt(nu / (nu - 2))

    z = 0.5 * shocks((DAYS, 1)) + np.sqrt(0.75) * shocks((DAYS, n_tickers))
    long_run = (rng.uniform(0.15, 0.45, n_tickers) / np.sqrt(252)) ** 2
    var = np.empty((DAYS + 1, n_tickers))
    var[0] = long_run
    r = np.empty((DAYS, n_tickers))
    for t in range(DAYS):
        r[t] = np.sqrt(var[t]) * z[t]
        var[t + 1] = long_run * (1 - alpha - beta) + alpha * r[t] ** 2 + beta * var[t]
    r[:LATE_START, 0] = np.nan
    calendar = pd.bdate_range("2000-01-03", periods=DAYS)
    origins = calendar[FIRST_ORIGIN::252]
    return Sim(
        panel={f"T{i}": pd.Series(r[:, i], index=calendar) for i in range(n_tickers)},
        calendar=calendar,
        true_sigma=np.sqrt(var[1:]),
        decisions=calendar[FIRST_ORIGIN : DAYS - H],
        origins=origins,
    )


@pytest.fixture(scope="module")
def sim() -> Sim:
    return simulate()


@pytest.fixture(scope="module")
def forecasts(sim: Sim) -> dict[str, dict[str, np.ndarray]]:
    return baseline_quantiles(sim.panel, sim.decisions, sim.origins, H, LEVELS)


def _outcomes(sim: Sim, ticker: str) -> np.ndarray:
    return forward_returns(sim.panel[ticker].to_numpy(), H)[sim.calendar.get_indexer(sim.decisions)]


# -- building blocks ----------------------------------------------------------------------------------
def test_pinball_by_hand() -> None:
    q = np.array([[-1.0, 0.0, 1.0]])
    loss = pinball(np.array([0.5]), q, np.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(loss, [[0.1 * 1.5, 0.5 * 0.5, 0.1 * 0.5]])
    with pytest.raises(ValueError, match="levels"):
        pinball(np.array([0.5]), q, LEVELS)


def test_baselines_use_the_inputs_ewma_variance_and_refuse_gaps() -> None:
    r = np.r_[np.full(5, np.nan), np.random.default_rng(1).normal(0, 0.01, 60)]
    var = np.mean(r[5:25] ** 2)  # seed: the first 20 returns, defined on the 20th
    for t in range(25, 65):
        var = 0.94 * var + 0.06 * r[t] ** 2
    out = _ewma_variance(r, 0.94)
    assert np.isnan(out[:24]).all()
    np.testing.assert_allclose(out[-1], var, rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(out), ewma_sigma(pd.Series(r)).to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="gap"):
        _ewma_variance(np.r_[r[:40], np.nan, r[41:]], 0.94)


def test_forward_returns_sum_the_next_h_days() -> None:
    r = np.array([np.nan, 1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(
        forward_returns(r, 2), [[1.0, 3.0], [2.0, 6.0], [4.0, 12.0], [8.0, np.nan], [np.nan, np.nan]]
    )


@pytest.mark.parametrize("mean", ["Zero", "Constant"])
def test_garch_filter_reproduces_arch_in_the_window_and_its_forecast(mean: str, sim: Sim) -> None:
    r = sim.panel["T1"].to_numpy()[:1000]
    fit = fit_garch_t(r, mean=mean)
    v = next_day_variance(r, fit)
    from arch import arch_model

    res = arch_model(100 * r, mean=mean, vol="GARCH", p=1, q=1, dist="t").fit(disp="off", show_warning=False)
    # Day t's variance from the filter run through t - 1 is arch's conditional variance of day t.
    np.testing.assert_allclose(v[:-1], res.conditional_volatility[1:] ** 2 / 1e4, rtol=1e-6)
    arch_h = res.forecast(horizon=H, reindex=False).variance.to_numpy()[-1].cumsum() / 1e4
    np.testing.assert_allclose(cumulative_variance(v[-1:], fit, H)[0], arch_h, rtol=1e-6)


# -- the baselines --------------------------------------------------------------------------------------
def test_every_baseline_has_the_shape_and_ordered_levels(forecasts: dict, sim: Sim) -> None:
    assert list(forecasts) == list(BASELINES)
    for name, by_ticker in forecasts.items():
        assert list(by_ticker) == list(sim.panel)
        for ticker, q in by_ticker.items():
            assert q.shape == (len(sim.decisions), H, len(LEVELS)), (name, ticker)
            ok = np.isfinite(q).all(axis=(1, 2))
            assert ok[-1000:].all(), (name, ticker)  # T0 too, from its second origin on
            assert (np.diff(q[ok], axis=-1) > 0).all(), (name, ticker)


def test_zero_ewma_is_the_gaussian_band_on_the_ewma_scale(forecasts: dict, sim: Sim) -> None:
    sigma = ewma_sigma(sim.panel["T2"]).loc[sim.decisions].to_numpy()
    expected = sigma[:, None, None] * np.sqrt(np.arange(1, H + 1))[None, :, None] * stats.norm.ppf(LEVELS)
    np.testing.assert_allclose(forecasts["zero_ewma"]["T2"], expected, rtol=1e-12)
    assert (forecasts["zero_ewma"]["T2"][..., 4] == 0).all()


def test_a_late_starter_waits_for_enough_history(forecasts: dict, sim: Sim) -> None:
    first_year = sim.decisions < sim.origins[1]
    for name in ("ewma_fhs", "garch_t_fhs", "har_pooled"):
        q = forecasts[name]["T0"]
        assert np.isnan(q[first_year]).all() and np.isfinite(q[~first_year]).all(), name
    assert np.isfinite(forecasts["zero_ewma"]["T0"]).all()


def test_garch_t_fhs_beats_zero_ewma_and_covers_80_percent(forecasts: dict, sim: Sim) -> None:
    losses: dict[str, list[float]] = {name: [] for name in forecasts}
    inside = []
    for ticker in sim.panel:
        y = _outcomes(sim, ticker)
        ok = np.isfinite(forecasts["garch_t_fhs"][ticker]).all(axis=(1, 2))
        for name, by_ticker in forecasts.items():
            losses[name].append(pinball(y[ok], by_ticker[ticker][ok], LEVELS).mean())
        q = forecasts["garch_t_fhs"][ticker][ok]
        inside.append((y[ok] >= q[..., 1]) & (y[ok] <= q[..., 7]))
    mean = {name: float(np.mean(v)) for name, v in losses.items()}
    assert mean["garch_t_fhs"] < mean["zero_ewma"] * 0.997
    assert mean["garch_t_fhs"] == min(mean.values())  # the true model family wins on its own data
    assert 0.75 <= np.concatenate(inside).mean() <= 0.85


def test_har_sigma_tracks_the_true_sigma(forecasts: dict, sim: Sim) -> None:
    rows = sim.calendar.get_indexer(sim.decisions)
    for i, ticker in enumerate(sim.panel):
        q = forecasts["har_pooled"][ticker][:, 0]  # one day ahead
        ok = np.isfinite(q).all(axis=1)
        width = q[ok, -1] - q[ok, 0]  # sigma x a quantile spread that is constant within a year
        corr = np.corrcoef(np.log(width), np.log(sim.true_sigma[rows[ok], i]))[0, 1]
        assert corr > 0.9, (ticker, corr)


def test_forecasts_never_see_returns_after_the_decision_day(forecasts: dict, sim: Sim) -> None:
    t0 = sim.origins[2]  # an origin: its fit and its first decision must not peek past it
    rng = np.random.default_rng(7)
    shocked = {t: s.where(s.index <= t0, s * rng.uniform(0.2, 5.0, len(s))) for t, s in sim.panel.items()}
    again = baseline_quantiles(shocked, sim.decisions, sim.origins, H, LEVELS)
    seen = sim.decisions <= t0
    for name, by_ticker in forecasts.items():
        for ticker, q in by_ticker.items():
            np.testing.assert_array_equal(again[name][ticker][seen], q[seen], err_msg=f"{name} {ticker}")
            assert not np.allclose(again[name][ticker][~seen], q[~seen]), (name, ticker)


def test_fhs_quantiles_are_purged_before_the_origin(forecasts: dict, sim: Sim) -> None:
    # A shock on the origin day moves that day's sigma but not the standardised quantiles fitted at the
    # origin: their targets all end on the day before it.
    origin = sim.origins[1]
    shocked = dict(sim.panel)
    shocked["T3"] = sim.panel["T3"].where(sim.panel["T3"].index != origin, 0.2)
    again = baseline_quantiles(shocked, sim.decisions, sim.origins, H, LEVELS, names=("ewma_fhs",))
    year = (sim.decisions >= origin) & (sim.decisions < sim.origins[2])
    sigma_before = ewma_sigma(sim.panel["T3"]).loc[sim.decisions[year]].to_numpy()
    sigma_after = ewma_sigma(shocked["T3"]).loc[sim.decisions[year]].to_numpy()
    before = forecasts["ewma_fhs"]["T3"][year] / sigma_before[:, None, None]
    after = again["ewma_fhs"]["T3"][year] / sigma_after[:, None, None]
    assert not np.allclose(sigma_before, sigma_after)
    np.testing.assert_allclose(after, before, rtol=1e-10)


def test_bad_schedules_are_refused(sim: Sim) -> None:
    with pytest.raises(ValueError, match="before the first origin"):
        baseline_quantiles(sim.panel, sim.calendar[100:200], sim.origins, H, LEVELS, names=("zero_ewma",))
    with pytest.raises(ValueError, match="not on the panel's calendar"):
        baseline_quantiles(sim.panel, pd.DatetimeIndex(["2099-01-01"]), sim.origins, H, LEVELS)
    with pytest.raises(ValueError, match="unknown baselines"):
        baseline_quantiles(sim.panel, sim.decisions, sim.origins, H, LEVELS, names=("lstm",))
