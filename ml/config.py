"""What a training is asked to do (`TrainConfig`, with its `PanelModelConfig`), what an evaluation is
(`EvaluationConfig`), and how a caller follows and steers a training (`TrainHooks`).

The bottom of the ML package: it imports no other ml module but ml.errors, so training, evaluation and
registration can all import it without a cycle. The configs are frozen pydantic models, validated on
construction (strict: no bool, float or string where an integer is asked for); a bad value raises
InvalidInput naming the field, as every caller and the API's error mapping expect.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from ml.errors import InvalidInput

EpochCallback = Callable[[int, int, float, float], None]
StopCallback = Callable[[], bool]


class _Config(BaseModel):
    """Frozen, strict and closed; `with_` is `dataclasses.replace` that validates the result again."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    _label: ClassVar[str] = ""  # prefixes the field in error messages

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInput(type(self)._message(exc)) from None

    def with_(self, **changes: Any) -> Self:
        # dict(self) keeps a nested config as the instance it is (model_dump would make it a dict).
        return type(self)(**{**dict(self), **changes})

    @classmethod
    def _message(cls, exc: ValidationError) -> str:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "config"
        field = cls.model_fields.get(name)
        if field is None:
            return f"{cls._label}{name}: unknown field"
        return f"{cls._label}{name} must be {_expected(field)}, got {error['input']!r}"


def _expected(field: FieldInfo) -> str:
    lo = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    hi = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(field.annotation)))
    kind = next(t for t in get_args(field.annotation) or (field.annotation,) if t is not type(None))
    if kind is int:
        return "an integer" if lo is None else f"an integer in {lo}..{hi}"
    if kind is float:
        return f"a number in [{lo:g}, {hi:g}]"
    return {date: "a date", str: "a string"}.get(kind, f"a {getattr(kind, '__name__', kind)}")


LEVELS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)  # the quantile levels every forecaster emits


class PanelModelConfig(_Config):
    """The volatility-scaled global model (ml.model.vol_lstm) and how each of its refits trains."""

    _label: ClassVar[str] = "model "

    window: int = Field(20, ge=5, le=250)
    horizon: int = Field(7, ge=1, le=30)
    hidden: int = Field(32, ge=1, le=1024)
    layers: int = Field(1, ge=1, le=8)
    embed: int = Field(4, ge=0, le=64)  # 0: no ticker embedding
    dropout: float = Field(0.1, ge=0.0, le=0.9)
    drift: bool = False  # a median head; off: the median is zero (the mean is barely forecastable)
    stride: int = Field(4, ge=1, le=50)  # every stride-th decision day of each ticker is a training sample
    epochs: int = Field(30, ge=1, le=500)  # a model trained from scratch
    warm_epochs: int = Field(8, ge=1, le=500)  # a refit starting from the previous weights
    patience: int = Field(2, ge=1, le=500)
    # Small steps: at 1e-3 the validation loss turned up after the second epoch (the panel's noise is learnt
    # faster than its signal); 1e-4 gave the best walk-forward skill of 1e-3, 3e-4 and 1e-4 (bench/skill.py).
    lr: float = Field(1e-4, ge=1e-6, le=1.0)
    batch_size: int = Field(512, ge=1, le=65536)
    seed: int = Field(1337, ge=0, le=2**63 - 1)
    device: str | None = None  # None: CUDA when available, else CPU
    levels: tuple[float, ...] = LEVELS


class EvaluationConfig(_Config):
    """The walk-forward over years (ml.evaluation.walk_forward) and its statistics."""

    _label: ClassVar[str] = "evaluation "

    first_year: int = Field(2005, ge=1900, le=2100)
    refit_months: int = Field(12, ge=1, le=60)
    val_days: int = Field(252, ge=20, le=2520)
    universe: Literal["panel", "gspc"] = "panel"
    model: PanelModelConfig = PanelModelConfig()
    bootstrap_reps: int = Field(1000, ge=50, le=100_000)
    seed: int = Field(1337, ge=0, le=2**63 - 1)

    @property
    def horizon(self) -> int:
        return self.model.horizon

    @property
    def window(self) -> int:
        return self.model.window

    @property
    def levels(self) -> tuple[float, ...]:
        return self.model.levels


class TrainConfig(_Config):
    """A registered training (ml.training.train): the model and how its data is chosen.

    The served model is refit on all the data for the epoch count that early stopping chose on the last
    `val_days` decision days; its evaluation is a separate job (EvaluationConfig).
    """

    model: PanelModelConfig = PanelModelConfig()
    universe: Literal["panel", "gspc"] = "panel"  # the parent: every ingested ticker, or ^GSPC alone
    val_days: int = Field(252, ge=20, le=2520)
    # Children only: train on the last N calendar days of the ticker's data.
    history_days: int | None = Field(None, ge=1, le=100_000)
    until: date | None = None  # ignore data after this date


@dataclass(frozen=True)
class TrainHooks:
    """How a caller follows and steers a training; every field optional (a plain call trains to the end).

    `job_key` makes the training resumable and its side effects happen once: one MLflow run per
    (job_key, model), found again by a retry, which resumes from the run's checkpoint and registers no
    second version. `champion_lock(name)` serialises the champion decision and the alias move per model
    across processes (the caller brings the lock: ml knows no Redis).
    """

    on_epoch: EpochCallback | None = None  # each phase counts its own epochs from 1 (see on_phase)
    # Called as each phase of a training starts, with its epoch count: "select" (early stopping on the
    # last val_days; the epochs asked) and "refit" (every sample; the epochs the selection chose, maybe 0).
    on_phase: Callable[[str, int], None] | None = None
    should_stop: StopCallback | None = None  # cancel: raises Cancelled, nothing registered
    should_pause: StopCallback | None = None  # checkpoint, then raise Paused
    on_resume: Callable[[int], None] | None = None  # called with the checkpointed epoch
    job_key: str | None = None
    attempt: int | None = None  # tagged on the run: which delivery of the job last worked on it
    checkpoint_every_s: float = 0.0
    champion_lock: Callable[[str], AbstractContextManager[Any]] | None = None
