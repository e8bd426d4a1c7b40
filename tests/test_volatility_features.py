"""Scale-free volatility inputs (ml/features/volatility.py) on series with known answers (pure, fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.features.volatility import (
    MARKET_INPUTS,
    SIGMA_COLUMN,
    VOL_INPUTS,
    WARMUP_VOL,
    beta_features,
    ewma_sigma,
    own_features,
    panel_inputs,
    sigma_estimate,
)


def _close(log_returns: np.ndarray, start: float = 50.0) -> pd.Series:
    """A close series whose log returns from row 1 on are log_returns[1:]."""
    dates = pd.bdate_range("2001-01-01", periods=len(log_returns))
    return pd.Series(start * np.exp(np.cumsum(log_returns)), index=dates)


def _market_and_stock(n: int = 600, seed: int = 0) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    r_mkt = rng.normal(0.0, 0.01, n) * np.exp(np.sin(np.arange(n) / 40.0))  # volatility clusters
    r = 1.2 * r_mkt + rng.normal(0.0, 0.015, n)
    return _close(r, 80.0), _close(r_mkt, 1200.0)


def test_ewma_follows_the_riskmetrics_recursion_by_hand() -> None:
    rng = np.random.default_rng(3)
    r = pd.Series(np.r_[np.nan, np.nan, np.nan, rng.normal(0.0, 0.02, 97)])
    lam = 0.9
    expected = np.full(100, np.nan)
    var = np.mean(r.to_numpy()[3:23] ** 2)
    expected[22] = np.sqrt(var)
    for t in range(23, 100):
        var = lam * var + (1 - lam) * r.iloc[t] ** 2
        expected[t] = np.sqrt(var)
    out = ewma_sigma(r, lam=lam)
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-12)
    assert out.iloc[:22].isna().all() and out.name == SIGMA_COLUMN
    np.testing.assert_allclose(sigma_estimate(r, "ewma", lam=lam).to_numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown sigma method"):
        sigma_estimate(r, "garch")


def test_returns_are_scaled_by_yesterdays_sigma_and_clipped() -> None:
    rng = np.random.default_rng(4)
    r = rng.normal(0.0, 0.01, 80)
    r[60] = -0.5  # a crash far beyond ten sigma
    close = _close(r)
    feats = own_features(close)
    sigma = ewma_sigma(np.log(close).diff())
    assert feats["r_sig"].iloc[40] == pytest.approx(r[40] / sigma.iloc[39], rel=1e-9)
    assert feats["lrv_1"].iloc[40] == pytest.approx(np.log(abs(r[40]) / sigma.iloc[40]), rel=1e-9)
    assert (feats.loc[close.index[60], ["r_sig", "abs_r_sig"]] == [-10.0, 10.0]).all()
    assert feats["r_sig"].iloc[:21].isna().all() and feats["r_sig"].iloc[21:].notna().all()


def test_inputs_are_causal() -> None:
    close, market = _market_and_stock()
    base = panel_inputs(close, market)
    t = 300
    bumped_close, bumped_market = close.copy(), market.copy()
    bumped_close.iloc[t + 1 :] *= np.exp(np.random.default_rng(9).normal(0.0, 0.2, len(close) - t - 1))
    bumped_market.iloc[t + 1 :] *= 3.0
    bumped = panel_inputs(bumped_close, bumped_market)
    pd.testing.assert_frame_equal(base.iloc[: t + 1], bumped.iloc[: t + 1])
    assert not np.allclose(base["lrv_5"].iloc[t + 1 : t + 10], bumped["lrv_5"].iloc[t + 1 : t + 10])


def test_inputs_do_not_depend_on_the_price_scale() -> None:
    close, market = _market_and_stock()
    base = panel_inputs(close, market)
    scaled = panel_inputs(37.0 * close, 37.0 * market)
    for col in (SIGMA_COLUMN, *VOL_INPUTS):
        np.testing.assert_allclose(scaled[col], base[col], rtol=1e-9, atol=1e-12, err_msg=col)


def test_doubled_returns_shift_only_log_sigma() -> None:
    close, _ = _market_and_stock()
    doubled = close.iloc[0] * (close / close.iloc[0]) ** 2  # every log return exactly twice as big
    a, b = own_features(close), own_features(doubled)
    for col in ("lrv_1", "lrv_5", "lrv_22", "lrv_66", "r_sig", "abs_r_sig", "zero_share_66"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-9, atol=1e-12, err_msg=col)
    shift = (b["log_sigma"] - a["log_sigma"]).dropna()
    assert len(shift) == len(close) - 20
    np.testing.assert_allclose(shift, np.log(2.0), atol=1e-12)


def test_drawdown_from_the_running_high() -> None:
    close = pd.Series([100.0] * 20 + [120.0, 90.0, 60.0, 150.0, 75.0])
    dd = own_features(close)["drawdown_252"]
    assert dd.iloc[:19].isna().all()  # defined from the 20th close on
    expected = [0.0, 0.0, np.log(0.75), np.log(0.5), 0.0, np.log(0.5)]
    np.testing.assert_allclose(dd.iloc[19:].to_numpy(), expected, atol=1e-12)
    # The high leaves the trailing 252-day window: row 251 still sees row 0's 200, row 252 does not.
    long = own_features(pd.Series([200.0] + [100.0] * 300))["drawdown_252"]
    assert long.iloc[251] == pytest.approx(np.log(0.5))
    assert long.iloc[252] == 0.0 and (long.dropna() <= 0.0).all()


def test_zero_share_counts_flat_days() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0.0, 0.01, 200)
    zero_days = set(range(10, 200, 3)) | {150, 151}
    r[list(zero_days)] = 0.0
    feats = own_features(_close(r))
    share = feats["zero_share_66"]
    assert share.iloc[:66].isna().all()
    for t in (66, 100, 151, 199):
        expected = sum(1 for s in range(t - 65, t + 1) if s in zero_days) / 66
        assert share.iloc[t] == pytest.approx(expected)
    # A flat day's one-day realised volatility hits the floor rather than -inf.
    assert feats["lrv_1"].iloc[151] == pytest.approx(np.log(0.02))
    assert np.isfinite(feats[["lrv_1", "lrv_5"]].iloc[30:]).all().all()


def test_rolling_beta_recovers_the_factor_loading() -> None:
    rng = np.random.default_rng(11)
    n = 2000
    r_mkt = pd.Series(rng.normal(0.0, 0.01, n))
    r = 1.5 * r_mkt + rng.normal(0.0, 0.002, n)
    out = beta_features(r, r_mkt)
    assert out.iloc[:125].isna().all().all() and out.iloc[125:].notna().all().all()
    assert (out["beta_126"].iloc[125:] - 1.5).abs().max() < 0.1
    true_corr = 0.015 / np.sqrt(0.015**2 + 0.002**2)
    assert (out["corr_126"].iloc[125:] - true_corr).abs().max() < 0.02


def test_the_market_against_itself() -> None:
    _, market = _market_and_stock()
    out = panel_inputs(market, market)
    for col in ("lrv_1", "lrv_5", "lrv_22", "lrv_66", "r_sig", "abs_r_sig", "log_sigma"):
        pd.testing.assert_series_equal(out[f"mkt_{col}"], out[col], check_names=False)
    np.testing.assert_allclose(out["beta_126"].iloc[WARMUP_VOL:], 1.0, atol=1e-9)
    np.testing.assert_allclose(out["corr_126"].iloc[WARMUP_VOL:], 1.0, atol=1e-9)


def test_warmup_and_columns() -> None:
    close, market = _market_and_stock()
    out = panel_inputs(close, market)
    assert list(out.columns) == [SIGMA_COLUMN, *VOL_INPUTS, "close"]
    assert set(MARKET_INPUTS) < set(VOL_INPUTS) and len(VOL_INPUTS) == len(set(VOL_INPUTS)) == 18
    assert out[list(VOL_INPUTS)].iloc[WARMUP_VOL:].notna().all().all()
    assert out[list(VOL_INPUTS)].iloc[WARMUP_VOL - 1].isna().any()
    pd.testing.assert_series_equal(out["close"], close, check_names=False)


def test_market_dates_missing_fill_one_day_only() -> None:
    close, market = _market_and_stock()
    gappy = market.drop(market.index[[200, 300, 301]])
    out, full = panel_inputs(close, gappy), panel_inputs(close, market)
    own_mkt = panel_inputs(gappy, gappy)
    d199, d200 = close.index[199], close.index[200]
    assert out.loc[d200, "mkt_lrv_22"] == own_mkt.loc[d199, "lrv_22"]  # yesterday's market state
    assert np.isfinite(out.loc[close.index[300], "mkt_lrv_22"])
    assert out.loc[close.index[301], [c for c in MARKET_INPUTS if c.startswith("mkt_")]].isna().all()
    pd.testing.assert_frame_equal(out.iloc[:200], full.iloc[:200])
