"""Training entry points: `train_parent` (the global model over the panel, or ^GSPC alone) and
`train_child` (freeze / fine_tune from the parent champion, or a per-ticker scratch model), and `_train`,
which runs one training top to bottom in two phases, then registers it (ml.registry.registration).

1. select: train on the decisions before the last `val_days` (purged by the horizon), early stopping on
   those last days; the epoch with the lowest validation loss is the epoch count.
2. refit: the served model starts again (random weights with the same seed, or the parent's weights) and
   trains on EVERY decision with a known target for that many epochs: it has seen all the data.
Evaluation is a separate job (ml.evaluation.run); the card quotes the latest evaluation of its recipe.
Both phases checkpoint into the training's MLflow run, so a paused or retried job resumes bit for bit.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from ml.config import TrainConfig, TrainHooks
from ml.errors import Cancelled, InvalidInput, ModelNotFound
from ml.model.scaler import Scaler
from ml.model.vol_lstm import VolQuantileLSTM, VolSpec
from ml.registry.registration import finish
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name, validate_ticker
from ml.training.dataprep import Plan, load_panel, make_tensors, phase_samples
from ml.training.job import TrainingJob
from ml.training.loop import Checkpointing, FitResult, fit, resolve_device
from ml.training.recipes import STRATEGIES, child_spec, from_parent, learning_rate, new_spec, recipe_of

if TYPE_CHECKING:  # the adapters arrive as arguments: training imports neither Feast nor MLflow
    from ml.features.store import FeatureStore
    from ml.registry.mlflow_registry import ModelRegistry, TrainingRun

__all__ = ["STRATEGIES", "TrainConfig", "TrainHooks", "train_child", "train_parent"]

log = logging.getLogger(__name__)
SELECTION_FILE = "selection.json"  # the selection phase's outcome: a retried job skips to the refit
REFIT_PREFIX = "refit_"  # the refit's per-epoch metrics, apart from the selection's


def train_parent(
    *, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, hooks: TrainHooks | None = None
) -> dict[str, Any]:
    """Train the global parent (universe `panel`: every ticker the store holds features for, and ^GSPC;
    `gspc`: ^GSPC alone), register it, and let the champion rule (ml.evaluation.promotion) decide."""
    job = TrainingJob(PARENT_NAME, "parent", INDEX_TICKER, None, None)
    return _train(job, store=store, registry=registry, config=config, hooks=hooks or TrainHooks())


def train_child(
    ticker: str,
    strategy: str,
    *,
    store: FeatureStore,
    registry: ModelRegistry,
    config: TrainConfig,
    train_parent_if_missing: bool = False,
    hooks: TrainHooks | None = None,
) -> dict[str, Any]:
    """A per-ticker model: `freeze` or `fine_tune` from the parent champion, or `scratch`.

    freeze and fine_tune take the architecture and the input statistics from the parent champion. Without
    one they raise ModelNotFound, or first train the parent (`train_parent_if_missing=True`; the
    callbacks then see the parent's epochs before the child's).
    """
    hooks = hooks or TrainHooks()
    ticker = validate_ticker(ticker)
    if ticker == INDEX_TICKER:
        raise InvalidInput(f"{ticker} is the parent's own series: train it with train_parent")
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    parent = None
    if strategy != "scratch":
        if registry.champion_version(PARENT_NAME) is None:
            if not train_parent_if_missing:
                raise ModelNotFound(
                    f"strategy {strategy} needs a parent model and {PARENT_NAME} has no champion: train the "
                    "parent first (train_parent) or pass train_parent_if_missing=True"
                )
            train_parent(store=store, registry=registry, config=config.with_(history_days=None), hooks=hooks)
        parent = registry.load(PARENT_NAME)
    job = TrainingJob(child_name(ticker), "child", ticker, strategy, parent)
    return _train(job, store=store, registry=registry, config=config, hooks=hooks)


def plan(job: TrainingJob, store: FeatureStore, config: TrainConfig) -> Plan:
    m = config.model
    if job.kind == "parent":
        tickers = [INDEX_TICKER] if config.universe == "gspc" else store.tickers()
        panel = load_panel(store, tickers, until=config.until)
        universe = panel.tickers if config.universe == "panel" else (INDEX_TICKER,)
        spec = new_spec(m, panel.input_names, universe, m.embed)
        samples = phase_samples(panel, spec, tickers=spec.tickers, stride=m.stride, val_days=config.val_days)
        return Plan(panel, spec, samples, config.universe, m.lr, None)
    parent = job.parent
    inputs = parent.model.spec.inputs if parent is not None else None
    panel = load_panel(store, [job.ticker], until=config.until, inputs=inputs)
    if parent is None:
        spec = new_spec(m, panel.input_names, (job.ticker,), 0)
        universe = config.universe
    else:
        spec = child_spec(parent.model.spec, job.ticker)
        universe = str(parent.card.get("universe", config.universe))
    # One ticker has few samples: a child reads every decision day.
    samples = phase_samples(panel, spec, tickers=(job.ticker,), stride=1, val_days=config.val_days,
                            history_days=config.history_days)  # fmt: skip
    return Plan(panel, spec, samples, universe, learning_rate(job.strategy, m.lr),
                None if parent is None else parent.scaler)  # fmt: skip


def build_model(job: TrainingJob, spec: VolSpec, seed: int, device: torch.device) -> VolQuantileLSTM:
    """A fresh module for one phase: the parent's weights for a child, else random under `seed`."""
    torch.manual_seed(seed)
    if job.parent is not None and job.strategy is not None:
        return from_parent(job.parent.model, spec, job.strategy).to(device)
    return VolQuantileLSTM(spec).to(device)


def run_phase(
    phase: str,
    job: TrainingJob,
    plan_: Plan,
    config: TrainConfig,
    *,
    epochs: int,
    device: torch.device,
    hooks: TrainHooks,
    run: TrainingRun,
    resume: dict[str, Any] | None,
) -> tuple[VolQuantileLSTM, Scaler, FitResult]:
    """One phase through the loop: `select` (early stopping on the validation days) or `refit` (every
    sample, `epochs` epochs; its "validation" is the training set, so early stopping cannot fire)."""
    m = config.model
    refit = phase == "refit"
    train = plan_.samples.all if refit else plan_.samples.train
    val = plan_.samples.all if refit else plan_.samples.val
    scaler = plan_.scaler_for(train)
    tensors = make_tensors(plan_.panel, scaler, plan_.spec, train, val, device)
    model = build_model(job, plan_.spec, m.seed, device)
    prefix = REFIT_PREFIX if refit else ""
    if hooks.on_phase is not None:
        hooks.on_phase(phase, epochs)
    if resume is not None and hooks.on_resume is not None:
        hooks.on_resume(int(resume["epoch"]))
    checkpointing = Checkpointing(
        lambda state: run.save_checkpoint({**state, "phase": phase, "metric_prefix": prefix}),
        resume,
        hooks.checkpoint_every_s,
    )
    fitted = fit(
        model,
        tensors,
        epochs=epochs,
        lr=plan_.lr,
        batch_size=m.batch_size,
        patience=epochs if refit else m.patience,
        seed=m.seed,
        freeze_lstm=job.strategy == "freeze",
        on_epoch=hooks.on_epoch,
        should_stop=hooks.should_stop,
        should_pause=hooks.should_pause,
        log_epoch=lambda epoch, metrics: run.log_epoch(epoch, {prefix + k: v for k, v in metrics.items()}),
        checkpointing=checkpointing if hooks.job_key else None,
        # Selection: the starting weights compete (a fit that only learns noise keeps them). A refit runs
        # the epochs selection found, or none when the start won (then the start is the served model).
        keep_start=not refit or epochs == 0,
    )
    return model, scaler, fitted


def _selection(fitted: FitResult) -> dict[str, Any]:
    return {
        "best_epoch": fitted.best_epoch,
        "best_val_loss": fitted.best_val_loss,
        "epochs_run": fitted.epochs_run,
        "history": fitted.history,
        "resumed_from_epoch": fitted.resumed_from_epoch,
    }


def _train(
    job: TrainingJob, *, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, hooks: TrainHooks
) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(config.model.device)
    p = plan(job, store, config)
    params = {
        **config.model.model_dump(exclude={"device", "levels"}),
        "universe": p.universe,
        "val_days": config.val_days,
        "history_days": config.history_days,
        "until": config.until,
        "kind": job.kind,
        "ticker": job.ticker,
        "strategy": job.strategy,
        "recipe": recipe_of(job.strategy),
        "parent_version": job.parent.version if job.parent else None,
        "effective_lr": p.lr,
        "device": str(device),
        "panel_tickers": len(p.panel.tickers),
        "samples_train_val_all": f"{len(p.samples.train)}/{len(p.samples.val)}/{len(p.samples.all)}",
    }
    tags = {
        "stockq.kind": job.kind,
        "stockq.ticker": job.ticker,
        "stockq.strategy": str(job.strategy),
        "stockq.model": job.name,
    }
    if hooks.attempt is not None:
        tags["stockq.attempt"] = str(hooks.attempt)
    with registry.training_run(
        f"{job.name}-{job.strategy or 'parent'}", params, tags, job_key=hooks.job_key
    ) as run:
        checkpoint = run.load_checkpoint() if hooks.job_key else None
        selection = run.load_json(SELECTION_FILE) if hooks.job_key else None
        if selection is None:
            resume = checkpoint if checkpoint is not None and checkpoint.get("phase") == "select" else None
            _, _, fitted = run_phase("select", job, p, config, epochs=config.model.epochs, device=device,
                                     hooks=hooks, run=run, resume=resume)  # fmt: skip
            selection = _selection(fitted)
            run.log_json(selection, SELECTION_FILE)
        resume = checkpoint if checkpoint is not None and checkpoint.get("phase") == "refit" else None
        model, scaler, refit = run_phase(
            "refit", job, p, config, epochs=selection["best_epoch"], device=device, hooks=hooks, run=run,
            resume=resume,
        )  # fmt: skip
        if hooks.should_stop is not None and hooks.should_stop():
            raise Cancelled(f"training cancelled after {refit.epochs_run} refit epochs; nothing registered")
        summary = finish(
            job, run, p, model, scaler, selection, refit, registry, hooks, str(device), config.model.seed
        )
    log.info("trained %s v%s: %s", summary["name"], summary["version"], summary["decision"])
    history = [{**row, "phase": "select"} for row in selection["history"]]
    return {
        **summary,
        "seconds": round(time.perf_counter() - started, 3),
        "history": history + [{**row, "phase": "refit"} for row in refit.history],
        "resumed_from_epoch": refit.resumed_from_epoch or selection["resumed_from_epoch"],
    }
