"""Training entry points: `train_parent` (^GSPC) and `train_child` (freeze / fine_tune / scratch on top of
the parent), and `_train`, which runs one training top to bottom: the data (ml.training.dataprep), the
evaluation, the loop (ml.training.loop.fit), then the card, registration and champion decision
(ml.registry.registration).

Two evaluations. With `TrainConfig.backtest` set (what the workers do), the walk-forward backtest
(ml.evaluation.backtest) evaluates the recipe first, and the registered, served model is then refit on EVERY
sample with a known target for the backtest's early-stopped number of epochs: it has seen all the data, and
its card inherits the evaluation. A child's backtest starts from a parent that stopped learning before the
child's first origin minus the purge (the served parent champion if it did, else a `backtest_parent` version
trained with `until` = that cutoff, registered but never promoted, and reused while it is recent); the served
child refits from the served parent champion; the card names both. Without it, one chronological holdout split
(fast: a library call, the tests of the loop and the registry).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import torch

from ml.config import TrainConfig, TrainHooks
from ml.errors import Cancelled, InvalidInput, ModelNotFound
from ml.evaluation.backtest import origin_splits, parent_cutoff, walk_forward
from ml.features.technical import MODEL_FEATURES
from ml.model.lstm import ModelSpec, QuantileLSTM
from ml.registry.registration import DATA_UNTIL_TAG, ROLE_TAG, TRAINED_UNTIL_TAG, arch_key, finish
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name, validate_ticker
from ml.training.dataprep import (
    Dataset,
    chronological_split,
    load_dataset,
    min_rows,
    prepare,
    prepare_refit,
    prepare_split,
)
from ml.training.job import TrainingJob
from ml.training.loop import (
    Checkpointing,
    autocast_dtype,
    fit,
    resolve_device,
)
from ml.training.recipes import STRATEGIES, ParentModel, Recipe, strategy_recipe

if TYPE_CHECKING:  # the adapters arrive as arguments: training imports neither Feast nor MLflow
    from ml.features.store import FeatureStore
    from ml.registry.mlflow_registry import LoadedModel, ModelRegistry

# Re-exported: callers import the training API from here.
__all__ = [
    "STRATEGIES",
    "Checkpointing",
    "Dataset",
    "TrainConfig",
    "TrainHooks",
    "autocast_dtype",
    "chronological_split",
    "fit",
    "min_rows",
    "prepare",
    "resolve_device",
    "train_child",
    "train_parent",
]

log = logging.getLogger(__name__)
BACKTEST_FILE = "backtest.json"
# A backtest parent older than this before the cutoff is trained again: the parent's knowledge should be
# as recent as the evaluation allows, within the cost of one parent training per year of new data.
BACKTEST_PARENT_MAX_AGE = timedelta(days=365)


def train_parent(
    *, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, hooks: TrainHooks | None = None
) -> dict[str, Any]:
    """Train the shared parent on ^GSPC, register it, and let the champion rule (ml.evaluation.promotion)
    decide."""
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
    """A per-ticker model: `freeze` (parent LSTM fixed, head retrained), `fine_tune` (all layers at a lower
    learning rate) or `scratch` (parent architecture, random init: the baseline).

    freeze and fine_tune take the architecture (window, hidden, layers, dropout) from the parent champion.
    Without one they raise ModelNotFound, or first train the parent on its full history
    (`train_parent_if_missing=True`; the callbacks then see the parent's epochs before the child's).
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


def _spec(job: TrainingJob, config: TrainConfig) -> ModelSpec:
    if job.parent is not None:
        return job.parent.model.spec
    return ModelSpec(
        len(MODEL_FEATURES), config.hidden, config.layers, config.dropout, config.window, config.horizon
    )


def _trained_until(card: dict[str, Any]) -> date | None:
    value = card.get("trained_until")
    return date.fromisoformat(value) if isinstance(value, str) else None


def _parent_model(loaded: LoadedModel) -> ParentModel:
    # A card from before `trained_until` was recorded: unknown, so never accepted as a backtest parent.
    until = _trained_until(loaded.card) or date.max
    return ParentModel(loaded.model, loaded.scaler, until, f"{loaded.name} v{loaded.version}")


def _recipe(job: TrainingJob, spec: ModelSpec, lr: float, parent: ParentModel | None = None) -> Recipe:
    if parent is None and job.parent is not None:
        parent = _parent_model(job.parent)
    return strategy_recipe(job.strategy or "scratch", spec, lr, parent)


def _build_model(job: TrainingJob, spec: ModelSpec, device: torch.device) -> QuantileLSTM:
    return _recipe(job, spec, 1.0).build().to(device)


def _backtest_recipe(
    job: TrainingJob, data: Dataset, spec: ModelSpec, *, store: FeatureStore, registry: ModelRegistry,
    config: TrainConfig, hooks: TrainHooks,
) -> Recipe:  # fmt: skip
    if job.parent is None:
        return _recipe(job, spec, config.lr)
    assert config.backtest is not None
    cutoff = parent_cutoff(data, origin_splits(len(data.targets), spec.horizon, config.backtest))
    served = _parent_model(job.parent)
    if served.trained_until <= cutoff:
        return _recipe(job, spec, config.lr, served)
    return _recipe(job, spec, config.lr, _backtest_parent(job.parent, cutoff, store, registry, config, hooks))


def reusable_backtest_parent(
    tags_by_version: dict[str, dict[str, str]], arch: str, cutoff: date
) -> str | None:
    """The newest backtest parent of architecture `arch` that stopped learning by `cutoff` and whose data
    ends within BACKTEST_PARENT_MAX_AGE of it (by its last data day, not `trained_until`: a holdout
    training stops learning ~30 % of its history early, so that date always looked stale)."""
    fits = {}
    for version, tags in tags_by_version.items():
        if tags.get(ROLE_TAG) != "backtest_parent" or tags.get("arch") != arch:
            continue
        trained_until = date.fromisoformat(tags.get(TRAINED_UNTIL_TAG, "9999-12-31"))
        data_until = date.fromisoformat(tags.get(DATA_UNTIL_TAG) or tags.get(TRAINED_UNTIL_TAG, "0001-01-01"))
        if trained_until <= cutoff and cutoff - BACKTEST_PARENT_MAX_AGE <= data_until <= cutoff:
            fits[version] = data_until
    return max(fits, key=lambda v: fits[v], default=None)


def _backtest_parent(
    served: LoadedModel, cutoff: date, store: FeatureStore, registry: ModelRegistry, config: TrainConfig,
    hooks: TrainHooks,
) -> ParentModel:  # fmt: skip
    """The newest registered backtest parent with the served parent's architecture that stopped learning
    by `cutoff` (and not long before it), else one trained now with until=cutoff."""
    version = reusable_backtest_parent(
        registry.version_tags(PARENT_NAME), arch_key(served.model.spec.to_dict()), cutoff
    )
    if version is None:
        spec = served.model.spec
        parent_config = config.with_(
            until=cutoff, backtest=None, hidden=spec.hidden, layers=spec.layers,
            dropout=spec.dropout, window=spec.window, horizon=spec.horizon,
        )  # fmt: skip
        key = f"{hooks.job_key}:backtest-parent" if hooks.job_key else None
        job = TrainingJob(PARENT_NAME, "parent", INDEX_TICKER, None, None, backtest_parent=True)
        version = _train(job, store=store, registry=registry, config=parent_config,
                         hooks=replace(hooks, job_key=key))["version"]  # fmt: skip
    loaded = registry.load(PARENT_NAME, version)
    until = _trained_until(loaded.card) or date.max
    return ParentModel(loaded.model, loaded.scaler, until, f"{PARENT_NAME} v{version}")


def _train(
    job: TrainingJob, *, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, hooks: TrainHooks
) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(config.device)
    spec = _spec(job, config)
    data = load_dataset(store, job.ticker, config, spec)
    if config.backtest is None:
        prep = prepare_split(data, chronological_split(len(data.targets), spec.horizon), device)
        evaluation = None
    else:
        prep = prepare_refit(data, device)
        evaluation = _backtest_recipe(
            job, data, spec, store=store, registry=registry, config=config, hooks=hooks
        )
    served = _recipe(job, spec, config.lr)
    params = {
        **config.model_dump(exclude={"device", "backtest"}),
        **spec.to_dict(),
        "kind": job.kind,
        "ticker": job.ticker,
        "strategy": job.strategy,
        "parent_version": job.parent.version if job.parent else None,
        "effective_lr": served.lr,
        "device": str(device),
        "evaluation": "holdout" if config.backtest is None else "walk_forward",
        "backtest": None if config.backtest is None else config.backtest.model_dump(),
        "samples_train_val_test": "/".join(
            str(s.stop - s.start) for s in (prep.split.train, prep.split.val, prep.split.test)
        ),
    }
    run_name = f"{job.name}-{'backtest-parent' if job.backtest_parent else job.strategy or 'parent'}"
    tags = {
        "stockq.kind": job.kind,
        "stockq.ticker": job.ticker,
        "stockq.strategy": str(job.strategy),
        "stockq.model": job.name,
    }
    if hooks.attempt is not None:
        tags["stockq.attempt"] = str(hooks.attempt)
    with registry.training_run(run_name, params, tags, job_key=hooks.job_key) as run:
        backtest = None
        if evaluation is not None:  # the walk-forward first; a retried job finds it in its run
            backtest = run.load_json(BACKTEST_FILE) if hooks.job_key else None
            if backtest is None:
                assert config.backtest is not None
                backtest = walk_forward(
                    data, evaluation, config.backtest, device=str(device), should_stop=hooks.should_stop
                )
                run.log_json(backtest, BACKTEST_FILE)
        epochs = config.epochs if backtest is None else int(backtest["refit_epochs"])
        resume = run.load_checkpoint() if hooks.job_key else None
        if resume is not None and hooks.on_resume is not None:
            hooks.on_resume(int(resume["epoch"]))
        checkpointing = Checkpointing(run.save_checkpoint, resume, hooks.checkpoint_every_s)
        torch.manual_seed(config.seed)
        model = served.build().to(device)
        fitted = fit(
            model,
            prep.tensors,
            epochs=epochs,
            lr=served.lr,
            batch_size=config.batch_size,
            # A refit holds nothing out: it runs the backtest's epochs, early stopping cannot fire.
            patience=config.patience if backtest is None else epochs,
            seed=config.seed,
            freeze_lstm=served.freeze_lstm,
            on_epoch=hooks.on_epoch,
            should_stop=hooks.should_stop,
            should_pause=hooks.should_pause,
            log_epoch=run.log_epoch,
            checkpointing=checkpointing if hooks.job_key else None,
        )
        if hooks.should_stop is not None and hooks.should_stop():
            raise Cancelled(f"training cancelled after {fitted.epochs_run} epochs; nothing registered")
        summary = finish(job, run, prep, model, fitted, registry, hooks, backtest)
    log.info("trained %s v%s: %s", summary["name"], summary["version"], summary["decision"])
    return {
        **summary,
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 3),
        "history": fitted.history,
        "resumed_from_epoch": fitted.resumed_from_epoch,
        "backtest_seconds": None if backtest is None else backtest["seconds"],
    }
