"""Causal, scale-free inputs of the global volatility-scaled forecaster (issue 18).

Every input is a ratio or a log-ratio of the series to itself, so one model can be trained on a panel of
stocks whose prices and volatilities differ by orders of magnitude: realised volatility is measured
relative to the EWMA sigma-hat, returns in units of yesterday's sigma-hat, and price only through the
drawdown from its own high. ^GSPC's inputs (``mkt_*``) and the rolling beta/correlation to it carry the
market state into every series. A value at date t depends on closes up to and including t only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import signal

SIGMA_COLUMN = "sigma"
TRADING_DAYS = 252
EWMA_SEED = 20  # returns averaged to seed the EWMA variance (RiskMetrics' recursion needs a start)
LRV_WINDOWS = (1, 5, 22, 66)  # day, week, month, quarter
LRV_FLOOR = 0.02  # ratio floor: a zero-return day would otherwise give log(0) = -inf
RETURN_CLIP = 10.0  # a 10-sigma day is news already; clipping keeps rare crashes from dominating training
DRAWDOWN_WINDOW = 252
# A partial-window high is still the highest close seen so far, so the drawdown is meaningful long before
# a full year exists; 20 closes (one month) matches sigma-hat's seed rather than delaying every input a year.
DRAWDOWN_MIN_PERIODS = 20
ZERO_WINDOW = 66
BETA_WINDOW = 126

OWN_INPUTS = (
    "log_sigma",
    *(f"lrv_{k}" for k in LRV_WINDOWS),
    "r_sig",
    "abs_r_sig",
    f"drawdown_{DRAWDOWN_WINDOW}",
    f"zero_share_{ZERO_WINDOW}",
)
_MARKET_SOURCE = (*(f"lrv_{k}" for k in LRV_WINDOWS), "r_sig", "abs_r_sig", "log_sigma")
BETA_INPUTS = (f"beta_{BETA_WINDOW}", f"corr_{BETA_WINDOW}")
MARKET_INPUTS = (*(f"mkt_{c}" for c in _MARKET_SOURCE), *BETA_INPUTS)
VOL_INPUTS = (*OWN_INPUTS, *MARKET_INPUTS)
# Row 0 has no return, so a k-return window first fills at row k; r_sig divides by sigma-hat at t-1, which
# first exists at row EWMA_SEED. From row WARMUP_VOL on every input is defined (given no missing closes).
WARMUP_VOL = max(BETA_WINDOW, max(LRV_WINDOWS), ZERO_WINDOW, EWMA_SEED + 1)


def ewma_sigma(log_returns: pd.Series, lam: float = 0.94) -> pd.Series:
    """RiskMetrics daily sigma at t from returns up to and including t.

    The variance at the EWMA_SEED-th valid return is the mean squared return so far; afterwards
    var_t = lam * var_{t-1} + (1 - lam) * r_t^2. Dates before the seed and dates whose return is missing
    are NaN (the recursion runs over the valid returns only).
    """
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam must lie in (0, 1), got {lam}")
    valid = log_returns.dropna()
    r2 = valid.to_numpy(dtype=float) ** 2
    var = np.full(len(r2), np.nan)
    if len(r2) >= EWMA_SEED:
        seed = r2[:EWMA_SEED].mean()
        var[EWMA_SEED - 1] = seed
        # The recursion as a first-order IIR filter (scipy runs it in C; a Python loop costs ~10 ms/ticker).
        var[EWMA_SEED:], _ = signal.lfilter([1.0 - lam], [1.0, -lam], r2[EWMA_SEED:], zi=[lam * seed])
    sigma = pd.Series(np.sqrt(var), index=valid.index, name=SIGMA_COLUMN)
    return sigma.reindex(log_returns.index)


# Name -> estimator of a causal daily sigma from log returns; new methods register here.
SIGMA_METHODS: dict[str, Callable[..., pd.Series]] = {"ewma": ewma_sigma}


def sigma_estimate(log_returns: pd.Series, method: str = "ewma", **params: float) -> pd.Series:
    """Causal daily sigma-hat by the named method (see SIGMA_METHODS)."""
    try:
        estimator = SIGMA_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown sigma method {method!r}; known: {sorted(SIGMA_METHODS)}") from None
    return estimator(log_returns, **params).rename(SIGMA_COLUMN)


def own_features(close: pd.Series, sigma_method: str = "ewma") -> pd.DataFrame:
    """The series' own inputs plus ``sigma`` (daily sigma-hat, kept to scale the target, not an input)."""
    log_close = np.log(close.astype(float))
    r = log_close.diff()
    sigma = sigma_estimate(r, sigma_method)
    out = pd.DataFrame(index=close.index)
    out[SIGMA_COLUMN] = sigma
    # A flat start (no move in the seed days) has sigma 0: undefined, not -inf.
    out["log_sigma"] = np.log((sigma * np.sqrt(TRADING_DAYS)).where(sigma > 0))
    r2 = r**2
    for k in LRV_WINDOWS:
        realised = np.sqrt(r2.rolling(k, min_periods=k).mean())
        out[f"lrv_{k}"] = np.log((realised / sigma).clip(lower=LRV_FLOOR))
    # Yesterday's sigma-hat: today's already contains r_t, which would shrink every surprise.
    r_sig = (r / sigma.shift(1)).clip(-RETURN_CLIP, RETURN_CLIP)
    out["r_sig"] = r_sig
    out["abs_r_sig"] = r_sig.abs()
    high = log_close.rolling(DRAWDOWN_WINDOW, min_periods=DRAWDOWN_MIN_PERIODS).max()
    out[f"drawdown_{DRAWDOWN_WINDOW}"] = log_close - high
    zero = r.eq(0.0).astype(float).where(r.notna())
    out[f"zero_share_{ZERO_WINDOW}"] = zero.rolling(ZERO_WINDOW, min_periods=ZERO_WINDOW).mean()
    return out


def market_features(own_market: pd.DataFrame) -> pd.DataFrame:
    """^GSPC's own_features reduced to the market-state inputs, prefixed ``mkt_``."""
    return own_market[list(_MARKET_SOURCE)].add_prefix("mkt_")


def beta_features(r: pd.Series, r_mkt: pd.Series, window: int = BETA_WINDOW) -> pd.DataFrame:
    """Rolling (trailing, full-window) beta and correlation of r to r_mkt, both on r's index."""
    r_mkt = r_mkt.reindex(r.index)
    rolling = r.rolling(window, min_periods=window)
    beta = rolling.cov(r_mkt) / r_mkt.rolling(window, min_periods=window).var()
    out = pd.DataFrame({f"beta_{window}": beta, f"corr_{window}": rolling.corr(r_mkt)}, index=r.index)
    # A flat window has no beta: inf from a zero variance becomes NaN rather than a huge input.
    return out.replace([np.inf, -np.inf], np.nan)


def _align_past(frame: pd.DataFrame | pd.Series, index: pd.Index) -> pd.DataFrame | pd.Series:
    """frame on index, a date missing from frame taking the previous date's value (one day at most)."""
    return frame.reindex(frame.index.union(index)).ffill(limit=1).reindex(index)


def panel_inputs(close: pd.Series, market_close: pd.Series, sigma_method: str = "ewma") -> pd.DataFrame:
    """All inputs of one series on close's index, plus ``sigma`` and ``close``.

    The market is aligned by date; a date the market lacks (calendar mismatch) takes the market's previous
    value, at most one day, so a gap never silently carries stale market state forward.
    """
    own = own_features(close, sigma_method)
    mkt = market_features(own_features(market_close, sigma_method))
    mkt = _align_past(mkt, close.index)
    # The market return over the same interval as the stock's return, so beta compares like with like.
    r_mkt = np.log(_align_past(market_close.astype(float), close.index)).diff()
    r = np.log(close.astype(float)).diff()
    out = pd.concat([own, mkt, beta_features(r, r_mkt)], axis=1)
    out["close"] = close
    return out[[SIGMA_COLUMN, *VOL_INPUTS, "close"]]
