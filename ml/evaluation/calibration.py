"""Conformalized quantile regression (Romano, Patterson & Candès 2019) for the 10-90 band, per horizon.

On a calibration set (the validation split: never trained on, only used to stop early) the nonconformity
score of a window is E = max(q10 - y, y - q90): how far y falls outside the band (negative inside). The
correction Q_h is the ceil((n + 1)(1 - alpha))-th smallest score at horizon h, alpha = 0.2 for an 80 % band;
the calibrated band is [q10 - Q_h, q90 + Q_h]. With exchangeable windows this covers at least 1 - alpha
in expectation; Q_h < 0 narrows an over-wide band. The median is left as it is, and the outer quantiles
are clipped at it so the band stays ordered.

Corrections are in log-return units of the model's own ticker. The result is a small JSON-safe dict, so
a registered model can carry it in its card and serving can apply it with `apply_cqr`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ml.evaluation.scoring import ALPHA, check_shapes

METHOD = "cqr"


def fit_cqr(y_val: np.ndarray, q_val: np.ndarray, alpha: float = ALPHA) -> dict[str, Any]:
    """y_val (n, h) and q_val (n, h, 3) on the calibration windows -> {"method", "alpha", "correction", ...}.

    If n is too small for the finite-sample rank (n < 1/alpha - 1), the largest score is used and
    `exact` is False: the guarantee then does not hold, and the card says so.
    """
    check_shapes(y_val, q_val)
    scores = np.maximum(q_val[..., 0] - y_val, y_val - q_val[..., -1])  # (n, h)
    n = len(scores)
    rank = math.ceil((n + 1) * (1.0 - alpha))
    correction = np.sort(scores, axis=0)[min(rank, n) - 1]
    return {
        "method": METHOD,
        "alpha": alpha,
        "correction": [float(c) for c in correction],
        "n_calibration": n,
        "exact": rank <= n,
    }


def apply_cqr(q: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """(n, h, 3) quantiles -> the same with the outer two moved by each horizon's correction."""
    if calibration.get("method") != METHOD:
        raise ValueError(f"not a {METHOD} calibration: {calibration!r}")
    correction = np.asarray(calibration["correction"], np.float64)
    if q.ndim != 3 or q.shape[1:] != (len(correction), 3):
        raise ValueError(f"need (n, {len(correction)}, 3) quantiles, got {q.shape}")
    out = np.array(q, dtype=np.float64)
    median = out[..., 1]
    out[..., 0] = np.minimum(out[..., 0] - correction, median)
    out[..., 2] = np.maximum(out[..., 2] + correction, median)
    return out
