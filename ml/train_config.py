"""What a training is asked to do (`TrainConfig`) and how its caller follows and steers it (`TrainHooks`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any

from ml.backtest import BacktestConfig
from ml.errors import InvalidInput
from ml.loop import EpochCallback, StopCallback


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    patience: int = 5
    seed: int = 1337
    history_days: int | None = None  # train on only the last N calendar days of the data
    window: int = 60
    horizon: int = 7
    device: str | None = None  # None: CUDA when available, else CPU
    until: date | None = None  # ignore data after this date (lets a parent stop before a child's period)
    # Set: evaluate by walk-forward, then refit the served model on all the data (see the module doc).
    backtest: BacktestConfig | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", _int_in(self.epochs, 1, 500), "an integer in 1..500"),
            ("lr", _float_in(self.lr, 1e-6, 1.0), "a number in [1e-6, 1]"),
            ("batch_size", _int_in(self.batch_size, 1, 4096), "an integer in 1..4096"),
            ("hidden", _int_in(self.hidden, 1, 1024), "an integer in 1..1024"),
            ("layers", _int_in(self.layers, 1, 8), "an integer in 1..8"),
            ("dropout", _float_in(self.dropout, 0.0, 0.9), "a number in [0, 0.9]"),
            ("patience", _int_in(self.patience, 1, 500), "an integer in 1..500"),
            ("seed", _int_in(self.seed, 0, 2**63 - 1), "a non-negative integer"),
            ("window", _int_in(self.window, 10, 250), "an integer in 10..250"),
            ("horizon", _int_in(self.horizon, 7, 30), "an integer in 7..30"),
        ]
        if self.history_days is not None:
            checks.append(("history_days", _int_in(self.history_days, 1, 100_000), "a positive integer"))
        if self.backtest is not None:
            checks.append(("backtest", isinstance(self.backtest, BacktestConfig), "a BacktestConfig"))
        if self.until is not None:
            checks.append(("until", isinstance(self.until, date), "a date"))
        for name, ok, expected in checks:
            if not ok:
                raise InvalidInput(f"{name} must be {expected}, got {getattr(self, name)!r}")


def _int_in(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _float_in(value: object, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


def _int_in(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _float_in(value: object, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


@dataclass(frozen=True)
class TrainHooks:
    """How a caller follows and steers a training; every field optional (a plain call trains to the end).

    `job_key` makes the training resumable and its side effects happen once: one MLflow run per
    (job_key, model), found again by a retry, which resumes from the run's checkpoint and registers no
    second version. `champion_lock(name)` serialises the champion decision and the alias move per model
    across processes (the caller brings the lock: ml knows no Redis).
    """

    on_epoch: EpochCallback | None = None
    should_stop: StopCallback | None = None  # cancel: raises Cancelled, nothing registered
    should_pause: StopCallback | None = None  # checkpoint, then raise Paused
    on_resume: Callable[[int], None] | None = None  # called with the checkpointed epoch
    job_key: str | None = None
    attempt: int | None = None  # tagged on the run: which delivery of the job last worked on it
    checkpoint_every_s: float = 0.0
    champion_lock: Callable[[str], AbstractContextManager[Any]] | None = None
