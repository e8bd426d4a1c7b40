"""What one training is for: the model it registers, its kind, ticker, strategy and parent.

Apart from ml.training.train so that registration (ml.registry.registration) reads it without importing
the training entry points that call registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.registry.mlflow_registry import LoadedModel


@dataclass(frozen=True)
class TrainingJob:
    name: str
    kind: str  # "parent" | "child"
    ticker: str
    strategy: str | None
    parent: LoadedModel | None  # the parent champion a freeze / fine_tune child starts from
