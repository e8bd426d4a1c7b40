"""Forecast metrics on a held-out period (pure: arrays in, plain-float dict out).

"MASE" here is the model's MAE divided by a naive forecast's MAE on the same test targets (a relative MAE,
which ml.evaluation.scoring names `rel_mae_zero`; ml.evaluation.scoring's `mase` is the proper,
in-sample-scaled one): below 1 beats the baseline. The baselines are persistence (tomorrow's close = today's,
a zero log return) and drift (the train split's mean daily log return, times the horizon).
"""

from __future__ import annotations

import numpy as np

from ml.evaluation.scoring import pinball_losses

_EPS = 1e-12


def pinball(y_true: np.ndarray, quantiles: np.ndarray) -> float:
    """Mean pinball loss of (n, horizon, 3) quantiles against (n, horizon) log returns."""
    return float(pinball_losses(y_true, quantiles).mean())


def evaluate(y_true: np.ndarray, quantiles: np.ndarray, *, drift_per_day: float) -> dict[str, object]:
    """y_true: (n, horizon) realised log returns; quantiles: (n, horizon, 3) predicted p10/p50/p90."""
    if y_true.ndim != 2 or quantiles.shape != (*y_true.shape, 3) or len(y_true) == 0:
        raise ValueError(
            f"need (n, h) targets and (n, h, 3) quantiles, got {y_true.shape}, {quantiles.shape}"
        )
    p10, p50, p90 = quantiles[..., 0], quantiles[..., 1], quantiles[..., 2]
    err = y_true - p50
    mae = np.abs(err).mean(axis=0)
    steps = np.arange(1, y_true.shape[1] + 1)
    mae_persistence = np.abs(y_true).mean(axis=0)
    mae_drift = np.abs(y_true - drift_per_day * steps).mean(axis=0)
    per_horizon = [
        {
            "horizon": int(h),
            "mae": float(mae[i]),
            "rmse": float(np.sqrt((err[:, i] ** 2).mean())),
            "mase_persistence": float(mae[i] / max(mae_persistence[i], _EPS)),
            "mase_drift": float(mae[i] / max(mae_drift[i], _EPS)),
            "direction_accuracy": float((np.sign(p50[:, i]) == np.sign(y_true[:, i])).mean()),
            "coverage_80": float(((y_true[:, i] >= p10[:, i]) & (y_true[:, i] <= p90[:, i])).mean()),
            "width_80": float((p90[:, i] - p10[:, i]).mean()),
        }
        for i, h in enumerate(steps)
    ]
    return {
        "per_horizon": per_horizon,
        "mase_persistence_mean": float(np.mean([r["mase_persistence"] for r in per_horizon])),
        "direction_accuracy_mean": float(np.mean([r["direction_accuracy"] for r in per_horizon])),
        "coverage_80_mean": float(np.mean([r["coverage_80"] for r in per_horizon])),
        "pinball": pinball(y_true, quantiles),
        "n": len(y_true),
    }
