"""The pinball (quantile) loss at arbitrary levels."""

from __future__ import annotations

import numpy as np


def pinball(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Losses shaped like q (..., L) for outcomes y (...) and quantiles q at `levels` (L,); NaN propagates.

    max(a (y - q), (a - 1) (y - q)): level a's loss, whose expectation the a-quantile minimises.
    """
    levels = np.asarray(levels, np.float64)
    q = np.asarray(q, np.float64)
    if q.shape[-1] != levels.shape[0]:
        raise ValueError(f"q has {q.shape[-1]} levels on its last axis, levels has {levels.shape[0]}")
    diff = np.asarray(y, np.float64)[..., None] - q
    return np.maximum(levels * diff, (levels - 1.0) * diff)
