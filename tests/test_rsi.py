"""RSI on flat stretches: neutral (50), where `ta` says 100 (the agreement elsewhere is in test_features)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.features.technical import rsi, technical_features


def test_rsi_is_50_on_a_flat_series_and_100_on_a_pure_rise() -> None:
    flat = rsi(pd.Series(np.full(40, 25.0)))
    assert flat.isna().sum() == 13 and (flat.dropna() == 50.0).all()
    rising = rsi(pd.Series(np.arange(1.0, 41.0)))
    assert (rising.dropna() == 100.0).all()
    # Flat, then one up day: no losses but a gain, so 100 from that day on.
    mixed = rsi(pd.Series([10.0] * 20 + [11.0] * 20)).dropna()
    assert (mixed.iloc[:7] == 50.0).all() and (mixed.iloc[7:] == 100.0).all()


def test_flat_history_gives_neutral_model_features() -> None:
    days = pd.bdate_range("2020-01-02", periods=80)
    features = technical_features(pd.DataFrame({"close": 50.0, "volume": 1e6}, index=days)).dropna(
        subset=["rsi_14"]
    )
    assert (features["rsi_14"] == 50.0).all()
    assert (features["log_ret_1d"].dropna() == 0.0).all()
