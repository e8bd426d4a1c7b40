"""How each registered model starts: the global parent and the per-ticker scratch model from random
weights, the children from the parent champion's weights.

- freeze: only the ticker's embedding row and the head learn (the encoder and trunk are fixed; the other
  embedding rows get no gradient, so Adam leaves them exactly as they were).
- fine_tune: everything learns, at a tenth of the learning rate.
- scratch: a per-ticker model with no embedding (the design's baseline).
A ticker outside the parent's universe gets a new embedding row, initialised at the mean of the others:
the parent's answer for an unknown ticker is where the child starts.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ml.config import PanelModelConfig
from ml.model.vol_lstm import VolQuantileLSTM, VolSpec

STRATEGIES = ("freeze", "fine_tune", "scratch")
# Fine-tuning starts from weights that already fit: a full learning rate would mostly undo the transfer.
FINE_TUNE_LR_FACTOR = 0.1
# The evaluation recipe (ml.evaluation.neural) whose latest evaluation a model's card quotes.
PARENT_RECIPE = "global"
RECIPES = {"freeze": "child_freeze", "fine_tune": "child_fine_tune", "scratch": "per_ticker"}


def recipe_of(strategy: str | None) -> str:
    return PARENT_RECIPE if strategy is None else RECIPES[strategy]


def new_spec(
    config: PanelModelConfig, inputs: tuple[str, ...], tickers: tuple[str, ...], embed: int
) -> VolSpec:
    return VolSpec(
        inputs=inputs, tickers=tickers, hidden=config.hidden, layers=config.layers, embed=embed,
        dropout=config.dropout, window=config.window, horizon=config.horizon, drift=config.drift,
        levels=config.levels,
    )  # fmt: skip


def child_spec(parent: VolSpec, ticker: str) -> VolSpec:
    """The parent's spec, with a row for `ticker` when the parent's universe lacks it."""
    return parent if ticker in parent.tickers else replace(parent, tickers=(*parent.tickers, ticker))


def from_parent(parent: VolQuantileLSTM, spec: VolSpec, strategy: str) -> VolQuantileLSTM:
    """A copy of the parent's weights under `spec` (a new embedding row at the mean of the others), set up
    for `strategy`."""
    state = {k: v.detach().clone() for k, v in parent.state_dict().items()}
    grown = len(spec.tickers) - len(parent.spec.tickers)
    if grown and spec.embed:
        rows = state["embedding.weight"]
        state["embedding.weight"] = torch.cat([rows, rows[1:].mean(dim=0, keepdim=True).expand(grown, -1)])
    model = VolQuantileLSTM(spec)
    model.load_state_dict(state)
    if strategy == "freeze":
        model.lstm.requires_grad_(False)
        model.trunk.requires_grad_(False)
    return model


def learning_rate(strategy: str | None, lr: float) -> float:
    return lr * FINE_TUNE_LR_FACTOR if strategy == "fine_tune" else lr
