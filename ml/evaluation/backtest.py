"""Expanding-window, purged walk-forward backtest of one model recipe against the baselines.

K origins, `step` samples apart, over the most recent samples of a Dataset. At origin o (a decision day),
everything the recipe and the baselines learn has its target known by then:

    [ train ............ ] purge [ val ] purge | eval: o .. o + step - 1 | next origin ...

with purge = horizon samples, as in ml.training.dataprep.chronological_split, so no training or validation
label overlaps another split's labels. Each origin fits its own scaler on its training rows, trains a fresh
model with the project's one loop (ml.training.loop.fit: early stopping on val), calibrates its band with CQR
on val, and forecasts the eval windows; the baselines learn from every sample known at the origin. The eval
windows of consecutive origins are adjacent, so the pooled series is every day of the last K * step.

A recipe that starts from a parent (freeze / fine_tune) names it, and the parent must have stopped
learning before the first origin minus the purge: checked here against its `trained_until` (the date of
its last training target), never assumed. The parent is also scored "as is" as one more baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import torch

from ml.config import BacktestConfig, StopCallback
from ml.errors import InsufficientHistory, InvalidInput, ParentOverlap
from ml.evaluation.baselines import baseline_forecasts
from ml.evaluation.calibration import apply_cqr, fit_cqr
from ml.evaluation.compare import compare
from ml.evaluation.scoring import naive_scale, pinball_losses, score
from ml.model.lstm import predict_log_returns
from ml.training.dataprep import (
    MIN_EVAL_SAMPLES,
    MIN_TRAIN_SAMPLES,
    Dataset,
    Split,
    fit_scaler,
    make_tensors,
)
from ml.training.loop import fit, resolve_device
from ml.training.recipes import ParentModel, Recipe

CANDIDATES = ("model_cqr", "model")  # what is served (calibrated) first: the verdict is about it
WINDOW_LOSSES = ("model_cqr", "zero_ewma")  # the served band, and the random walk a champion must beat
_ORIGIN_KEYS = ("pinball", "crps", "mae", "mase", "rel_mae_zero", "direction_accuracy", "coverage_80")


def origin_splits(n_samples: int, horizon: int, config: BacktestConfig) -> list[Split]:
    """One Split per origin; `test` is that origin's eval windows."""
    splits = []
    for k in range(config.origins):
        origin = n_samples - config.step * (config.origins - k)
        available = origin - 2 * horizon
        n_val = max(MIN_EVAL_SAMPLES, round(available * config.val_fraction))
        n_train = available - n_val
        if n_train < MIN_TRAIN_SAMPLES:
            raise InsufficientHistory(
                f"{n_samples} samples leave {max(n_train, 0)} for training at origin {k + 1} of "
                f"{config.origins} (every {config.step} days): need {MIN_TRAIN_SAMPLES}; use fewer origins"
            )
        val_start = n_train + horizon
        splits.append(
            Split(
                slice(0, n_train),
                slice(val_start, val_start + n_val),
                slice(origin, origin + config.step),
                horizon,
            )
        )
    return splits


def parent_cutoff(data: Dataset, splits: list[Split]) -> date:
    """The last date a parent may have trained on: the day before the first origin minus the purge."""
    first_decision_row = splits[0].test.start + data.window - 1
    return data.dates[first_decision_row - splits[0].purge - 1].date()


def check_parent(parent: ParentModel, data: Dataset, splits: list[Split]) -> None:
    cutoff = parent_cutoff(data, splits)
    if parent.trained_until > cutoff:
        first = data.sample_date(splits[0].test.start)
        raise ParentOverlap(
            f"{parent.label} trained until {parent.trained_until.isoformat()}, past {cutoff.isoformat()}: "
            f"the {data.ticker} backtest's first origin is {first} and the parent must stop learning "
            f"{splits[0].purge} trading days before it; train a parent with until={cutoff.isoformat()}"
        )


def _target_date(data: Dataset, sample: int) -> str:
    return data.dates[sample + data.window - 1 + data.targets.shape[1]].date().isoformat()


@dataclass(frozen=True)
class _OriginRun:
    summary: dict[str, Any]  # JSON-safe, for the card
    forecasts: dict[str, np.ndarray]  # name -> (n_eval, horizon, 3)
    y: np.ndarray  # (n_eval, horizon)
    mase_scale: np.ndarray  # (horizon,)


def _origin(
    data: Dataset,
    split: Split,
    recipe: Recipe,
    config: BacktestConfig,
    device: torch.device,
    should_stop: StopCallback | None,
) -> _OriginRun:
    started = time.perf_counter()
    scaler = fit_scaler(data, split)
    torch.manual_seed(config.seed)
    model = recipe.build().to(device)
    fitted = fit(
        model,
        make_tensors(data, split, scaler, device),
        epochs=config.epochs,
        lr=recipe.lr,
        batch_size=config.batch_size,
        patience=config.patience,
        seed=config.seed,
        freeze_lstm=recipe.freeze_lstm,
        should_stop=should_stop,
    )
    calibration = fit_cqr(
        data.targets[split.val], predict_log_returns(model, scaler, data.windows[split.val])
    )
    raw = predict_log_returns(model, scaler, data.windows[split.test])
    known = slice(0, split.val.stop)  # every sample whose target is known at the origin
    forecasts = {
        "model_cqr": apply_cqr(raw, calibration),
        "model": raw,
        **baseline_forecasts(
            data.features,
            data.windows,
            data.targets,
            scaler,
            train=known,
            evaluate=split.test,
            window=data.window,
            max_rows=config.max_qr_rows,
        ),
    }
    if recipe.parent is not None:
        forecasts["parent"] = predict_log_returns(
            recipe.parent.model, recipe.parent.scaler, data.windows[split.test]
        )
    scale = naive_scale(data.targets[split.train])
    y = data.targets[split.test]
    best_epoch = min(fitted.history, key=lambda row: row["val_loss"])["epoch"]
    summary = {
        "origin": data.sample_date(split.test.start),
        "train": [data.sample_date(split.train.start), data.sample_date(split.train.stop - 1)],
        "val": [data.sample_date(split.val.start), data.sample_date(split.val.stop - 1)],
        "eval": [data.sample_date(split.test.start), data.sample_date(split.test.stop - 1)],
        "trained_until": _target_date(data, split.val.stop - 1),
        "n_train": split.train.stop,
        "n_val": split.val.stop - split.val.start,
        "n_eval": len(y),
        "epochs_run": fitted.epochs_run,
        "best_epoch": int(best_epoch),
        "best_val_loss": fitted.best_val_loss,
        "calibration": calibration,
        "seconds": round(time.perf_counter() - started, 3),
        "metrics": {
            name: {k: v for k, v in score(y, q, mase_scale=scale).items() if k in _ORIGIN_KEYS}
            for name, q in forecasts.items()
        },
    }
    return _OriginRun(summary, forecasts, y, scale)


def walk_forward(
    data: Dataset,
    recipe: Recipe,
    config: BacktestConfig | None = None,
    *,
    device: str | None = None,
    should_stop: StopCallback | None = None,
    on_origin: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train and score `recipe` at every origin; pooled metrics, skill and calibration of all windows.

    on_origin(k, K) is called after origin k of K (1-based) for progress. Raises ParentOverlap for a parent
    that trained into the evaluation period, InsufficientHistory if the first origin leaves too little to
    train on, Cancelled (from fit) when should_stop says so.
    """
    config = config or BacktestConfig()
    started = time.perf_counter()
    horizon = data.targets.shape[1]
    if config.origins * config.step < 2 * horizon + 2:
        raise InvalidInput(
            f"{config.origins} origins x {config.step} windows are too few to test at horizon {horizon}: "
            f"need at least {2 * horizon + 2} evaluation windows"
        )
    splits = origin_splits(len(data.targets), horizon, config)
    if recipe.parent is not None:
        check_parent(recipe.parent, data, splits)
    torch_device = resolve_device(device)
    runs = []
    for k, split in enumerate(splits, start=1):
        runs.append(_origin(data, split, recipe, config, torch_device, should_stop))
        if on_origin is not None:
            on_origin(k, len(splits))
    origins = [run.summary for run in runs]
    y = np.concatenate([run.y for run in runs])
    forecasts = {name: np.concatenate([run.forecasts[name] for run in runs]) for name in runs[0].forecasts}
    result = compare(
        y,
        forecasts,
        candidates=CANDIDATES,
        reference="zero_ewma",
        mase_scale=np.mean([run.mase_scale for run in runs], axis=0),
        reps=config.bootstrap_reps,
        seed=config.seed,
    )
    metrics = result["metrics"]
    dates = [data.sample_date(i) for split in splits for i in range(split.test.start, split.test.stop)]
    return {
        "ticker": data.ticker,
        "recipe": recipe.label,
        "config": config.model_dump(),
        "horizon": horizon,
        "window": data.window,
        "purge_days": horizon,
        "first_origin": origins[0]["origin"],
        "last_eval": origins[-1]["eval"][1],
        "parent": None
        if recipe.parent is None
        else {
            "label": recipe.parent.label,
            "trained_until": recipe.parent.trained_until.isoformat(),
            "cutoff": parent_cutoff(data, splits).isoformat(),
        },
        "origins": origins,
        **result,
        "coverage": {
            "before": metrics["model"]["coverage_80"],
            "after": metrics["model_cqr"]["coverage_80"],
            "per_horizon_before": [r["coverage_80"] for r in metrics["model"]["per_horizon"]],
            "per_horizon_after": [r["coverage_80"] for r in metrics["model_cqr"]["per_horizon"]],
        },
        # The served model is refit on all data with no held-out part left: it takes this many epochs
        # (the origins' median early-stopping epoch) and CQR fit on every out-of-sample window here.
        "refit_epochs": int(statistics.median(o["best_epoch"] for o in origins)),
        "serving_calibration": fit_cqr(y, forecasts["model"]),
        # Per window and horizon, so a later candidate is compared with this model on the same windows.
        "windows": {
            "dates": dates,
            "pinball": {name: pinball_losses(y, forecasts[name]).tolist() for name in WINDOW_LOSSES},
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
