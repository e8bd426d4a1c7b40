"""Per-model standardisation of the inputs, fit on the training samples only (ml.training.panel) and
stored as JSON beside the weights.

The targets are already standardised by sigma-hat (ml.model.vol_lstm), so their scale is 1 by
construction; `target_scale` stays in the document (one per horizon day) so that a reader can check it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

# Standardised inputs beyond this many deviations (crash days) are clipped so one outlier cannot saturate
# the LSTM gates for the rest of its window.
CLIP = 8.0


@dataclass(frozen=True)
class Scaler:
    feature_names: list[str]
    mean: list[float]
    std: list[float]
    target_scale: list[float]  # one per horizon day
    fit_start: str  # first and last date of the rows the statistics saw
    fit_end: str
    n_rows: int

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
