"""GARCH(1,1) with Student-t innovations: fitted with `arch`, then filtered with the parameters held fixed.

The fit runs on 100 x the daily log returns (arch's optimiser is tuned for percent-scale data); every
variance returned here is back on the log-return scale.

Why the fixed-parameter filter is written out instead of `arch_model(...).fix(params)` on the longer
series: the GARCH(1,1) variance recursion is one line, linear in the squared residuals, so
`scipy.signal.lfilter` runs a whole year in one call, where `fix` would rebuild a model, redo arch's
backcast and return DataFrames for every ticker and origin (378 times on the bundled panel). Writing it
also makes the start explicit: the path is seeded with arch's own conditional variance on the window's
first day, so inside the fitting window it reproduces arch's `conditional_volatility` exactly (a test
checks this) and past the window it simply continues the same recursion with the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import signal

SCALE = 100.0  # returns are fitted in percent

Mean = Literal["Zero", "Constant"]


@dataclass(frozen=True)
class GarchFit:
    """Fitted GARCH(1,1)-t parameters on the percent scale, and the variance the fitted path starts from."""

    mu: float  # 0 for mean="Zero"
    omega: float
    alpha: float
    beta: float
    nu: float
    start_variance: float  # arch's conditional variance of the window's first day (percent^2)


def fit_garch_t(returns: np.ndarray, *, mean: Mean = "Zero") -> GarchFit:
    """Maximum-likelihood GARCH(1,1)-t on one window of daily log returns (no NaN)."""
    # Imported here: arch loads its whole univariate package, seconds that importers of the EWMA
    # baselines alone would pay for nothing.
    from arch import arch_model

    model = arch_model(SCALE * np.asarray(returns, np.float64), mean=mean, vol="GARCH", p=1, q=1, dist="t")
    # Each origin starts from arch's own starting grid: warm-starting from the previous origin saved only a
    # quarter of the time (~1.5 s on the bundled panel) and would make every fit depend on the last one.
    res = model.fit(disp="off", show_warning=False)
    p = res.params
    return GarchFit(
        mu=float(p["mu"]) if mean == "Constant" else 0.0,
        omega=float(p["omega"]),
        alpha=float(p["alpha[1]"]),
        beta=float(p["beta[1]"]),
        nu=float(p["nu"]),
        start_variance=float(res.conditional_volatility[0] ** 2),
    )


def next_day_variance(returns: np.ndarray, fit: GarchFit) -> np.ndarray:
    """(n,) the variance of day t + 1 given returns through t, for returns starting on the fitted window's
    first day (log-return scale)."""
    resid = SCALE * np.asarray(returns, np.float64) - fit.mu
    # v[t] = omega + alpha e_t^2 + beta v[t - 1], with v[-1] the variance of the first day itself.
    v, _ = signal.lfilter(
        [1.0], [1.0, -fit.beta], fit.omega + fit.alpha * resid**2, zi=[fit.beta * fit.start_variance]
    )
    return v / SCALE**2


def cumulative_variance(next_var: np.ndarray, fit: GarchFit, horizon: int) -> np.ndarray:
    """(n, horizon): the variance of the h-day return, the sum of the analytic k-step forecasts, k = 1..h."""
    # E_t[v_{t+k+1}] = omega + (alpha + beta) E_t[v_{t+k}]: iterated rather than summed in closed form,
    # which would divide by 1 - alpha - beta (zero for an integrated fit).
    omega, persistence = fit.omega / SCALE**2, fit.alpha + fit.beta
    steps = np.empty((len(next_var), horizon))
    steps[:, 0] = next_var
    for k in range(1, horizon):
        steps[:, k] = omega + persistence * steps[:, k - 1]
    return np.cumsum(steps, axis=1)
