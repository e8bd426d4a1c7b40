"""Inference on loss differences of daily walk-forward forecasts, for one series and for a panel of tickers.

The losses of overlapping h-day forecasts are dependent over h - 1 days by construction, and over much
longer through volatility clustering (a turbulent month inflates both forecasters' losses for weeks).
So the dependence length is estimated, not assumed:

- `block_length`: the Politis–White (2004, Patton–Politis–White 2009 correction) optimal block length of
  the loss differential, via `arch.bootstrap.optimal_block_length`.
- `bootstrap_skill` / `panel_bootstrap_skill`: stationary bootstrap (Politis–Romano 1994) percentile
  intervals with that expected block length. Loss pairs are resampled together; in a panel whole dates
  are resampled, the SAME time blocks for every ticker, so the cross-sectional correlation (a market
  shock hits all tickers on the same day) is kept and the pooled interval is not falsely narrow.
- `diebold_mariano` / `pooled_diebold_mariano`: one-sided DM tests (H1: the candidate's loss is lower)
  with a Newey–West (Bartlett) long-run variance; see `hac_lag` for the bandwidth.

NaN marks a date where a ticker has no forecast or no outcome: pairs with either side missing are
dropped (one series), and panel cells are dropped while their date keeps its other tickers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.90
REPS = 1000
MIN_OBS = 8  # Politis–White's autocorrelation scan needs a few lags beyond its 5-lag insignificance run


def block_length(d: np.ndarray, kind: Literal["stationary", "circular"] = "stationary") -> int:
    """Politis–White optimal block length of a series (NaN dropped), rounded up, at least 1."""
    from arch.bootstrap import optimal_block_length  # arch's import is slow; only its callers pay

    x = np.asarray(d, np.float64)
    x = x[np.isfinite(x)]
    if len(x) < MIN_OBS:
        raise ValueError(f"a block length needs at least {MIN_OBS} observations, got {len(x)}")
    if np.ptp(x) == 0.0:  # no variation, no dependence to preserve (and PW divides by the variance)
        return 1
    b = float(optimal_block_length(x)[kind].iloc[0])
    return max(1, math.ceil(b))


def _skill(loss: np.ndarray, base: np.ndarray) -> float:
    return float(1.0 - loss.sum() / base.sum())


def _interval(
    stat: Callable[..., float], data: tuple[np.ndarray, ...], block: int, reps: int, seed: int, level: float
) -> tuple[float, float]:
    """Percentile interval of stat(*rows resampled by a stationary bootstrap, rows kept together)."""
    from arch.bootstrap import StationaryBootstrap

    bs = StationaryBootstrap(block, *data, seed=np.random.default_rng(seed))
    draws = np.array([stat(*pos) for pos, _ in bs.bootstrap(reps)])
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _pairs(loss: np.ndarray, base_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    loss, base = np.asarray(loss, np.float64), np.asarray(base_loss, np.float64)
    if loss.shape != base.shape:
        raise ValueError(f"loss {loss.shape} and base loss {base.shape} differ in shape")
    ok = np.isfinite(loss) & np.isfinite(base)
    return loss[ok], base[ok]


def bootstrap_skill(
    loss: np.ndarray, base_loss: np.ndarray, *, reps: int = REPS, seed: int = 0, level: float = LEVEL
) -> dict[str, Any]:
    """Skill 1 - mean(loss) / mean(base) of one series, with a stationary-bootstrap `level` interval whose
    expected block is the Politis–White length of the loss differential."""
    loss, base = _pairs(loss, base_loss)
    block = block_length(loss - base)
    lo, hi = _interval(_skill, (loss, base), block, reps, seed, level)
    return {"skill": _skill(loss, base), "lo": lo, "hi": hi, "level": level, "block": block, "n": len(loss)}


def _panel_cells(
    loss_by_ticker: pd.DataFrame, base_by_ticker: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dates, tickers) loss and base with missing cells zeroed, their mask; dates with no cell dropped."""
    if not (
        loss_by_ticker.index.equals(base_by_ticker.index)
        and loss_by_ticker.columns.equals(base_by_ticker.columns)
    ):
        raise ValueError("loss and base loss need the same dates and tickers")
    loss, base = loss_by_ticker.to_numpy(np.float64), base_by_ticker.to_numpy(np.float64)
    ok = np.isfinite(loss) & np.isfinite(base)
    rows = ok.any(axis=1)
    return np.where(ok, loss, 0.0)[rows], np.where(ok, base, 0.0)[rows], ok[rows]


def _mean_differential(loss: np.ndarray, base: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(dates,): each date's loss difference averaged over the tickers that have one."""
    return (loss - base).sum(axis=1) / ok.sum(axis=1)


def panel_bootstrap_skill(
    loss_by_ticker: pd.DataFrame,
    base_by_ticker: pd.DataFrame,
    *,
    reps: int = REPS,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Pooled skill 1 - sum(loss) / sum(base) over every (date, ticker) cell both have, with a stationary
    bootstrap of whole dates (the same blocks for every ticker); the block is the Politis–White length of
    the cross-sectional mean differential."""
    loss, base, ok = _panel_cells(loss_by_ticker, base_by_ticker)
    block = block_length(_mean_differential(loss, base, ok))
    lo, hi = _interval(_skill, (loss, base), block, reps, seed, level)
    return {
        "skill": _skill(loss, base),
        "lo": lo,
        "hi": hi,
        "level": level,
        "block": block,
        "n_dates": len(loss),
        "n_cells": int(ok.sum()),
    }


def hac_lag(d: np.ndarray, horizon: int) -> int:
    """The Newey–West truncation lag: max(h - 1, b - 1), b the Politis–White circular block length.

    h - 1 is the least: overlapping h-day targets make the differential MA(h - 1) even for optimal
    forecasts. Volatility clustering carries the dependence further, and a fixed h - 1 then understates
    the variance (over-rejects). The moving/circular block bootstrap variance of a mean with block b is
    the Bartlett-kernel estimator with weights 1 - j / b (Kuensch 1989), which is Newey–West at lag b - 1,
    and PW's circular length is the b that minimises that estimator's MSE: a data-driven NW bandwidth.
    """
    return max(horizon - 1, block_length(d, "circular") - 1)


def _newey_west_variance(d: np.ndarray, lag: int) -> float:
    """The long-run variance of d with Bartlett weights 1 - j / (lag + 1) (never negative)."""
    c = d - d.mean()
    n = len(c)
    lrv = c @ c / n
    for j in range(1, min(lag, n - 1) + 1):
        lrv += 2 * (1 - j / (lag + 1)) * (c[j:] @ c[:-j]) / n
    return float(lrv)


def _dm(d: np.ndarray, horizon: int) -> dict[str, Any]:
    n = len(d)
    if n < max(2 * horizon + 2, MIN_OBS):
        raise ValueError(
            f"Diebold–Mariano at horizon {horizon} needs at least {2 * horizon + 2} pairs, got {n}"
        )
    mean = float(d.mean())
    if np.ptp(d) == 0.0:  # a constant differential has no variance: its sign is the whole answer
        p = 0.5 if mean == 0 else float(mean > 0)
        return {
            "statistic": 0.0 if mean == 0 else None,
            "p_value": p,
            "n": n,
            "lag": horizon - 1,
            "mean_diff": mean,
        }
    lag = hac_lag(d, horizon)
    statistic = mean / math.sqrt(_newey_west_variance(d, lag) / n)
    # Student's t(n - 1) rather than the normal: a little conservative in short samples, identical in long.
    p = float(stats.t.cdf(statistic, df=n - 1))
    return {"statistic": float(statistic), "p_value": p, "n": n, "lag": lag, "mean_diff": mean}


def diebold_mariano(loss: np.ndarray, base_loss: np.ndarray, horizon: int) -> dict[str, Any]:
    """One-sided DM test of H1 "`loss` is lower on average than `base_loss`" on the pairs both have.

    A small p-value is evidence that the candidate is better; identical losses give statistic 0, p 0.5.
    """
    loss, base = _pairs(loss, base_loss)
    return _dm(loss - base, horizon)


def pooled_diebold_mariano(
    loss_by_ticker: pd.DataFrame, base_by_ticker: pd.DataFrame, horizon: int
) -> dict[str, Any]:
    """The DM test on the cross-sectional mean loss differential per date (tickers present that date).

    Averaging across tickers first keeps the cross-sectional correlation inside each date's value, so
    the time-series HAC variance accounts for it (treating 21 correlated tickers as 21 series would not).
    """
    loss, base, ok = _panel_cells(loss_by_ticker, base_by_ticker)
    return {**_dm(_mean_differential(loss, base, ok), horizon), "n_cells": int(ok.sum())}
