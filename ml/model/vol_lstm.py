"""The volatility-scaled global forecaster: an LSTM over scale-free inputs and a ticker embedding that
predicts, per horizon day, nine quantiles of the standardised return z = r_{t,h} / (sigma_t * sqrt(h)).

The log-return quantile served is sigma_t * sqrt(h) * q_z. The head is a log multiplier on sigma_t and a
monotone quantile shape (a median plus cumulative softplus gaps), with a drift head only when asked for:
the mean is barely forecastable, so by default the median stays at zero and the network spends its
capacity on the scale and the tails. The output layers start at zero weight and at biases that give the
standard normal quantiles, so the untrained model IS the zero-median EWMA forecast (a test holds it to
that), and training can only move away from the reference where the data says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

LEVELS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
MEDIAN = LEVELS.index(0.5)
BAND = (LEVELS.index(0.1), LEVELS.index(0.9))  # the served 80 % band
_INFERENCE_BATCH = 2048


@dataclass(frozen=True)
class VolSpec:
    """Everything needed to rebuild the module before loading a state_dict (stored in the model card)."""

    inputs: tuple[str, ...]
    tickers: tuple[str, ...]  # embedding rows 1..n; row 0 is never trained (unknown tickers use the mean)
    hidden: int = 32
    layers: int = 1
    embed: int = 4  # 0: no ticker embedding (an ablation)
    dropout: float = 0.1
    window: int = 20
    horizon: int = 7
    drift: bool = False
    levels: tuple[float, ...] = field(default=LEVELS)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "inputs": list(self.inputs), "tickers": list(self.tickers)}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> VolSpec:
        values = dict(raw)
        for name in ("inputs", "tickers", "levels"):
            if name in values:
                values[name] = tuple(values[name])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def ticker_ids(self, tickers: list[str] | tuple[str, ...]) -> np.ndarray:
        """Embedding rows of `tickers`: 1..n for known ones, 0 (the mean embedding) for any other."""
        index = {t: i + 1 for i, t in enumerate(self.tickers)}
        return np.array([index.get(t, 0) for t in tickers], dtype=np.int64)


def _inverse_softplus(x: np.ndarray) -> np.ndarray:
    return x + np.log(-np.expm1(-x))


class VolQuantileLSTM(nn.Module):
    def __init__(self, spec: VolSpec) -> None:
        super().__init__()
        self.spec = spec
        n_levels = len(spec.levels)
        self.register_buffer("levels", torch.tensor(spec.levels, dtype=torch.float32), persistent=False)
        self.lstm = nn.LSTM(
            len(spec.inputs),
            spec.hidden,
            num_layers=spec.layers,
            dropout=spec.dropout if spec.layers > 1 else 0.0,
            batch_first=True,
        )
        self.embedding = nn.Embedding(len(spec.tickers) + 1, spec.embed) if spec.embed else None
        self.trunk = nn.Sequential(
            nn.Linear(spec.hidden + spec.embed, spec.hidden), nn.GELU(), nn.Dropout(spec.dropout)
        )
        self.log_scale = nn.Linear(spec.hidden, spec.horizon)
        # A linear path from the last day's inputs to the log multiplier: HAR in this model's terms (log
        # realised volatilities at several spans relative to sigma-hat), learnt in a few steps, so the
        # recurrent part only has to add what a linear volatility model cannot see.
        self.linear_scale = nn.Linear(len(spec.inputs), spec.horizon)
        self.gaps = nn.Linear(spec.hidden, spec.horizon * (n_levels - 1))
        self.drift = nn.Linear(spec.hidden, spec.horizon) if spec.drift else None
        z = stats.norm.ppf(spec.levels)
        median = list(spec.levels).index(0.5)
        # Gaps between neighbouring normal quantiles, outward from the median: below, then above.
        gaps = np.concatenate([np.diff(z[: median + 1])[::-1], np.diff(z[median:])])
        with torch.no_grad():
            for head in (self.log_scale, self.linear_scale, self.gaps, self.drift):
                if head is not None:
                    head.weight.zero_()
                    head.bias.zero_()
            self.gaps.bias.copy_(torch.from_numpy(np.tile(_inverse_softplus(gaps), spec.horizon)))
        self._median = median

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        assert self.embedding is not None
        rows = self.embedding(ids)
        mean = self.embedding.weight[1:].mean(dim=0)
        return torch.where((ids == 0).unsqueeze(-1), mean.expand_as(rows), rows)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(batch, window, inputs), (batch,) ticker ids -> (batch, horizon, levels) z-quantiles, ordered."""
        encoded, _ = self.lstm(x)
        last = encoded[:, -1]
        if self.embedding is not None:
            last = torch.cat([last, self._embed(ids).to(last.dtype)], dim=-1)
        hidden = self.trunk(last)
        batch, horizon = x.shape[0], self.spec.horizon
        steps = F.softplus(self.gaps(hidden).float()).view(batch, horizon, -1)
        below = -torch.cumsum(steps[..., : self._median], dim=-1).flip(-1)
        above = torch.cumsum(steps[..., self._median :], dim=-1)
        centre = torch.zeros(batch, horizon, 1, device=x.device)
        if self.drift is not None:
            centre = self.drift(hidden).float().unsqueeze(-1)
        shape = torch.cat([below, torch.zeros_like(centre), above], dim=-1) + centre
        log_scale = self.log_scale(hidden).float() + self.linear_scale(x[:, -1]).float()
        return shape * torch.exp(log_scale).unsqueeze(-1)


def pinball(pred: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (batch, horizon, levels) quantiles against (batch, horizon) targets."""
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(levels * diff, (levels - 1) * diff).mean()


def horizon_scale(sigma: np.ndarray, horizon: int) -> np.ndarray:
    """(...) daily sigma on each decision day -> (..., horizon): sigma * sqrt(h), the z -> return factor."""
    return np.asarray(sigma, np.float64)[..., None] * np.sqrt(np.arange(1, horizon + 1))


def predict_z(
    model: VolQuantileLSTM, windows: np.ndarray, ids: np.ndarray, device: torch.device | None = None
) -> np.ndarray:
    """Scaled input windows (n, window, inputs) and ticker ids (n,) -> (n, horizon, levels) z-quantiles."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), _INFERENCE_BATCH):
            x = torch.as_tensor(windows[start : start + _INFERENCE_BATCH], dtype=torch.float32, device=device)
            i = torch.as_tensor(ids[start : start + _INFERENCE_BATCH], dtype=torch.long, device=device)
            out.append(model(x, i).float().cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, model.spec.horizon, len(model.spec.levels)))
    return np.concatenate(out).astype(np.float64)
