"""Per-model standardisation of inputs and targets, fit on the train split only and stored as JSON.

Targets are divided by their train-split scale (per horizon) so the network and the pinball loss work in
units of "typical move for this ticker", which is what lets a parent's weights serve a more volatile child.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

# Standardised inputs beyond this many deviations (crash days) are clipped so one outlier cannot saturate
# the LSTM gates for the rest of its window.
CLIP = 8.0
_MIN_STD = 1e-12


@dataclass(frozen=True)
class Scaler:
    feature_names: list[str]
    mean: list[float]
    std: list[float]
    target_scale: list[float]  # one per horizon day
    fit_start: str  # first and last date of the rows the statistics saw
    fit_end: str
    n_rows: int

    @classmethod
    def fit(
        cls,
        feature_rows: np.ndarray,
        targets: np.ndarray,
        *,
        feature_names: list[str],
        fit_start: str,
        fit_end: str,
    ) -> Scaler:
        """feature_rows: (rows, features); targets: (samples, horizon) log returns of the same split."""
        mean = feature_rows.mean(axis=0)
        std = feature_rows.std(axis=0)
        target_scale = targets.std(axis=0)
        return cls(
            feature_names=list(feature_names),
            mean=[float(v) for v in mean],
            std=[float(v) if v > _MIN_STD else 1.0 for v in std],
            target_scale=[float(v) if v > _MIN_STD else 1.0 for v in target_scale],
            fit_start=fit_start,
            fit_end=fit_end,
            n_rows=int(feature_rows.shape[0]),
        )

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Any array whose last axis is the features -> standardised float32 of the same shape."""
        scaled = (features - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(scaled, -CLIP, CLIP).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Scaler:
        """Raises ValueError on anything that is not a well-formed scaler (the registry reports it)."""
        try:
            raw = json.loads(text)
            scaler = cls(**raw)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a scaler document: {exc}") from exc
        n = len(scaler.feature_names)
        if len(scaler.mean) != n or len(scaler.std) != n or not scaler.target_scale:
            raise ValueError("scaler statistics do not match its feature list")
        values = [*scaler.mean, *scaler.std, *scaler.target_scale]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError("scaler statistics must be finite numbers")
        if min(scaler.std) <= 0 or min(scaler.target_scale) <= 0:
            raise ValueError("scaler deviations must be positive")
        return scaler
