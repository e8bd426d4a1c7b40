"""Per-level recalibration of quantile forecasts on a calibration split (conformalised quantiles).

For level l the shift c_l is the empirical l-quantile of (z - q_l) over the calibration windows, so
P(z <= q_l + c_l) = l on them; applied to later forecasts it corrects a band that was systematically too
narrow or too wide. It is a correction fit on past windows, not a guarantee: overlapping h-day windows are
not exchangeable, so the card reports the coverage measured afterwards, never a promised one.
"""

from __future__ import annotations

import numpy as np

MIN_CALIBRATION = 50  # fewer finite windows than this per horizon: no shift (too noisy to trust)


def fit_shifts(q: np.ndarray, z: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """q: (..., H, L) forecasts, z: (..., H) outcomes on the same windows -> (H, L) additive shifts."""
    horizon, n_levels = q.shape[-2], q.shape[-1]
    # One shift per level, pooled over the horizons: per-horizon shifts from overlapping windows were too
    # noisy to pay for themselves (the standardised target has the same scale at every horizon).
    rows = (z[..., None] - q).reshape(-1, n_levels)
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) < MIN_CALIBRATION * horizon:
        return np.zeros((horizon, n_levels))
    return np.tile([np.quantile(rows[:, j], levels[j]) for j in range(n_levels)], (horizon, 1))


def apply_shifts(q: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """(..., H, L) forecasts + (H, L) shifts, re-sorted along the levels so they never cross."""
    return np.sort(q + shifts, axis=-1)
