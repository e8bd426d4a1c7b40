"""How a model to evaluate is made: a fresh module per training, its learning rate, and its parent.

The backtest trains one model per origin, so it takes a recipe rather than a model. `strategy_recipe`
builds ml.training.train's three strategies; anything else (another architecture, a different init) is a
Recipe with its own `build`. A recipe that starts from a parent's weights names the parent, so the backtest
can check that the parent never trained on the evaluation period.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from ml.model.lstm import ModelSpec, QuantileLSTM
from ml.model.scaler import Scaler

STRATEGIES = ("freeze", "fine_tune", "scratch")
# Fine-tuning starts from weights that already fit: a full learning rate would mostly undo the transfer.
FINE_TUNE_LR_FACTOR = 0.1


@dataclass(frozen=True)
class ParentModel:
    model: QuantileLSTM
    scaler: Scaler
    trained_until: date  # the date of the last training target it saw
    label: str  # e.g. "stockq-parent v3", for the card


@dataclass(frozen=True)
class Recipe:
    """How one origin's model is made: `build` returns a fresh module (random, or a copy of the parent)."""

    build: Callable[[], QuantileLSTM]
    lr: float
    freeze_lstm: bool = False
    parent: ParentModel | None = None  # set whenever `build` starts from a parent's weights
    label: str = "scratch"


def strategy_recipe(strategy: str, spec: ModelSpec, lr: float, parent: ParentModel | None = None) -> Recipe:
    """The recipes of ml.training.train's strategies: scratch (random init), freeze (parent LSTM fixed),
    fine_tune (all layers from the parent at a tenth of the learning rate)."""
    if (strategy == "scratch") != (parent is None):
        raise ValueError("scratch takes no parent; freeze and fine_tune need one")

    def build() -> QuantileLSTM:
        model = QuantileLSTM(parent.model.spec if parent else spec)
        if parent is not None:
            model.load_state_dict(parent.model.state_dict())
        if strategy == "freeze":
            model.lstm.requires_grad_(False)
        return model

    factor = FINE_TUNE_LR_FACTOR if strategy == "fine_tune" else 1.0
    return Recipe(build, lr * factor, strategy == "freeze", parent, strategy)
