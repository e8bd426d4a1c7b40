"""Data preparation for a registered training: the stored closes -> a panel (ml.training.panel) -> the two
sample sets of its phases, and tensors for the loop.

The selection phase trains on the decisions before the last `val_days` (purged by the horizon: no
training target reaches into them) and stops early on those last days; the refit trains on every decision
with a known target for the epoch count the selection chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ml.errors import FeaturesMissing, InsufficientHistory
from ml.model.scaler import Scaler
from ml.model.vol_lstm import VolSpec
from ml.tickers import INDEX_TICKER
from ml.training.panel import (
    PanelData,
    Samples,
    build_panel,
    fit_input_scaler,
    panel_tensors,
    scaled_inputs,
    select_samples,
)

if TYPE_CHECKING:  # the store arrives as an argument: data preparation imports no Feast
    from ml.features.store import FeatureStore

MIN_TRAIN_SAMPLES = 40
MIN_VAL_SAMPLES = 10


@dataclass(frozen=True)
class Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    # Ticker ids for a model with an embedding (ml.model.vol_lstm); None for a model that takes none.
    ids_train: torch.Tensor | None = None
    ids_val: torch.Tensor | None = None


def load_panel(
    store: FeatureStore, tickers: list[str], *, until: date | None, inputs: tuple[str, ...] | None = None
) -> PanelData:
    """The stored closes of `tickers` and ^GSPC (up to `until`) as a panel on ^GSPC's calendar.

    A ticker without data before `until` is left out; the market never is (every input reads it).
    """
    closes: dict[str, pd.Series] = {}
    for ticker in sorted({*tickers, INDEX_TICKER}):
        try:
            closes[ticker] = store.training_frame(ticker, end=until)["close"]
        except FeaturesMissing:
            if ticker == INDEX_TICKER or len(tickers) == 1:
                raise
    return build_panel(closes) if inputs is None else build_panel(closes, inputs=inputs)


@dataclass(frozen=True)
class PhaseSamples:
    train: Samples  # selection phase: decisions up to the purge before the validation days
    val: Samples  # the last val_days decisions with a known target
    all: Samples  # the refit: every decision with a known target

    def ranges(self, panel: PanelData) -> dict[str, list[str]]:
        return {
            name: _span(panel, s) for name, s in (("train", self.train), ("val", self.val), ("all", self.all))
        }


def _span(panel: PanelData, samples: Samples) -> list[str]:
    rows = samples.rows
    return [panel.dates[rows.min()].date().isoformat(), panel.dates[rows.max()].date().isoformat()]


def phase_samples(
    panel: PanelData,
    spec: VolSpec,
    *,
    tickers: tuple[str, ...],
    stride: int,
    val_days: int,
    history_days: int | None = None,
) -> PhaseSamples:
    """The selection's train / val samples and the refit's, for `tickers` of the panel."""
    horizon, window = spec.horizon, spec.window
    last = len(panel.dates) - 1 - horizon  # the last decision whose target is known
    first = 0
    if history_days is not None:
        first = panel.date_row(panel.dates[-1] - pd.Timedelta(days=history_days))
    val_first = last - val_days + 1
    pick = {"window": window, "horizon": horizon, "stride": stride, "tickers": tickers}
    samples = PhaseSamples(
        train=select_samples(panel, first_row=first, last_row=val_first - horizon - 1, **pick),
        val=select_samples(panel, first_row=val_first, last_row=last, **pick),
        all=select_samples(panel, first_row=first, last_row=last, **pick),
    )
    if len(samples.train) < MIN_TRAIN_SAMPLES or len(samples.val) < MIN_VAL_SAMPLES:
        limit = f" in the last {history_days} days" if history_days else ""
        raise InsufficientHistory(
            f"{', '.join(tickers)}: {len(samples.train)} training and {len(samples.val)} validation samples"
            f"{limit} (window {window}, horizon {horizon}, {val_days} validation days); need at least "
            f"{MIN_TRAIN_SAMPLES} and {MIN_VAL_SAMPLES}: ingest a longer history"
        )
    return samples


def make_tensors(
    panel: PanelData, scaler: Scaler, spec: VolSpec, train: Samples, val: Samples, device: torch.device
) -> Tensors:
    """Windows, z targets and embedding rows of two sample sets, read through `scaler`."""
    scaled = scaled_inputs(panel, scaler)
    ids = spec.ticker_ids(panel.tickers)
    parts = [
        panel_tensors(
            panel, scaled, s, window=spec.window, horizon=spec.horizon, ticker_ids=ids, device=device
        )
        for s in (train, val)
    ]
    return Tensors(parts[0].x, parts[0].y, parts[1].x, parts[1].y, parts[0].ids, parts[1].ids)


@dataclass(frozen=True)
class Plan:
    """What one training reads and how its model starts."""

    panel: PanelData
    spec: VolSpec
    samples: PhaseSamples
    universe: str
    lr: float
    scaler: Scaler | None  # a child's: the parent's statistics (its encoder learnt them); None: fit here

    def scaler_for(self, samples: Samples) -> Scaler:
        return self.scaler or fit_input_scaler(self.panel, samples, self.spec.horizon)
