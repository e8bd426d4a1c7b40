"""The daily features stored at ingest, computed from data up to and including day t only (pure: frames
in, frames out): the technical indicators (shown in the snapshot, optional model inputs) and the
volatility model's inputs (ml.features.volatility), whose last `window` rows are the online model window.

Every technical feature is scale-free (ratios, returns, bounded oscillators). Raw indicator functions
match the `ta` package's definitions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.errors import InsufficientHistory
from ml.features.volatility import SIGMA_COLUMN, VOL_INPUTS, WARMUP_VOL, panel_inputs

TECHNICAL_FEATURES = [
    "rsi_14",
    "macd_rel",
    "macd_signal_rel",
    "macd_hist_rel",
    "sma_20_rel",
    "sma_50_rel",
    "ema_12_rel",
    "ema_26_rel",
    "log_ret_1d",
    "log_ret_5d",
    "vol_20",
]
EXTRA_FEATURES = ["volume_z"]
# What the online model window carries, by name: the model's inputs and sigma-hat (which scales its answer).
WINDOW_COLUMNS = [*VOL_INPUTS, SIGMA_COLUMN]
FEATURE_COLUMNS = ["close", *TECHNICAL_FEATURES, *EXTRA_FEATURES, SIGMA_COLUMN, *VOL_INPUTS]
# Observations the longest technical look-back (SMA 50) needs: the first WARMUP - 1 rows carry NaNs. A
# stored row has every technical feature; the volatility inputs fill later (ml.features.volatility).
WARMUP = 50


def sma(close: pd.Series, n: int) -> pd.Series:
    return close.rolling(n, min_periods=n).mean()


def ema(close: pd.Series, n: int) -> pd.Series:
    return close.ewm(span=n, min_periods=n, adjust=False).mean()


def rsi(close: pd.Series, n: int = 14) -> pd.Series:
    """Wilder's RSI: smoothed gains over smoothed losses, alpha = 1/n (the first day counts as no move).

    Matches `ta` except on a flat stretch (no gains and no losses), where `ta` says 100 and this says 50.
    """
    diff = close.diff()
    gain = diff.where(diff > 0, 0.0)
    loss = (-diff).where(diff < 0, 0.0)
    avg_gain = gain.ewm(alpha=1 / n, min_periods=n, adjust=False).mean()
    avg_loss = loss.ewm(alpha=1 / n, min_periods=n, adjust=False).mean()
    rs = avg_gain / avg_loss
    out = 100.0 - 100.0 / (1.0 + rs)
    # No losses: 100 if there were gains; a flat stretch (neither) is neutral, 50, not "overbought".
    return out.where(avg_loss != 0, np.where(avg_gain > 0, 100.0, 50.0)).where(avg_gain.notna())


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.DataFrame:
    line = ema(close, fast) - ema(close, slow)
    sig = ema(line, signal)
    return pd.DataFrame({"macd": line, "signal": sig, "hist": line - sig}, index=close.index)


def technical_features(history: pd.DataFrame) -> pd.DataFrame:
    """Daily OHLCV (indexed by date) -> close, TECHNICAL_FEATURES and EXTRA_FEATURES, NaN during warm-up."""
    close = history["close"].astype("float64")
    log_close = np.log(close)
    m = macd(close)
    out = pd.DataFrame(index=history.index)
    out["close"] = close
    out["rsi_14"] = rsi(close, 14)
    out["macd_rel"] = m["macd"] / close
    out["macd_signal_rel"] = m["signal"] / close
    out["macd_hist_rel"] = m["hist"] / close
    out["sma_20_rel"] = sma(close, 20) / close - 1.0
    out["sma_50_rel"] = sma(close, 50) / close - 1.0
    out["ema_12_rel"] = ema(close, 12) / close - 1.0
    out["ema_26_rel"] = ema(close, 26) / close - 1.0
    out["log_ret_1d"] = log_close.diff(1)
    out["log_ret_5d"] = log_close.diff(5)
    out["vol_20"] = out["log_ret_1d"].rolling(20, min_periods=20).std() * np.sqrt(252.0)
    volume = history["volume"].astype("float64") if "volume" in history else close * np.nan
    mean, std = volume.rolling(20, min_periods=20).mean(), volume.rolling(20, min_periods=20).std()
    out["volume_z"] = ((volume - mean) / std).where(std > 0)
    return out[["close", *TECHNICAL_FEATURES, *EXTRA_FEATURES]]


def compute_features(history: pd.DataFrame, market_close: pd.Series | None = None) -> pd.DataFrame:
    """Daily OHLCV -> FEATURE_COLUMNS (indexed by date), NaN during warm-up.

    `market_close`: ^GSPC's closes, for the market inputs; None for ^GSPC itself (its own market).
    """
    technical = technical_features(history)
    close = technical["close"]
    vol = panel_inputs(close, close if market_close is None else market_close.astype("float64"))
    return technical.join(vol.drop(columns="close"))[FEATURE_COLUMNS]


def model_rows(features: pd.DataFrame) -> pd.DataFrame:
    """The rows stored: every technical feature present (the volatility inputs may still be warming up)."""
    return features.dropna(subset=TECHNICAL_FEATURES)


def build_window(features: pd.DataFrame, window: int) -> np.ndarray:
    """The online model window: the last `window` rows of WINDOW_COLUMNS, ending at the last row of
    `features`, every value finite; shape (window, len(WINDOW_COLUMNS))."""
    values = features[WINDOW_COLUMNS].to_numpy(dtype=np.float64)
    complete = np.isfinite(values).all(axis=1)
    # Complete rows counted back from the last one: the window must end on the as-of day.
    trailing = len(complete) if complete.all() else int(np.argmin(complete[::-1]))
    if trailing < window:
        raise InsufficientHistory(
            f"need at least {window} days of complete features ({window + WARMUP_VOL} trading days of "
            f"history), have {trailing}"
        )
    return values[-window:]


# The technical indicators the global model may read as extra inputs (the benchmark's ablation), without
# the exact linear combinations of others (macd = ema_12 - ema_26; signal = macd - hist, all over close).
TECHNICAL_INPUTS = ("rsi_14", "macd_hist_rel", "sma_20_rel", "sma_50_rel", "ema_12_rel", "ema_26_rel")


def technical_inputs(close: pd.Series) -> pd.DataFrame:
    """TECHNICAL_INPUTS of a close series; RSI centred on 0 in [-1, 1] like the other bounded inputs."""
    frame = technical_features(pd.DataFrame({"close": close}))
    frame["rsi_14"] = (frame["rsi_14"] - 50.0) / 50.0
    return frame[list(TECHNICAL_INPUTS)]
