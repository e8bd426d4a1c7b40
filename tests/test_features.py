"""Daily features: the technical ones agree with the `ta` package and by hand; with the volatility inputs,
no look-ahead and scale-freedom; the online window holds the volatility inputs and sigma by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ta

from ml.data.bundled import BundledSource
from ml.errors import InsufficientHistory
from ml.features.technical import (
    FEATURE_COLUMNS,
    TECHNICAL_FEATURES,
    WARMUP,
    WINDOW_COLUMNS,
    build_window,
    compute_features,
    ema,
    macd,
    model_rows,
    rsi,
    sma,
)
from ml.features.volatility import SIGMA_COLUMN, VOL_INPUTS, WARMUP_VOL, panel_inputs
from tests.test_data_sources import as_source_frame, synthetic_ohlcv


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return BundledSource().fetch("AAPL")


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return as_source_frame(synthetic_ohlcv(400, seed=7))


def _assert_same(ours: pd.Series, theirs: pd.Series) -> None:
    pd.testing.assert_index_equal(ours.index[ours.isna()], theirs.index[theirs.isna()])
    np.testing.assert_allclose(ours.dropna().to_numpy(), theirs.dropna().to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["aapl", "synthetic"])
def test_indicators_match_ta(name: str, request: pytest.FixtureRequest) -> None:
    close = request.getfixturevalue(name)["close"]
    _assert_same(rsi(close, 14), ta.momentum.RSIIndicator(close, window=14).rsi())
    theirs = ta.trend.MACD(close, window_slow=26, window_fast=12, window_sign=9)
    ours = macd(close, 12, 26, 9)
    _assert_same(ours["macd"], theirs.macd())
    _assert_same(ours["signal"], theirs.macd_signal())
    _assert_same(ours["hist"], theirs.macd_diff())
    for n in (20, 50):
        _assert_same(sma(close, n), ta.trend.SMAIndicator(close, window=n).sma_indicator())
    for n in (12, 26):
        _assert_same(ema(close, n), ta.trend.EMAIndicator(close, window=n).ema_indicator())
    assert rsi(close).min() > 0 and rsi(close).max() < 100


def test_model_features_are_ta_indicators_relative_to_close(synthetic: pd.DataFrame) -> None:
    close = synthetic["close"]
    features = compute_features(synthetic)
    assert list(features.columns) == FEATURE_COLUMNS
    theirs = ta.trend.MACD(close, window_slow=26, window_fast=12, window_sign=9)
    expected = {
        "rsi_14": ta.momentum.RSIIndicator(close, window=14).rsi(),
        "macd_rel": theirs.macd() / close,
        "macd_signal_rel": theirs.macd_signal() / close,
        "macd_hist_rel": theirs.macd_diff() / close,
        "sma_20_rel": ta.trend.SMAIndicator(close, window=20).sma_indicator() / close - 1,
        "sma_50_rel": ta.trend.SMAIndicator(close, window=50).sma_indicator() / close - 1,
        "ema_12_rel": ta.trend.EMAIndicator(close, window=12).ema_indicator() / close - 1,
        "ema_26_rel": ta.trend.EMAIndicator(close, window=26).ema_indicator() / close - 1,
    }
    for column, series in expected.items():
        _assert_same(features[column], series)


def test_returns_volatility_and_volume_by_hand(synthetic: pd.DataFrame) -> None:
    features = compute_features(synthetic)
    close, volume = synthetic["close"].to_numpy(), synthetic["volume"].to_numpy()
    t = 250
    returns = np.diff(np.log(close[t - 20 : t + 1]))
    row = features.iloc[t]
    assert row["log_ret_1d"] == pytest.approx(np.log(close[t] / close[t - 1]), rel=1e-12)
    assert row["log_ret_5d"] == pytest.approx(np.log(close[t] / close[t - 5]), rel=1e-12)
    assert row["vol_20"] == pytest.approx(returns.std(ddof=1) * np.sqrt(252), rel=1e-9)
    recent = volume[t - 19 : t + 1]
    assert row["volume_z"] == pytest.approx((volume[t] - recent.mean()) / recent.std(ddof=1), rel=1e-9)
    assert row["close"] == close[t]


def test_warm_up_and_close_only_history(aapl: pd.DataFrame) -> None:
    features = compute_features(aapl)
    rows = model_rows(features)
    assert rows.index[0] == aapl.index[WARMUP - 1]  # SMA 50 is the longest look-back
    assert rows[TECHNICAL_FEATURES].notna().all().all() and len(rows) == len(aapl) - WARMUP + 1
    assert features["volume_z"].isna().all()  # bundled stocks have closes only


@pytest.mark.parametrize("cut", [0, 13, 48, 49, 50, 120, 398])
def test_no_look_ahead(synthetic: pd.DataFrame, cut: int) -> None:
    """Features at t are identical whether rows after t are absent, present, or anything at all."""
    full = compute_features(synthetic)
    truncated = compute_features(synthetic.iloc[: cut + 1])
    pd.testing.assert_frame_equal(truncated, full.iloc[: cut + 1], check_exact=True)
    scrambled = synthetic.copy()
    rng = np.random.default_rng(cut)
    scrambled.iloc[cut + 1 :] *= rng.uniform(0.2, 5.0, size=scrambled.iloc[cut + 1 :].shape)
    pd.testing.assert_frame_equal(
        compute_features(scrambled).iloc[: cut + 1], full.iloc[: cut + 1], check_exact=True
    )


def test_model_features_are_scale_free(synthetic: pd.DataFrame) -> None:
    scaled = synthetic.copy()
    scaled[["open", "high", "low", "close"]] *= 1234.5
    scaled["volume"] *= 7
    ours, theirs = compute_features(synthetic), compute_features(scaled)
    columns = [*TECHNICAL_FEATURES, "volume_z", *VOL_INPUTS]
    np.testing.assert_allclose(theirs[columns].to_numpy(), ours[columns].to_numpy(), rtol=1e-8, atol=1e-12)
    assert theirs["close"].iloc[-1] == pytest.approx(ours["close"].iloc[-1] * 1234.5)


def test_volatility_inputs_read_the_market(synthetic: pd.DataFrame) -> None:
    market = as_source_frame(synthetic_ohlcv(400, seed=8))["close"]
    features = compute_features(synthetic, market)
    assert list(features.columns) == FEATURE_COLUMNS
    expected = panel_inputs(synthetic["close"], market)
    pd.testing.assert_frame_equal(
        features[[SIGMA_COLUMN, *VOL_INPUTS]], expected[[SIGMA_COLUMN, *VOL_INPUTS]]
    )
    own = compute_features(synthetic)  # ^GSPC is its own market: beta and correlation 1
    assert own["corr_126"].notna().sum() == len(own) - WARMUP_VOL
    np.testing.assert_allclose(own["corr_126"].dropna(), 1.0)
    assert not features["mkt_r_sig"].equals(own["mkt_r_sig"])


def test_build_window(synthetic: pd.DataFrame) -> None:
    features = compute_features(synthetic)
    window = build_window(features, 60)
    assert window.shape == (60, len(WINDOW_COLUMNS)) and window.dtype == np.float64
    assert [*VOL_INPUTS, SIGMA_COLUMN] == WINDOW_COLUMNS
    np.testing.assert_array_equal(window, features[WINDOW_COLUMNS].to_numpy()[-60:])
    np.testing.assert_array_equal(
        build_window(features.iloc[:250], 60), features[WINDOW_COLUMNS].to_numpy()[190:250]
    )
    short = compute_features(synthetic.iloc[: WARMUP_VOL + 59])
    with pytest.raises(
        InsufficientHistory,
        match=rf"need at least 60 days .*\({WARMUP_VOL + 60} trading days of history\), have 59",
    ):
        build_window(short, 60)
    assert build_window(compute_features(synthetic.iloc[: WARMUP_VOL + 60]), 60).shape == (
        60,
        len(WINDOW_COLUMNS),
    )
