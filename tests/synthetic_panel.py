"""Synthetic panels with a known volatility process, for the evaluation's acceptance tests.

`garch_factor_panel`: every stock's return is beta * market + idiosyncratic, both with GJR-GARCH(1,1)
volatility (Student-t shocks; a falling day raises tomorrow's variance more than a rising one, as in
equities), so volatility is forecastable from the past and shared through the market: a global model that
reads the market and pools the tickers has something to learn that a symmetric EWMA misses.
`riskmetrics_panel`: returns whose variance follows RiskMetrics' own recursion, where nothing beats it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.tickers import INDEX_TICKER


def _garch(
    rng: np.random.Generator, n: int, omega: float, alpha: float, beta: float, nu: float, gamma: float
) -> np.ndarray:
    shocks = rng.standard_t(nu, n) / np.sqrt(nu / (nu - 2))
    var = np.empty(n)
    out = np.empty(n)
    var[0] = omega / (1 - alpha - gamma / 2 - beta)
    for t in range(n):
        if t:
            react = alpha + gamma * (out[t - 1] < 0)
            var[t] = omega + react * out[t - 1] ** 2 + beta * var[t - 1]
        out[t] = np.sqrt(var[t]) * shocks[t]
    return out


def _closes(returns: dict[str, np.ndarray], start: str) -> dict[str, pd.Series]:
    dates = pd.bdate_range(start, periods=len(next(iter(returns.values()))))
    return {name: pd.Series(100.0 * np.exp(np.cumsum(r)), index=dates) for name, r in returns.items()}


def garch_factor_panel(
    n_tickers: int = 6,
    years: int = 12,
    seed: int = 0,
    alpha: float = 0.05,
    leverage: float = 0.2,
    persistence: float = 0.9,
) -> dict[str, pd.Series]:
    """GJR-GARCH(1,1)-t market and idiosyncratic parts: `alpha` is the reaction to yesterday's squared
    shock, `leverage` the extra reaction to a fall, `persistence` = alpha + leverage / 2 + beta
    (RiskMetrics' EWMA assumes a symmetric 0.06 and 1.0: the further from those, the more to learn)."""
    rng = np.random.default_rng(seed)
    n = 252 * years
    beta_g = persistence - alpha - leverage / 2
    market = _garch(rng, n, 1e-4 * (1 - persistence) * 0.8, alpha, beta_g, 6.0, leverage)
    returns = {INDEX_TICKER: market}
    for i in range(n_tickers):
        beta = 0.6 + 0.8 * rng.random()
        level = 1e-4 * (1 + i % 3) * (1 - persistence)  # long-run idiosyncratic variance differs by ticker
        idio = _garch(rng, n, level, alpha, beta_g, 5.0, leverage)
        returns[f"S{i:02d}"] = beta * market + idio
    return _closes(returns, "2000-01-03")


def riskmetrics_panel(n_tickers: int = 6, years: int = 12, seed: int = 0) -> dict[str, pd.Series]:
    """i.i.d. normal shocks scaled by RiskMetrics' own variance recursion (GARCH with alpha 0.06 and beta
    0.9399): zero+EWMA is the true forecast here, so there is nothing to learn beyond it.

    (On i.i.d. returns of constant volatility zero+EWMA is NOT the best forecast: its sigma-hat wanders
    +-15 % around the constant, and a model that learns the constant level has real skill over it.)"""
    rng = np.random.default_rng(seed)
    n = 252 * years
    returns = {
        name: _garch(rng, n, 1e-4 * 1e-4, 0.06, 0.9399, 1e6, 0.0)
        for name in (INDEX_TICKER, *(f"S{i:02d}" for i in range(n_tickers)))
    }
    return _closes(returns, "2000-01-03")
