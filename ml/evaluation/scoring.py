"""Proper forecast scores for the 10/50/90 % quantile forecasts (pure: arrays in, plain-float dicts out).

Shapes throughout: `y` (n, horizon) realised log returns from each window's last close, `q` (n, horizon, 3)
predicted quantiles at ml.model.lstm.QUANTILES. Everything a test of significance needs per window is exposed
as an (n, horizon) loss array (`pinball_losses`, `interval_scores`); `score` condenses them to a dict.

- pinball: the mean quantile (pinball) loss over the three levels, the training objective.
- crps: CRPS = 2 * integral over tau of the pinball loss at tau (Gneiting & Raftery 2007, eq. 17);
  with only three levels the integral is the equal-weight rule, so crps ~= 2 * pinball. It is a coarse
  approximation of the full-distribution CRPS but it ranks forecasts the same way as the pinball loss and
  it is on the scale of an absolute error, comparable with MAE.
- mase: MAE of the median over the in-sample MAE of the naive (zero-return, random-walk) forecast at the
  same horizon on the TRAINING targets (Hyndman & Koehler 2006, with the h-step naive as the scale).
- rel_mae_zero: MAE over the zero-return forecast's MAE on the SAME evaluation targets (a relative MAE;
  what ml.evaluation.evaluate calls "mase_persistence").
- direction accuracy: share of windows whose realised sign the median got right, ties excluded: a zero
  realised return, or a median of exactly 0 (no call: the zero-return baseline makes none, so it has no
  direction accuracy). Shown next to `up_rate` (the share of ups among non-zero returns, what "always up"
  would score) and a Pesaran–Timmermann p-value (ml.evaluation.stats).
- coverage_80 with `miss_below` / `miss_above`, and the interval (Winkler) score of the 10-90 band:
  width + (2 / alpha) * distance outside the band, alpha = 0.2 (Gneiting & Raftery 2007, eq. 43).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.evaluation.stats import pesaran_timmermann
from ml.model.lstm import QUANTILES

ALPHA = 0.2  # the 10-90 band is the central 80 % interval
_EPS = 1e-12


def check_shapes(y: np.ndarray, q: np.ndarray) -> None:
    if y.ndim != 2 or q.shape != (*y.shape, len(QUANTILES)) or len(y) == 0:
        raise ValueError(f"need (n, h) targets and (n, h, 3) quantiles, got {y.shape}, {q.shape}")


def pinball_losses(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n, h): the pinball loss of each window and horizon, averaged over the three quantile levels."""
    levels = np.asarray(QUANTILES)
    diff = y[..., None] - q
    return np.maximum(levels * diff, (levels - 1) * diff).mean(axis=-1)


def interval_scores(y: np.ndarray, q: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """(n, h): the interval (Winkler) score of the outer band [q[..., 0], q[..., -1]]; lower is better."""
    lo, hi = q[..., 0], q[..., -1]
    return (hi - lo) + (2.0 / alpha) * (np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0))


def naive_scale(train_targets: np.ndarray) -> np.ndarray:
    """(h,): the in-sample MAE of the zero-return forecast at each horizon, the MASE denominator."""
    return np.maximum(np.abs(train_targets).mean(axis=0), _EPS)


def direction(y: np.ndarray, median: np.ndarray) -> dict[str, Any]:
    """Direction accuracy of one horizon with ties (zero return or zero median) excluded, base rate, PT p."""
    moved = y != 0
    up_rate = float((y[moved] > 0).mean()) if moved.any() else None  # the forecaster's own calls aside
    keep = moved & (median != 0)
    up, called_up = y[keep] > 0, median[keep] > 0
    if not keep.any():
        return {"direction_accuracy": None, "up_rate": up_rate, "pt_p_value": None, "n_direction": 0}
    pt = pesaran_timmermann(called_up, up)
    return {
        "direction_accuracy": float((up == called_up).mean()),
        "up_rate": up_rate,
        "pt_p_value": pt["p_value"],
        "n_direction": int(keep.sum()),
    }


def score(y: np.ndarray, q: np.ndarray, *, mase_scale: np.ndarray) -> dict[str, Any]:
    """Per-horizon scores plus their across-horizon aggregate.

    mase_scale: (h,) `naive_scale(training targets)` (for windows pooled from several training sets, the
    mean of their scales). Aggregate ratios (mase, rel_mae_zero) are ratios of horizon-averaged MAEs, not
    averages of per-horizon ratios, so one noisy horizon cannot dominate.
    """
    check_shapes(y, q)
    scale = np.asarray(mase_scale, np.float64)
    if scale.shape != (y.shape[1],):
        raise ValueError(f"mase_scale must have shape ({y.shape[1]},), got {scale.shape}")
    p10, p50, p90 = q[..., 0], q[..., 1], q[..., 2]
    pin = pinball_losses(y, q).mean(axis=0)
    winkler = interval_scores(y, q).mean(axis=0)
    mae = np.abs(y - p50).mean(axis=0)
    mae_zero = np.maximum(np.abs(y).mean(axis=0), _EPS)
    below, above = (y < p10).mean(axis=0), (y > p90).mean(axis=0)
    per_horizon = [
        {
            "horizon": h + 1,
            "pinball": float(pin[h]),
            "crps": float(2.0 * pin[h]),
            "mae": float(mae[h]),
            "mase": float(mae[h] / scale[h]),
            "rel_mae_zero": float(mae[h] / mae_zero[h]),
            **direction(y[:, h], p50[:, h]),
            "coverage_80": float(1.0 - below[h] - above[h]),
            "miss_below": float(below[h]),
            "miss_above": float(above[h]),
            "width_80": float((p90[:, h] - p10[:, h]).mean()),
            "winkler_80": float(winkler[h]),
        }
        for h in range(y.shape[1])
    ]
    accuracies = [r["direction_accuracy"] for r in per_horizon if r["direction_accuracy"] is not None]
    return {
        "n": len(y),
        "pinball": float(pin.mean()),
        "crps": float(2.0 * pin.mean()),
        "mae": float(mae.mean()),
        "mase": float(mae.mean() / scale.mean()),
        "rel_mae_zero": float(mae.mean() / mae_zero.mean()),
        "direction_accuracy": float(np.mean(accuracies)) if accuracies else None,
        "up_rate": float((y > 0).sum() / max((y != 0).sum(), 1)),
        "coverage_80": float(1.0 - below.mean() - above.mean()),
        "miss_below": float(below.mean()),
        "miss_above": float(above.mean()),
        "winkler_80": float(winkler.mean()),
        "per_horizon": per_horizon,
    }
