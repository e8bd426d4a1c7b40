"""The capacity model of bench/scale.py: what one training job costs, taken apart from a measured job, and
rebuilt for other settings (the epoch budget, patience, the samples a panel gives).

A training (ml/training/train.py) loads its panel, then runs two phases through one loop
(ml/training/loop.py), every epoch training on the phase's training samples and then evaluating its
validation samples:

    select  trains on n_train samples, evaluates the last val_days' n_val samples, stops early;
    refit   trains on all n_all samples for the selection's best epoch count, "evaluating" the same n_all
            (its validation set is its training set, so early stopping cannot fire);

then writes the card, registers the version and lets the champion rule decide. From one measured job (its
record: wall, result.history with each epoch's loop seconds and phase, progress; its card:
selection.samples [n_train, n_val], refit.samples n_all):

    c      seconds per trained sample per epoch (forward, backward, Adam step), and
    v      seconds per evaluated sample per epoch (a forward pass in inference mode): solved from the two
           phases' mean epoch, select = c n_train + v n_val and refit = (c + v) n_all. The phases mix
           trained and evaluated samples in different proportions, which is what tells c from v; where
           timing noise makes either negative (or the proportions are equal), one rate serves both (c = v,
           from every epoch's seconds over every sample it touched).
    delta  per-epoch wall beyond the loop (the checkpoint into MLflow, metrics, progress): the record's last
           progress.epoch_seconds minus the last refit epoch's loop seconds; 0 when the refit ran one
           epoch (its progress then spans the change of phase).
    F      fixed: the job's wall (started -> finished) minus every epoch's loop seconds and delta: the panel
           load, each phase's scaler, tensors and model, the MLflow run, card, registration and champion
           decision. Taken as constant, though the panel load and the tensors grow with the samples: at
           more samples than measured the model reads low by that much.

    seconds(job, best epoch b) = F + S(b) (c n_train + v n_val + delta) + b ((c + v) n_all + delta)

with S(b) = min(b + patience, E) selection epochs: early stopping fires `patience` epochs after the best one
(or the budget E ends the phase), and the refit runs exactly b. The bounds are b = 0 (the starting weights
won the selection, as they do for some children of the panel parent: `patience` selection epochs and no
refit) and b = E (every epoch run in both phases). A measured job without a refit epoch gives one rate
(c = v).
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
    c: float  # per trained sample per epoch
    v: float  # per evaluated sample per epoch
    delta: float  # per epoch beyond the loop
    fixed: float
    n_train: int
    n_val: int
    n_all: int
    select_epochs: int
    refit_epochs: int  # the selection's best epoch
    select_epoch_s: float  # the loop's mean selection epoch
    refit_epoch_s: float | None  # the loop's mean refit epoch; None: the refit ran none
    progress_epoch_s: float | None  # the record's last progress.epoch_seconds (a refit epoch)


def _rates(
    select_s: list[float], refit_s: list[float], n_train: int, n_val: int, n_all: int
) -> tuple[float, float]:
    """(c, v) from the phases' epochs (see the module's docstring)."""
    det = n_all * (n_train - n_val)
    if refit_s and det:
        s, r = statistics.fmean(select_s), statistics.fmean(refit_s)
        c, v = (s * n_all - n_val * r) / det, (n_train * r - n_all * s) / det
        if c > 0 and v >= 0:
            return c, v
    touched = len(select_s) * (n_train + n_val) + len(refit_s) * 2 * n_all
    rate = (sum(select_s) + sum(refit_s)) / touched
    return rate, rate


def decompose(record: dict[str, Any], card: dict[str, Any]) -> JobCost:
    history = record["result"]["history"]
    select = [h["seconds"] for h in history if h["phase"] == "select"]
    refit = [h["seconds"] for h in history if h["phase"] == "refit"]
    n_train, n_val = (int(n) for n in card["selection"]["samples"])
    n_all = int(card["refit"]["samples"])
    c, v = _rates(select, refit, n_train, n_val, n_all)
    progress = (record.get("progress") or {}).get("epoch_seconds")
    # A first refit epoch's progress counts from the last selection epoch, across the phase's set-up.
    if len(refit) < 2:
        progress = None
    delta = 0.0 if progress is None else max(0.0, progress - refit[-1])
    wall = record["finished_at"] - record["started_at"]
    return JobCost(
        wall=wall, c=c, v=v, delta=delta, fixed=wall - sum(select) - sum(refit) - len(history) * delta,
        n_train=n_train, n_val=n_val, n_all=n_all, select_epochs=len(select), refit_epochs=len(refit),
        select_epoch_s=statistics.fmean(select), refit_epoch_s=statistics.fmean(refit) if refit else None,
        progress_epoch_s=progress,
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
    """The settings a job is modelled at: a worker's (stockq/settings.py, workers/tasks.py) and the samples
    its data gives (ml/training/dataprep.py's phase_samples)."""

    epochs: int  # the selection's budget E (STOCKQ_DEFAULT_EPOCHS for a worker's training)
    patience: int  # early stopping (ml.config.PanelModelConfig)
    n_train: int
    n_val: int
    n_all: int


def job_seconds(cost: JobCost, target: Target, best_epoch: int) -> float:
    """One job whose selection found its best epoch at `best_epoch`."""
    select_epochs = min(best_epoch + target.patience, target.epochs)
    select = cost.c * target.n_train + cost.v * target.n_val + cost.delta
    refit = (cost.c + cost.v) * target.n_all + cost.delta
    return cost.fixed + select_epochs * select + best_epoch * refit


def bounds(cost: JobCost, target: Target) -> dict[str, float]:
    """Seconds per job with the fewest epochs early stopping allows, and with every epoch run."""
    return {"low_s": job_seconds(cost, target, 0), "high_s": job_seconds(cost, target, target.epochs)}


def per_hour(seconds: float) -> float:
    return 3600.0 / seconds


def workers_for(tickers: int, seconds_per_job: float, window_h: float) -> int:
    """Worker processes (each one core with one torch thread, on CPU) that finish `tickers` trainings
    within `window_h`, if each keeps its measured one-worker throughput."""
    return math.ceil(tickers * seconds_per_job / (window_h * 3600))
