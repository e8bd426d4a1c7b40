"""A panel of tickers on one trading calendar -> samples for the global volatility-scaled model.

Pure: closes in, arrays out. Every ticker's scale-free inputs (ml.features.volatility) sit in one
(dates, tickers, inputs) array, so a sample is just a (decision row, ticker) pair and its window is
gathered when a batch needs it: the panel is stored once, not once per overlapping window. Targets are
the h-day log returns divided by sigma_t * sqrt(h) (ml.model.vol_lstm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ml.errors import InsufficientHistory
from ml.features.technical import TECHNICAL_INPUTS, technical_inputs
from ml.features.volatility import SIGMA_COLUMN, VOL_INPUTS, panel_inputs
from ml.model.scaler import CLIP, Scaler
from ml.model.vol_lstm import horizon_scale
from ml.tickers import INDEX_TICKER


@dataclass(frozen=True)
class PanelData:
    tickers: tuple[str, ...]
    dates: pd.DatetimeIndex  # the market's trading calendar
    input_names: tuple[str, ...]
    inputs: np.ndarray  # (dates, tickers, inputs) raw, NaN where undefined
    sigma: np.ndarray  # (dates, tickers) daily sigma_t
    log_close: np.ndarray  # (dates, tickers)

    def column(self, ticker: str) -> int:
        return self.tickers.index(ticker)

    def log_returns(self, horizon: int) -> np.ndarray:
        """(dates, tickers, horizon): log return from each day's close to h days later, NaN past the end."""
        out = np.full((*self.log_close.shape, horizon), np.nan)
        for h in range(1, horizon + 1):
            out[:-h, :, h - 1] = self.log_close[h:] - self.log_close[:-h]
        return out

    def z_targets(self, horizon: int) -> np.ndarray:
        """(dates, tickers, horizon) standardised targets r_{t,h} / (sigma_t sqrt(h))."""
        scale = horizon_scale(self.sigma, horizon)
        with np.errstate(divide="ignore", invalid="ignore"):  # sigma 0 or NaN: no target (never sampled)
            return self.log_returns(horizon) / scale

    def date_row(self, day: pd.Timestamp) -> int:
        """The first row on or after `day`."""
        return int(self.dates.searchsorted(pd.Timestamp(day)))


def build_panel(
    closes: dict[str, pd.Series], *, inputs: tuple[str, ...] = tuple(VOL_INPUTS), market: str = INDEX_TICKER
) -> PanelData:
    """Closes per ticker (the market's among them) -> the panel on the market's calendar.

    `inputs` picks and orders the model inputs: VOL_INPUTS by default, optionally with TECHNICAL_INPUTS
    (RSI, MACD, moving averages) or without the market ones (the benchmark's ablations).
    """
    if market not in closes:
        raise InsufficientHistory(f"the panel needs the market series {market}")
    market_close = closes[market].dropna()
    dates = pd.DatetimeIndex(market_close.index)
    tickers = tuple(sorted(closes))
    frames = []
    for ticker in tickers:
        close = closes[ticker].dropna()
        frame = panel_inputs(close, market_close)
        if any(name in TECHNICAL_INPUTS for name in inputs):
            frame = frame.join(technical_inputs(close))
        frames.append(frame.reindex(dates))
    return PanelData(
        tickers=tickers,
        dates=dates,
        input_names=tuple(inputs),
        inputs=np.stack([f[list(inputs)].to_numpy(np.float32) for f in frames], axis=1),
        sigma=np.stack([f[SIGMA_COLUMN].to_numpy(np.float64) for f in frames], axis=1),
        log_close=np.stack([np.log(f["close"].to_numpy(np.float64)) for f in frames], axis=1),
    )


def valid_windows(panel: PanelData, window: int) -> np.ndarray:
    """(dates, tickers) bool: the window ending on that row has every input, and sigma is positive."""
    ok = np.isfinite(panel.inputs).all(axis=-1) & (panel.sigma > 0)
    run = np.cumsum(ok, axis=0)
    full = np.zeros_like(ok)
    before = np.vstack([np.zeros((1, ok.shape[1])), run[:-window]])  # ok-count up to the window's start
    full[window - 1 :] = (run[window - 1 :] - before) == window
    return full


@dataclass(frozen=True)
class Samples:
    """Sample k is the window ending on row rows[k] of ticker column cols[k]."""

    rows: np.ndarray
    cols: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> Samples:
        return Samples(self.rows[keep], self.cols[keep])


def select_samples(
    panel: PanelData,
    *,
    window: int,
    horizon: int,
    first_row: int,
    last_row: int,
    stride: int = 1,
    tickers: tuple[str, ...] | None = None,
    need_target: bool = True,
) -> Samples:
    """Decision rows first_row..last_row (inclusive), every `stride`-th, with a full window (and a known
    target when `need_target`), for `tickers` (default all)."""
    ok = valid_windows(panel, window)
    if need_target:
        ok &= np.isfinite(panel.z_targets(horizon)).all(axis=-1)
    rows = np.arange(max(first_row, 0), min(last_row, len(panel.dates) - 1) + 1)
    rows = rows[(rows - rows[0]) % stride == 0] if len(rows) else rows
    cols = np.arange(len(panel.tickers))
    if tickers is not None:
        cols = np.array([panel.column(t) for t in tickers], dtype=np.int64)
    mask = ok[np.ix_(rows, cols)]
    r, c = np.nonzero(mask)
    return Samples(rows[r], cols[c])


def fit_input_scaler(panel: PanelData, samples: Samples, horizon: int) -> Scaler:
    """Robust input statistics (median, IQR / 1.349) over the rows the samples' windows end on.

    Robust because crash days would otherwise set the scale of every input; the targets are already
    standardised by sigma, so their scale is 1 by construction.
    """
    if len(samples) == 0:
        raise InsufficientHistory("no training samples to fit the input statistics on")
    rows = panel.inputs[samples.rows, samples.cols].astype(np.float64)
    median = np.nanmedian(rows, axis=0)
    iqr = np.nanpercentile(rows, 75, axis=0) - np.nanpercentile(rows, 25, axis=0)
    spread = np.where(iqr > 1e-9, iqr / 1.349, 1.0)
    dates = panel.dates[samples.rows]
    return Scaler(
        feature_names=list(panel.input_names),
        mean=[float(v) for v in median],
        std=[float(v) for v in spread],
        target_scale=[1.0] * horizon,
        fit_start=dates.min().date().isoformat(),
        fit_end=dates.max().date().isoformat(),
        n_rows=len(samples),
    )


def scaled_inputs(panel: PanelData, scaler: Scaler) -> np.ndarray:
    """(dates, tickers, inputs) float32, standardised and clipped; undefined cells are 0 (never sampled)."""
    out = scaler.transform(panel.inputs)
    return np.nan_to_num(out, nan=0.0, posinf=CLIP, neginf=-CLIP)


def gather_windows(scaled: np.ndarray, samples: Samples, window: int) -> np.ndarray:
    """(n, window, inputs) windows ending on each sample's row."""
    offsets = np.arange(-window + 1, 1)
    return scaled[samples.rows[:, None] + offsets[None, :], samples.cols[:, None]]


@dataclass(frozen=True)
class PanelTensors:
    x: torch.Tensor  # (n, window, inputs)
    y: torch.Tensor  # (n, horizon) z targets
    ids: torch.Tensor  # (n,) embedding rows


def panel_tensors(
    panel: PanelData,
    scaled: np.ndarray,
    samples: Samples,
    *,
    window: int,
    horizon: int,
    ticker_ids: np.ndarray,
    device: torch.device,
) -> PanelTensors:
    """ticker_ids: the embedding row of each panel column (VolSpec.ticker_ids(panel.tickers))."""
    x = torch.from_numpy(gather_windows(scaled, samples, window))
    y = torch.from_numpy(panel.z_targets(horizon)[samples.rows, samples.cols].astype(np.float32))
    ids = torch.from_numpy(ticker_ids[samples.cols])
    return PanelTensors(x.to(device), y.to(device), ids.to(device))
