"""Data preparation: a ticker's feature rows -> (window -> next `horizon` log returns) samples, a
chronological purged split, a scaler fit on the training rows only, and tensors for the loop."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ml.config import EVAL_FRACTION
from ml.errors import InsufficientHistory, InvalidInput
from ml.features.technical import MODEL_FEATURES
from ml.model.lstm import ModelSpec
from ml.model.scaler import Scaler

if TYPE_CHECKING:  # the store arrives as an argument: data preparation imports no Feast
    from ml.config import TrainConfig
    from ml.features.store import FeatureStore

MIN_TRAIN_SAMPLES = 40
MIN_EVAL_SAMPLES = 10


# -- data -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """Every (window -> next `horizon` log returns) sample of one ticker, in date order."""

    ticker: str
    dates: pd.DatetimeIndex  # one per feature row
    features: np.ndarray  # (rows, features) raw
    windows: np.ndarray  # (samples, window, features) raw, a view into `features`
    targets: np.ndarray  # (samples, horizon) log return from the window's last close
    window: int

    def sample_date(self, i: int) -> str:
        """The decision day of sample i: the last day of its window."""
        return self.dates[i + self.window - 1].date().isoformat()


@dataclass(frozen=True)
class Split:
    train: slice
    val: slice
    test: slice
    purge: int  # samples dropped between consecutive splits

    def ranges(self, data: Dataset) -> dict[str, Any]:
        out: dict[str, Any] = {
            part: [data.sample_date(s.start), data.sample_date(s.stop - 1)]
            for part, s in (("train", self.train), ("val", self.val), ("test", self.test))
        }
        return {**out, "purge_days": self.purge}


def min_rows(window: int, horizon: int) -> int:
    return window + horizon - 1 + 2 * horizon + MIN_TRAIN_SAMPLES + 2 * MIN_EVAL_SAMPLES


def dataset_from_frame(ticker: str, frame: pd.DataFrame, window: int, horizon: int) -> Dataset:
    """A Dataset from a frame with `close` and MODEL_FEATURES (complete rows, date index), no store."""
    features = frame[MODEL_FEATURES].to_numpy(dtype=np.float64)
    log_close = np.log(frame["close"].to_numpy(dtype=np.float64))
    n_samples = len(frame) - window - horizon + 1
    if n_samples < 1:
        raise InsufficientHistory(f"{ticker}: {len(frame)} rows cannot fill one {window}+{horizon} sample")
    ends = np.arange(n_samples) + window - 1  # row index of each window's last day
    targets = log_close[ends[:, None] + np.arange(1, horizon + 1)[None, :]] - log_close[ends][:, None]
    windows = sliding_window_view(features, window, axis=0)[:n_samples].transpose(0, 2, 1)
    return Dataset(ticker, pd.DatetimeIndex(frame.index), features, windows, targets, window)


def load_dataset(store: FeatureStore, ticker: str, config: TrainConfig, spec: ModelSpec) -> Dataset:
    frame = store.training_frame(ticker, end=config.until)
    if config.history_days is not None:
        frame = frame[frame.index > frame.index[-1] - pd.Timedelta(days=config.history_days)]
    needed = min_rows(spec.window, spec.horizon)
    if len(frame) < needed:
        limit = f" in the last {config.history_days} days" if config.history_days else ""
        raise InsufficientHistory(
            f"{ticker}: need at least {needed} trading days of complete features (window {spec.window}, "
            f"horizon {spec.horizon}, purge gaps and {MIN_TRAIN_SAMPLES + 2 * MIN_EVAL_SAMPLES} samples), "
            f"have {len(frame)}{limit}"
        )
    features = frame[MODEL_FEATURES].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(features).all(axis=1) & (close > 0))
    if bad.any():
        raise InvalidInput(
            f"{ticker}: non-finite features or a non-positive close on {frame.index[bad][0].date()}: "
            "check the source data and ingest it again"
        )
    return dataset_from_frame(ticker, frame, spec.window, spec.horizon)


def chronological_split(n_samples: int, horizon: int) -> Split:
    """Train / val / test in date order with `horizon` samples purged between them.

    The purge makes the last train target (horizon days ahead) end before the first val decision day,
    so no training label overlaps a later split's labels.
    """
    usable = n_samples - 2 * horizon
    n_eval = max(MIN_EVAL_SAMPLES, round(usable * EVAL_FRACTION))
    n_train = usable - 2 * n_eval
    if n_train < MIN_TRAIN_SAMPLES:
        raise InsufficientHistory(
            f"{n_samples} samples leave {n_train} for training, need {MIN_TRAIN_SAMPLES}"
        )
    val_start = n_train + horizon
    test_start = val_start + n_eval + horizon
    return Split(
        slice(0, n_train), slice(val_start, val_start + n_eval), slice(test_start, n_samples), horizon
    )


def fit_scaler(data: Dataset, split: Split) -> Scaler:
    """Statistics from the rows the train windows read and the train targets, nothing later."""
    last_row = split.train.stop - 1 + data.window - 1
    return Scaler.fit(
        data.features[: last_row + 1],
        data.targets[split.train],
        feature_names=MODEL_FEATURES,
        fit_start=data.dates[0].date().isoformat(),
        fit_end=data.dates[last_row].date().isoformat(),
    )


@dataclass(frozen=True)
class Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    # Ticker ids for a model with an embedding (ml.model.vol_lstm); None for a per-ticker model.
    ids_train: torch.Tensor | None = None
    ids_val: torch.Tensor | None = None


def make_tensors(data: Dataset, split: Split, scaler: Scaler, device: torch.device) -> Tensors:
    scale = np.asarray(scaler.target_scale)

    def part(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(scaler.transform(data.windows[s]))
        y = torch.from_numpy((data.targets[s] / scale).astype(np.float32))
        return x.to(device), y.to(device)

    return Tensors(*part(split.train), *part(split.val))


@dataclass(frozen=True)
class Prepared:
    data: Dataset
    split: Split
    scaler: Scaler
    tensors: Tensors


def prepare(
    store: FeatureStore, ticker: str, config: TrainConfig, spec: ModelSpec, device: torch.device
) -> Prepared:
    data = load_dataset(store, ticker, config, spec)
    return prepare_split(data, chronological_split(len(data.targets), spec.horizon), device)


def prepare_split(data: Dataset, split: Split, device: torch.device) -> Prepared:
    scaler = fit_scaler(data, split)
    return Prepared(data, split, scaler, make_tensors(data, split, scaler, device))


def prepare_refit(data: Dataset, device: torch.device) -> Prepared:
    """Every sample with a known target, for the served model's refit after its walk-forward evaluation.

    Nothing is held out, so the loop's "validation" set is the training set itself: the epochs come from
    the backtest's early stopping instead, and the kept state is the one with the lowest training loss.
    """
    n = len(data.targets)
    split = Split(slice(0, n), slice(0, n), slice(n, n), data.targets.shape[1])
    scaler = fit_scaler(data, split)
    t = make_tensors(data, replace(split, val=slice(0, 0)), scaler, device)
    return Prepared(data, split, scaler, Tensors(t.x_train, t.y_train, t.x_train, t.y_train))
