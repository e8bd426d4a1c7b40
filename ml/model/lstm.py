"""LSTM encoder + monotone quantile head over log returns, and the one inference path every caller uses.

The network never sees or emits a price: it reads standardised scale-free features and emits, per horizon
day, the 10/50/90 % quantiles of the log return from the last close in target-scale units (see
ml.model.scaler).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ml.model.scaler import Scaler

QUANTILES = (0.1, 0.5, 0.9)
_INFERENCE_BATCH = 1024


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the module before loading a state_dict (stored in the model card)."""

    n_features: int
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    window: int = 60
    horizon: int = 7

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class QuantileLSTM(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("levels", torch.tensor(QUANTILES), persistent=False)
        self.lstm = nn.LSTM(
            spec.n_features,
            spec.hidden,
            num_layers=spec.layers,
            dropout=spec.dropout if spec.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.hidden, spec.horizon * 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, window, features) -> (batch, horizon, 3) ordered quantiles, in target-scale units."""
        encoded, _ = self.lstm(x)
        raw = self.head(encoded[:, -1]).view(x.shape[0], self.spec.horizon, 3)
        # The median is free; the outer quantiles sit a softplus away from it, so p10 <= p50 <= p90 always
        # holds by construction instead of by a post-hoc sort.
        median = raw[..., 1]
        lower = median - F.softplus(raw[..., 0])
        upper = median + F.softplus(raw[..., 2])
        return torch.stack([lower, median, upper], dim=-1)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (batch, horizon, 3) quantiles against (batch, horizon) targets."""
    q = torch.tensor(QUANTILES, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()


def predict_log_returns(
    model: QuantileLSTM, scaler: Scaler, windows: np.ndarray, device: torch.device | None = None
) -> np.ndarray:
    """Raw feature windows (n, window, features) -> (n, horizon, 3) log-return quantiles (float64).

    Training's test evaluation, the champion comparison and serving all go through here, so a reloaded
    model reproduces its card's metrics bit for bit.
    """
    device = device or next(model.parameters()).device
    window = model.spec.window
    if windows.ndim != 3 or windows.shape[1] < window or windows.shape[2] != model.spec.n_features:
        raise ValueError(
            f"expected windows of shape (n, >={window}, {model.spec.n_features}), got {windows.shape}"
        )
    scaled = scaler.transform(windows[:, -window:, :])
    was_training = model.training
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(scaled), _INFERENCE_BATCH):
            batch = torch.from_numpy(scaled[start : start + _INFERENCE_BATCH]).to(device)
            outputs.append(model(batch).float().cpu().numpy())
    model.train(was_training)
    out = np.concatenate(outputs) if outputs else np.zeros((0, model.spec.horizon, 3), np.float32)
    return out.astype(np.float64) * np.asarray(scaler.target_scale)[None, :, None]
