"""The neural recipes a walk-forward refits at every origin.

- `GlobalRecipe`: one model over a universe of tickers (the panel, or ^GSPC alone as the design's parent),
  a ticker embedding for each member; any other ticker is read with the mean embedding. Each refit is
  warm-started from the previous origin's weights.
- `PerTickerRecipe`: one model per ticker on its own most recent `days` decision days, trained from
  scratch at every origin (the design's per-ticker model; no embedding).
- `ChildRecipe`: per ticker, a copy of a GlobalRecipe's model at the same origin, then `freeze` (the
  ticker's embedding and the head learn, the encoder is fixed) or `fine_tune` (everything, at a tenth of
  the learning rate), on that ticker's history.
All of them train through the project's one loop (ml.training.loop.fit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ml.config import EpochCallback, PanelModelConfig
from ml.model.scaler import Scaler
from ml.model.vol_lstm import VolQuantileLSTM, predict_z
from ml.training.dataprep import make_tensors
from ml.training.loop import fit, resolve_device
from ml.training.panel import (
    PanelData,
    Samples,
    fit_input_scaler,
    gather_windows,
    scaled_inputs,
    select_samples,
)
from ml.training.recipes import child_spec, from_parent, learning_rate, new_spec


class NeuralRecipe(Protocol):
    label: str

    def refit(self, panel: PanelData, *, train_last: int, val_first: int, val_last: int) -> dict[str, Any]:
        """Train on decisions up to train_last, stop early on val_first..val_last; a summary for the log."""

    def predict(self, panel: PanelData, samples: Samples) -> np.ndarray:
        """(n, H, L) z-quantiles of the samples' windows."""


@dataclass
class _Fitted:
    model: VolQuantileLSTM
    scaler: Scaler
    scaled: np.ndarray  # the panel's inputs under this scaler, for predictions until the next refit


def _train(
    model: VolQuantileLSTM,
    panel: PanelData,
    train: Samples,
    val: Samples,
    settings: PanelModelConfig,
    *,
    epochs: int,
    lr: float,
    freeze_encoder: bool = False,
    scaler: Scaler | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[_Fitted, dict[str, Any]]:
    started = time.perf_counter()
    device = resolve_device(settings.device)
    scaler = scaler or fit_input_scaler(panel, train, settings.horizon)
    scaled = scaled_inputs(panel, scaler)
    model = model.to(device)
    result = fit(
        model,
        make_tensors(panel, scaler, model.spec, train, val, device),
        epochs=epochs,
        lr=lr,
        batch_size=settings.batch_size,
        patience=settings.patience,
        seed=settings.seed,
        freeze_lstm=freeze_encoder,
        keep_start=True,
        on_epoch=on_epoch,
    )
    summary = {
        "n_train": len(train),
        "n_val": len(val),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return _Fitted(model, scaler, scaled), summary


def _split(
    panel: PanelData, s: PanelModelConfig, tickers: tuple[str, ...], *, train_first: int, train_last: int,
    val_first: int, val_last: int, stride: int,
) -> tuple[Samples, Samples]:  # fmt: skip
    """Training and validation samples of `tickers` (decision rows, inclusive bounds)."""
    train = select_samples(panel, window=s.window, horizon=s.horizon, first_row=train_first,
                           last_row=train_last, stride=stride, tickers=tickers)  # fmt: skip
    # Every validation day: early stopping on a year of strided samples is too noisy to pick an epoch by.
    val = select_samples(panel, window=s.window, horizon=s.horizon, first_row=val_first, last_row=val_last,
                         tickers=tickers)  # fmt: skip
    return train, val


def _predict(fitted: _Fitted, panel: PanelData, samples: Samples) -> np.ndarray:
    windows = gather_windows(fitted.scaled, samples, fitted.model.spec.window)
    ids = fitted.model.spec.ticker_ids(panel.tickers)[samples.cols]
    return predict_z(fitted.model, windows, ids)


@dataclass
class GlobalRecipe:
    label: str
    settings: PanelModelConfig
    universe: tuple[str, ...] | None = None  # None: every ticker of the panel
    embed: bool = True
    fitted: _Fitted | None = None
    on_epoch: EpochCallback | None = None  # each epoch of each origin's fit, as it ends (job progress)

    def refit(self, panel: PanelData, *, train_last: int, val_first: int, val_last: int) -> dict[str, Any]:
        s = self.settings
        tickers = self.universe or panel.tickers
        train, val = _split(panel, s, tuple(tickers), train_first=0, train_last=train_last,
                            val_first=val_first, val_last=val_last, stride=s.stride)  # fmt: skip
        warm = self.fitted is not None
        if self.fitted is None:
            torch.manual_seed(s.seed)
            embed = s.embed if self.embed else 0
            model = VolQuantileLSTM(new_spec(s, panel.input_names, tuple(tickers), embed))
        else:
            model = self.fitted.model
        epochs = s.warm_epochs if warm else s.epochs
        self.fitted, summary = _train(
            model, panel, train, val, s, epochs=epochs, lr=s.lr, on_epoch=self.on_epoch
        )
        return {**summary, "warm_start": warm}

    def predict(self, panel: PanelData, samples: Samples) -> np.ndarray:
        assert self.fitted is not None, "refit before predict"
        return _predict(self.fitted, panel, samples)


def _by_ticker(panel: PanelData, samples: Samples, per_ticker: dict[str, _Fitted], horizon: int,
               levels: int) -> np.ndarray:  # fmt: skip
    out = np.full((len(samples), horizon, levels), np.nan)
    for ticker, fitted in per_ticker.items():
        mask = samples.cols == panel.column(ticker)
        if mask.any():
            out[mask] = _predict(fitted, panel, samples.subset(mask))
    return out


@dataclass
class PerTickerRecipe:
    label: str
    settings: PanelModelConfig
    days: int = 750
    fitted: dict[str, _Fitted] = field(default_factory=dict)

    def refit(self, panel: PanelData, *, train_last: int, val_first: int, val_last: int) -> dict[str, Any]:
        s = self.settings
        summaries = []
        for ticker in panel.tickers:
            first = train_last - self.days
            train, val = _split(panel, s, (ticker,), train_first=first, train_last=train_last,
                                val_first=val_first, val_last=val_last, stride=1)  # fmt: skip
            if len(train) < 100 or len(val) < 20:
                self.fitted.pop(ticker, None)
                continue
            # From scratch at every origin: a warm start carried every earlier year into a model that stands
            # for "750 days of one ticker" (on the synthetic factor panel of tests/test_evaluation.py it
            # had +0.41 % skill where the same model trained from scratch has +0.27 %).
            torch.manual_seed(s.seed)
            model = VolQuantileLSTM(new_spec(s, panel.input_names, (ticker,), 0))
            self.fitted[ticker], summary = _train(model, panel, train, val, s, epochs=s.epochs, lr=s.lr)
            summaries.append(summary)
        return _pooled(summaries)

    def predict(self, panel: PanelData, samples: Samples) -> np.ndarray:
        return _by_ticker(panel, samples, self.fitted, self.settings.horizon, len(self.settings.levels))


@dataclass
class ChildRecipe:
    label: str
    parent: GlobalRecipe  # refit earlier at the same origin (it comes first in the recipe list)
    strategy: str = "fine_tune"  # or "freeze"
    fitted: dict[str, _Fitted] = field(default_factory=dict)

    def refit(self, panel: PanelData, *, train_last: int, val_first: int, val_last: int) -> dict[str, Any]:
        assert self.parent.fitted is not None, "the parent recipe refits first"
        s = self.parent.settings
        summaries = []
        for ticker in panel.tickers:
            train, val = _split(panel, s, (ticker,), train_first=0, train_last=train_last,
                                val_first=val_first, val_last=val_last, stride=s.stride)  # fmt: skip
            if len(train) < 100 or len(val) < 20:
                continue
            parent = self.parent.fitted.model
            model = from_parent(parent, child_spec(parent.spec, ticker), self.strategy)
            freeze = self.strategy == "freeze"
            lr = learning_rate(self.strategy, s.lr)
            # The parent's input statistics: a child reads its inputs the way its encoder learnt them.
            self.fitted[ticker], summary = _train(
                model, panel, train, val, s, epochs=s.warm_epochs, lr=lr, freeze_encoder=freeze,
                scaler=self.parent.fitted.scaler,
            )  # fmt: skip
            summaries.append(summary)
        return _pooled(summaries)

    def predict(self, panel: PanelData, samples: Samples) -> np.ndarray:
        s = self.parent.settings
        return _by_ticker(panel, samples, self.fitted, s.horizon, len(s.levels))


def _pooled(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    if not summaries:
        return {"models": 0}
    return {
        "models": len(summaries),
        "n_train": int(sum(r["n_train"] for r in summaries)),
        "epochs_run": float(np.mean([r["epochs_run"] for r in summaries])),
        "seconds": round(float(sum(r["seconds"] for r in summaries)), 3),
    }
