"""Baseline quantile forecasts on the model's own windows (pure: arrays in, (n, horizon, 3) arrays out).

A model earns its place only by beating these on the same windows:

- `zero_ewma`: median 0 (a random walk) and normal quantiles of the h-day log return with RiskMetrics
  EWMA volatility, sigma_t^2 = lambda sigma_{t-1}^2 + (1 - lambda) r_t^2, lambda = 0.94 (J.P. Morgan 1996),
  scaled by sqrt(h) (i.i.d. daily returns). Causal: sigma_t uses returns up to the decision day only.
- `empirical`: the training targets' own 10/50/90 % quantiles at each horizon, the same for every window
  (the unconditional distribution, drift included).
- `linear_quantile`: one linear quantile regression per horizon and level (statsmodels QuantReg, IRLS:
  about ten times faster than scikit-learn's LP solver at a few thousand rows) on the standardised last
  row of each window, i.e. the model's own features without the sequence. Cost is bounded by fitting on
  at most `max_rows` of the most recent training windows; crossing quantiles are sorted per row
  (monotone rearrangement, Chernozhukov et al. 2010).

A parent "as is" is one more forecaster: pass its `ml.model.lstm.predict_log_returns` output where these are
compared (ml.evaluation.backtest does).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.quantile_regression import QuantReg
from statsmodels.tools.sm_exceptions import IterationLimitWarning

from ml.config import MAX_QR_ROWS
from ml.features.technical import MODEL_FEATURES
from ml.model.lstm import QUANTILES
from ml.model.scaler import Scaler

BASELINES = ("zero_ewma", "empirical", "linear_quantile")
RISKMETRICS_LAMBDA = 0.94
_QR_MAX_ITER = 2000
_RANK_TOL = 1e-8
_RETURN_COLUMN = MODEL_FEATURES.index("log_ret_1d")


def ewma_volatility(daily_returns: np.ndarray, lam: float = RISKMETRICS_LAMBDA) -> np.ndarray:
    """(rows,) daily log returns -> (rows,) RiskMetrics daily volatility up to each row (seed r_0^2)."""
    squared = pd.Series(np.asarray(daily_returns, np.float64) ** 2)
    return np.sqrt(squared.ewm(alpha=1.0 - lam, adjust=False).mean().to_numpy())


def zero_ewma_quantiles(daily_vol: np.ndarray, horizon: int) -> np.ndarray:
    """(n,) daily volatility on each decision day -> (n, horizon, 3) zero-median normal quantiles."""
    z = stats.norm.ppf(QUANTILES)
    root_h = np.sqrt(np.arange(1, horizon + 1))
    return daily_vol[:, None, None] * root_h[None, :, None] * z[None, None, :]


def empirical_quantiles(train_targets: np.ndarray, n: int) -> np.ndarray:
    """(m, horizon) training targets -> (n, horizon, 3): their quantiles, repeated for n windows."""
    levels = np.quantile(train_targets, QUANTILES, axis=0).T  # (horizon, 3)
    return np.broadcast_to(levels, (n, *levels.shape)).copy()


@dataclass(frozen=True)
class LinearQuantiles:
    """y_h = a + b . (x @ basis) at each quantile level: coef (horizon, 3, 1 + k).

    Some features are exact linear combinations of others (macd_hist = macd - signal, macd = ema_12 -
    ema_26, all relative to close), which leaves the design singular and IRLS unstable; `basis` spans
    the row space of the training regressors (right singular vectors above a relative 1e-8), so the fit
    is the same linear model on a full-rank design.
    """

    basis: np.ndarray  # (features, k)
    coef: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, max_rows: int = MAX_QR_ROWS) -> LinearQuantiles:
        """x: (m, features) standardised regressors, y: (m, horizon) targets; the last max_rows are used."""
        x, y = np.asarray(x[-max_rows:], np.float64), y[-max_rows:]
        _, singular, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
        basis = vt[singular > _RANK_TOL * singular[0]].T
        design = _design(x, basis)
        with warnings.catch_warnings():
            # IRLS stopping at max_iter on near-flat objectives still gives a usable baseline fit.
            warnings.simplefilter("ignore", IterationLimitWarning)
            coef = np.array(
                [
                    [
                        QuantReg(y[:, h], design).fit(q=level, max_iter=_QR_MAX_ITER).params
                        for level in QUANTILES
                    ]
                    for h in range(y.shape[1])
                ]
            )
        return cls(basis, coef)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, features) -> (n, horizon, 3), sorted along the last axis."""
        return np.sort(np.einsum("nf,hqf->nhq", _design(x, self.basis), self.coef), axis=-1)


def _design(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), np.asarray(x, np.float64) @ basis])


def baseline_forecasts(
    features: np.ndarray,
    windows: np.ndarray,
    targets: np.ndarray,
    scaler: Scaler,
    *,
    train: slice,
    evaluate: slice,
    window: int,
    max_rows: int = MAX_QR_ROWS,
) -> dict[str, np.ndarray]:
    """Every baseline's (n_eval, horizon, 3) quantiles for the samples in `evaluate`.

    features: (rows, features) raw rows; windows / targets: the samples (ml.training.train.Dataset's arrays);
    train: the samples the baselines may learn from; scaler: fit on those rows (the model's own).
    """
    horizon = targets.shape[1]
    eval_idx = np.arange(len(targets))[evaluate]
    decision_rows = eval_idx + window - 1
    vol = ewma_volatility(features[:, _RETURN_COLUMN])
    last_rows = scaler.transform(windows[:, -1, :])  # the latest feature row of each window
    linear = LinearQuantiles.fit(last_rows[train], targets[train], max_rows=max_rows)
    return {
        "zero_ewma": zero_ewma_quantiles(vol[decision_rows], horizon),
        "empirical": empirical_quantiles(targets[train], len(eval_idx)),
        "linear_quantile": linear.predict(last_rows[evaluate]),
    }
