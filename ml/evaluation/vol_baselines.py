"""Volatility baselines: quantiles of h-day log returns from EWMA, GARCH(1,1)-t and a pooled HAR model.

Inputs: a panel `{ticker: Series of daily log returns}` on one common trading calendar (NaN only before a
ticker's history starts), decision days, refit origins and the levels. Output per baseline and ticker:
an array (n_decisions, horizon, n_levels) of quantiles of r_{t,t+h} = log(close_{t+h} / close_t).

Causality. A forecast at day t uses returns up to and including t. Parameters (GARCH, HAR slopes, the
empirical standardised quantiles) are refit only at the origins and held for the decisions up to the
next origin. A fit at origin o uses returns dated strictly before o, so its decisions are purged:
decision day s <= o - horizon - 1 (rows), whose every target r_{s,s+h} ends before o, the same purge as
the walk-forward's training rows. Decisions before the first origin are refused.

Filtered historical simulation (FHS): each scale model gives sigma_{t,h}; the quantile at level a is
sigma_{t,h} x the empirical a-quantile of r_{s,s+h} / sigma_{s,h} over that ticker's purged fitting
decisions. A ticker-origin with fewer than `min_obs` such decisions (or a shorter GARCH window) gets NaN
forecasts rather than quantiles from a handful of points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ml.evaluation.garch import Mean, cumulative_variance, fit_garch_t, next_day_variance
from ml.features.volatility import ewma_sigma

RISKMETRICS_LAMBDA = 0.94
GARCH_WINDOW = 2500
MIN_FIT_OBS = 500  # two years: fewer leaves the 5 % quantile on a couple of dozen points
# Realised variances relative to the EWMA variance are floored here before the log: a zero return
# (a stale price) would otherwise be log 0, and near-zero squares (chi^2_1 has a lot of mass near 0)
# would be outliers with all the leverage in a least-squares fit on logs. 1e-2 trims ~8 % of daily
# squares and practically none of the weekly or monthly means.
HAR_FLOOR = 1e-2
HAR_WINDOWS = (5, 22)  # the weekly and monthly realised-variance components (Corsi 2009)
BASELINES = ("zero_ewma", "ewma_fhs", "garch_t_fhs", "har_pooled")


# -- the panel and the refit schedule ------------------------------------------------------------------
@dataclass(frozen=True)
class _Panel:
    tickers: list[str]
    returns: np.ndarray  # (T, N)
    decisions: np.ndarray  # (D,) calendar rows of the decision days
    origins: np.ndarray  # (K,) calendar rows of the refit origins
    owner: np.ndarray  # (D,) which origin's fit each decision uses
    horizon: int

    def refits(self) -> list[tuple[int, np.ndarray]]:
        """(origin row, indices into `decisions`) for each origin that has decisions."""
        return [
            (int(o), np.flatnonzero(self.owner == k))
            for k, o in enumerate(self.origins)
            if (self.owner == k).any()
        ]


def _prepare(
    returns_panel: dict[str, pd.Series], decisions: pd.DatetimeIndex, origins: pd.DatetimeIndex, horizon: int
) -> _Panel:
    tickers = list(returns_panel)
    calendar = returns_panel[tickers[0]].index
    if not (calendar.is_monotonic_increasing and calendar.is_unique):
        raise ValueError("the returns need a sorted calendar without repeated days")
    for t in tickers:
        if not returns_panel[t].index.equals(calendar):
            raise ValueError(f"{t} is not on the panel's common trading calendar")
    returns = np.column_stack([returns_panel[t].to_numpy(np.float64) for t in tickers])
    for t, r in zip(tickers, returns.T, strict=True):
        _check_no_gaps(r, t)
    dec_rows = calendar.get_indexer(decisions)
    if (dec_rows < 0).any():
        raise ValueError(f"decision day {decisions[dec_rows < 0][0].date()} is not on the panel's calendar")
    origin_rows = np.unique(calendar.searchsorted(origins))  # an origin off the calendar: the next day
    owner = np.searchsorted(origin_rows, dec_rows, side="right") - 1
    if (owner < 0).any():
        raise ValueError(f"decision day {decisions[owner < 0][0].date()} comes before the first origin")
    return _Panel(tickers, returns, dec_rows, origin_rows, owner, horizon)


# -- building blocks ------------------------------------------------------------------------------------
def _check_no_gaps(r: np.ndarray, name: str = "the returns") -> None:
    finite = np.isfinite(r)
    if finite.any() and not finite[np.argmax(finite) :].all():
        raise ValueError(f"{name}: a gap after the first valid day (fill or drop it first)")


def _ewma_variance(r: np.ndarray, lam: float) -> np.ndarray:
    """The inputs' RiskMetrics variance (ml.features.volatility), on a gap-free return array."""
    _check_no_gaps(r)
    return ewma_sigma(pd.Series(r), lam).to_numpy() ** 2


def forward_returns(r: np.ndarray, horizon: int) -> np.ndarray:
    """(T, horizon): r_{t,t+h} = r_{t+1} + ... + r_{t+h}; NaN where any of them is missing or unseen."""
    filled = np.concatenate([[0.0], np.cumsum(np.nan_to_num(r))])
    missing = np.concatenate([[0], np.cumsum(~np.isfinite(r))])
    out = np.full((len(r), horizon), np.nan)
    for h in range(1, horizon + 1):
        t = np.arange(len(r) - h)
        sums = filled[t + h + 1] - filled[t + 1]
        out[t, h - 1] = np.where(missing[t + h + 1] == missing[t + 1], sums, np.nan)
    return out


def _fhs(
    fit_targets: np.ndarray, fit_sigma: np.ndarray, sigma: np.ndarray, levels: np.ndarray, min_obs: int
) -> np.ndarray:
    """(n, H, L): sigma (n, H) x the empirical level-quantiles of the fitting rows' standardised returns."""
    z = fit_targets / fit_sigma
    z = z[np.isfinite(z).all(axis=1)]
    if len(z) < min_obs:
        return np.full((*sigma.shape, len(levels)), np.nan)
    return sigma[:, :, None] * np.quantile(z, levels, axis=0).T[None]


def _sqrt_h(horizon: int) -> np.ndarray:
    return np.sqrt(np.arange(1, horizon + 1))


# -- the baselines on a prepared panel ----------------------------------------------------------------
def _zero_ewma(p: _Panel, levels: np.ndarray, lam: float) -> dict[str, np.ndarray]:
    z = stats.norm.ppf(levels)
    out = {}
    for i, t in enumerate(p.tickers):
        sigma = np.sqrt(_ewma_variance(p.returns[:, i], lam))[p.decisions]
        out[t] = sigma[:, None, None] * _sqrt_h(p.horizon)[None, :, None] * z[None, None, :]
    return out


def _ewma_fhs(p: _Panel, levels: np.ndarray, lam: float, min_obs: int) -> dict[str, np.ndarray]:
    out = {}
    for i, t in enumerate(p.tickers):
        r = p.returns[:, i]
        sigma_h = np.sqrt(_ewma_variance(r, lam))[:, None] * _sqrt_h(p.horizon)[None, :]
        targets = forward_returns(r, p.horizon)
        q = np.full((len(p.decisions), p.horizon, len(levels)), np.nan)
        for origin, idx in p.refits():
            cut = origin - p.horizon  # purged: fitting decisions s < origin - H
            q[idx] = _fhs(targets[:cut], sigma_h[:cut], sigma_h[p.decisions[idx]], levels, min_obs)
        out[t] = q
    return out


def _garch_t_fhs(
    p: _Panel, levels: np.ndarray, window: int, mean: Mean, min_obs: int
) -> dict[str, np.ndarray]:
    out = {}
    for i, t in enumerate(p.tickers):
        r = p.returns[:, i]
        targets = forward_returns(r, p.horizon)
        finite = np.flatnonzero(np.isfinite(r))
        first = finite[0] if finite.size else len(r)
        q = np.full((len(p.decisions), p.horizon, len(levels)), np.nan)
        for origin, idx in p.refits():
            start = max(first, origin - window)  # rolling window: the last `window` days before o
            if origin - p.horizon - start < min_obs:  # too few purged rows for the FHS quantiles
                continue
            fit = fit_garch_t(r[start:origin], mean=mean)
            rows = p.decisions[idx]
            # One filter from the window's start through the year's last decision: in-window fitted
            # sigmas for the FHS quantiles, out-of-window ones for the decisions.
            sigma = np.sqrt(
                cumulative_variance(next_day_variance(r[start : rows.max() + 1], fit), fit, p.horizon)
            )
            cut = origin - p.horizon - start
            q[idx] = _fhs(
                targets[start : origin - p.horizon], sigma[:cut], sigma[rows - start], levels, min_obs
            )
        out[t] = q
    return out


def _har_design(r: np.ndarray, lam: float, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: EWMA variance (T,), regressors [1, log RV_d, log RV_w, log RV_m] and targets log RV_{t,h}
    (T, H), every realised variance as a ratio to the day's EWMA variance (floored, then logged)."""
    var = _ewma_variance(r, lam)
    sq = pd.Series(r**2)
    parts = [sq.to_numpy(), *(sq.rolling(w).mean().to_numpy() for w in HAR_WINDOWS)]
    x = np.column_stack([np.ones(len(r)), *(np.log(np.maximum(v / var, HAR_FLOOR)) for v in parts)])
    fwd = forward_returns(r**2, horizon) / np.arange(1, horizon + 1)  # mean future square (per day)
    y = np.log(np.maximum(fwd / var[:, None], HAR_FLOOR))
    return var, x, y


def _har_pooled(p: _Panel, levels: np.ndarray, lam: float, min_obs: int) -> dict[str, np.ndarray]:
    """Pooled HAR on logs relative to each ticker's EWMA variance, one common intercept per horizon.

    Why ratios to the EWMA variance rather than per-ticker intercepts: the regression is scale-free
    (returns x c give sigma x c), so pooled slopes mean the same for a quiet utility and a volatile tech
    stock without a parameter per ticker. Per-ticker intercepts would pull each ticker towards its own
    long-run mean variance, an estimate that is noisy for a short history and stale when a stock's level
    has moved for good over 15 years. In levels it is HAR with the EWMA variance as a fourth, longer-memory
    regressor, the four coefficients summing to one. (The FHS quantiles stay per ticker, as elsewhere.)
    """
    designs = [_har_design(p.returns[:, i], lam, p.horizon) for i in range(len(p.tickers))]
    targets = [forward_returns(p.returns[:, i], p.horizon) for i in range(len(p.tickers))]
    days = np.arange(1, p.horizon + 1)
    out = {t: np.full((len(p.decisions), p.horizon, len(levels)), np.nan) for t in p.tickers}
    for origin, idx in p.refits():
        cut = origin - p.horizon
        x = np.concatenate([d[1][:cut] for d in designs])
        y = np.concatenate([d[2][:cut] for d in designs])
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
        if ok.sum() < min_obs:
            continue
        coef = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]  # (4, H): one regression per horizon
        # Duan's (1983) smearing: E[RV] = exp(fit) x mean(exp(residual)), not exp(fit) alone.
        smear = np.log(np.mean(np.exp(y[ok] - x[ok] @ coef), axis=0))
        for t, (var, xt, _), tg in zip(p.tickers, designs, targets, strict=True):
            sigma = np.sqrt(days * var[:, None] * np.exp(xt @ coef + smear))
            out[t][idx] = _fhs(tg[:cut], sigma[:cut], sigma[p.decisions[idx]], levels, min_obs)
    return out


# -- public entry points --------------------------------------------------------------------------------
def baseline_quantiles(
    returns_panel: dict[str, pd.Series],
    decisions: pd.DatetimeIndex,
    origins: pd.DatetimeIndex,
    horizon: int,
    levels: np.ndarray,
    *,
    lam: float = RISKMETRICS_LAMBDA,
    garch_window: int = GARCH_WINDOW,
    garch_mean: Mean = "Zero",
    min_obs: int = MIN_FIT_OBS,
    names: tuple[str, ...] = BASELINES,
) -> dict[str, dict[str, np.ndarray]]:
    """The baselines in `names`: {name: {ticker: (n_decisions, horizon, n_levels) log-return quantiles}}."""
    unknown = set(names) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {', '.join(BASELINES)}")
    p = _prepare(returns_panel, decisions, origins, horizon)
    levels = np.asarray(levels, np.float64)
    run = {
        "zero_ewma": lambda: _zero_ewma(p, levels, lam),
        "ewma_fhs": lambda: _ewma_fhs(p, levels, lam, min_obs),
        "garch_t_fhs": lambda: _garch_t_fhs(p, levels, garch_window, garch_mean, min_obs),
        "har_pooled": lambda: _har_pooled(p, levels, lam, min_obs),
    }
    return {name: run[name]() for name in names}
