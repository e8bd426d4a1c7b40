"""The capacity model of bench/scale.py: what one training job costs, taken apart from a measured job, and
rebuilt for other settings (epochs, walk-forward origins, bootstrap reps, rows of history).

A worker training runs a walk-forward backtest first (ml/evaluation/backtest.py: K origins, each a fresh model
trained on the rows known at that origin, then baselines, CQR and forecasts), compares the pooled windows
(block bootstrap), then refits the served model on every row for the backtest's median best epoch
(ml/training/train.py), checkpointing each epoch, and registers it. From one measured job (its record and its
model card):

    c      seconds per training row per epoch: the refit loop's seconds / (refit epochs x refit rows). The
           refit also evaluates on all its rows, an origin only on its validation rows, so an origin's
           epoch, taken as c x its training rows, is slightly overstated (the model errs high).
    delta  the refit's per-epoch wall beyond the loop (checkpoint into MLflow, progress): the record's last
           progress.epoch_seconds minus that epoch's loop seconds (0 when the refit ran one epoch).
    o      per-origin overhead: an origin's seconds minus its epochs x c x its training rows (baselines,
           CQR, forecasts, model build), averaged, and taken as the same at any rows: its largest part,
           the linear quantile regression baseline, fits at most MAX_QR_ROWS (2000) rows by IRLS and
           costs about the same from a few hundred rows up.
    B      the comparison after the origins: backtest seconds minus the origins' sum; scaled linearly by
           bootstrap reps x evaluation windows (K x step).
    P      a backtest parent trained inside a child's job (ml/training/train.py trains one, with until = the
           child's cutoff and a holdout split, unless a registered one stopped learning within a year before
           the cutoff): its MLflow run's wall, modelled as a holdout training, P = Fp + E_p x c_parent x
           its training rows, Fp taken from the measured one.
    F      fixed: the job's wall (started -> finished) minus backtest, refit loop, refit epochs x delta and
           P (data load, MLflow run, card, registration, champion decision).

    seconds(job) = F + E_refit x (c x n + delta) + sum_k (E_k x c x n_train_k + o) + B' [+ P']

Epochs are bounded by the rules, not guessed: each origin (and a backtest parent) runs between
min(patience + 1, E) (early stopping can fire no sooner) and E epochs; the refit between 1 and E. The
model gives both bounds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class JobCost:
    """One measured training job taken apart (seconds)."""

    wall: float
    c: float  # per training row per epoch
    delta: float  # per refit epoch beyond the loop
    origin_overhead: float
    compare: float
    fixed: float
    reps: int
    windows: int  # K x step of the measured backtest
    refit_rows: int
    refit_epochs: int
    refit_epoch_s: float  # the loop's mean refit epoch
    progress_epoch_s: float | None  # the record's last progress.epoch_seconds
    backtest_parent: float = 0.0  # a backtest parent trained inside this job (its MLflow run's wall)


@dataclass(frozen=True)
class Holdout:
    """A training on one holdout split (a backtest parent): fixed + epochs x c x training rows."""

    fixed: float
    c: float

    @classmethod
    def measured(cls, wall: float, epochs: float, rows: float, c: float) -> Holdout:
        return cls(wall - epochs * c * rows, c)

    def seconds(self, epochs: int, rows: int) -> float:
        return self.fixed + epochs * self.c * rows


def decompose(record: dict[str, Any], card: dict[str, Any], backtest_parent: float = 0.0) -> JobCost:
    result = record["result"]
    history = result["history"]
    loop = sum(h["seconds"] for h in history)
    rows = int(card["refit"]["samples"])
    c = loop / (len(history) * rows)
    progress = (record.get("progress") or {}).get("epoch_seconds")
    # Epoch 1's progress counts from the start of the training stage: only a later epoch is one epoch's wall.
    if len(history) < 2:
        progress = None
    delta = 0.0 if progress is None else max(0.0, progress - history[-1]["seconds"])
    backtest = card["backtest"]
    origins = backtest["origins"]
    overhead = statistics.fmean(o["seconds"] - o["epochs_run"] * c * o["n_train"] for o in origins)
    compare = max(0.0, result["backtest_seconds"] - sum(o["seconds"] for o in origins))
    wall = record["finished_at"] - record["started_at"]
    config = backtest["config"]
    return JobCost(
        wall=wall, c=c, delta=delta, origin_overhead=overhead, compare=compare,
        fixed=wall - result["backtest_seconds"] - loop - len(history) * delta - backtest_parent,
        reps=int(config["bootstrap_reps"]), windows=int(config["origins"]) * int(config["step"]),
        refit_rows=rows, refit_epochs=len(history), refit_epoch_s=loop / len(history),
        progress_epoch_s=progress, backtest_parent=backtest_parent,
    )  # fmt: skip


def mean_cost(costs: list[JobCost]) -> JobCost:
    """The field-wise mean of several jobs of one kind (counts rounded)."""
    fields = asdict(costs[0])
    mean: dict[str, Any] = {}
    for name, first in fields.items():
        values = [getattr(c, name) for c in costs if getattr(c, name) is not None]
        if not values:
            mean[name] = None
        elif isinstance(first, int):
            mean[name] = round(statistics.fmean(values))
        else:
            mean[name] = statistics.fmean(values)
    return JobCost(**mean)


@dataclass(frozen=True)
class Target:
    """The settings a job is modelled at: a worker's (ml/settings.py) and the rows its data gives."""

    epochs: int  # the training's epoch budget (STOCKQ_DEFAULT_EPOCHS for a nightly retrain)
    backtest_epochs: int  # min(STOCKQ_BACKTEST_EPOCHS, epochs)
    patience: int  # early stopping (ml.config.BacktestConfig)
    step: int
    reps: int
    rows: int  # the refit's rows (every sample with a known target)
    origin_rows: list[int]  # each origin's training rows (ml.evaluation.backtest.origin_splits)
    backtest_parent_rows: int | None = None  # training rows of a backtest parent trained in every job


def job_seconds(cost: JobCost, target: Target, origin_epochs: int, refit_epochs: int,
                holdout: Holdout | None = None, parent_epochs: int = 0) -> float:  # fmt: skip
    windows = len(target.origin_rows) * target.step
    compare = cost.compare * (target.reps / cost.reps) * (windows / cost.windows)
    origins = sum(origin_epochs * cost.c * n + cost.origin_overhead for n in target.origin_rows)
    own = cost.fixed + refit_epochs * (cost.c * target.rows + cost.delta) + origins + compare
    if holdout is None or target.backtest_parent_rows is None:
        return own
    return own + holdout.seconds(parent_epochs, target.backtest_parent_rows)


def bounds(cost: JobCost, target: Target, holdout: Holdout | None = None) -> dict[str, float]:
    """Seconds per job with the fewest epochs early stopping allows, and with every epoch run."""
    e, fewest = target.backtest_epochs, min(target.patience + 1, target.backtest_epochs)
    return {
        "low_s": job_seconds(cost, target, fewest, 1, holdout, min(target.patience + 1, target.epochs)),
        "high_s": job_seconds(cost, target, e, e, holdout, target.epochs),
    }


def per_hour(seconds: float) -> float:
    return 3600.0 / seconds


def workers_for(tickers: int, seconds_per_job: float, window_h: float) -> int:
    """Worker processes (each one core with one torch thread, on CPU) that finish `tickers` trainings
    within `window_h`, if each keeps its measured one-worker throughput."""
    return math.ceil(tickers * seconds_per_job / (window_h * 3600))
