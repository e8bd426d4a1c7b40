"""Checkpoint and resume: a training paused (or killed) at an epoch boundary continues bit for bit, in the
same MLflow run, and registers one version however often its job is retried."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from ml.errors import Paused
from ml.features.store import FeatureStore
from ml.registry.mlflow_registry import CHECKPOINT_DIR, ModelRegistry
from ml.tickers import child_name
from ml.training.job import TrainingJob
from ml.training.train import (
    Checkpointing,
    TrainConfig,
    TrainHooks,
    _build_model,
    _spec,
    fit,
    prepare,
    resolve_device,
    train_child,
)

CONFIG = TrainConfig(epochs=5, hidden=16, history_days=500, patience=50, seed=11)


def _fit(store: FeatureStore, *, pause_after: int | None, resume: dict | None, saved: list) -> Any:
    job = TrainingJob(child_name("AAPL"), "child", "AAPL", "scratch", None)
    spec = _spec(job, CONFIG)
    prep = prepare(store, "AAPL", CONFIG, spec, resolve_device("cpu"))
    torch.manual_seed(CONFIG.seed)
    model = _build_model(job, spec, resolve_device("cpu"))
    epochs_done: list[int] = []
    fitted = fit(
        model,
        prep.tensors,
        epochs=CONFIG.epochs,
        lr=CONFIG.lr,
        batch_size=CONFIG.batch_size,
        patience=CONFIG.patience,
        seed=CONFIG.seed,
        on_epoch=lambda epoch, *_: epochs_done.append(epoch),
        should_pause=lambda: pause_after is not None and epochs_done[-1] >= pause_after,
        checkpointing=Checkpointing(lambda state: saved.append(state), resume),
    )
    return model, fitted, epochs_done


def test_resumed_fit_ends_with_the_same_weights_as_an_uninterrupted_one(
    feature_env: tuple[object, FeatureStore],
) -> None:
    _, store = feature_env
    straight, fitted, _ = _fit(store, pause_after=None, resume=None, saved=[])
    saved: list[dict] = []
    with pytest.raises(Paused) as paused:
        _fit(store, pause_after=2, resume=None, saved=saved)
    assert paused.value.epoch == 2 and saved[-1]["epoch"] == 2
    # A fresh process would start from the stored bytes: round-trip the checkpoint like the registry does.
    buffer = io.BytesIO()
    torch.save(saved[-1], buffer)
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)
    resumed, refitted, epochs_run = _fit(store, pause_after=None, resume=stored, saved=[])
    assert epochs_run == [3, 4, 5] and refitted.resumed_from_epoch == 2
    assert [h["val_loss"] for h in refitted.history] == [h["val_loss"] for h in fitted.history]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_a_retried_job_resumes_its_run_and_registers_once(
    feature_env: tuple[object, FeatureStore], tmp_path: Path
) -> None:
    _, store = feature_env
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri())
    name = child_name("AAPL")
    epochs: list[int] = []

    def hooks(pause_at: int | None, resumed: list[int]) -> TrainHooks:
        return TrainHooks(
            on_epoch=lambda epoch, *_: epochs.append(epoch),
            should_pause=lambda: pause_at is not None and epochs[-1] >= pause_at,
            on_resume=resumed.append,
            job_key="job-1",
        )

    first_resume: list[int] = []
    with pytest.raises(Paused):
        train_child("AAPL", "scratch", store=store, registry=registry, config=CONFIG,
                    hooks=hooks(3, first_resume))  # fmt: skip
    resumed: list[int] = []
    summary = train_child(
        "AAPL", "scratch", store=store, registry=registry, config=CONFIG, hooks=hooks(None, resumed)
    )
    assert first_resume == [] and resumed == [3] and summary["resumed_from_epoch"] == 3
    assert epochs == [1, 2, 3, 4, 5]  # no completed epoch ran twice
    runs = registry.client.search_runs([registry.experiment_id()])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]
    steps = [m.step for m in registry.client.get_metric_history(summary["run_id"], "train_loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5]
    assert [a.path for a in registry.client.list_artifacts(summary["run_id"], CHECKPOINT_DIR)]

    # Retried once more after it finished (a crash after registration): nothing new is registered.
    again = train_child(
        "AAPL", "scratch", store=store, registry=registry, config=CONFIG, hooks=hooks(None, [])
    )
    assert again["version"] == summary["version"] and again["run_id"] == summary["run_id"]
    assert len(registry.client.search_model_versions(f"name='{name}'")) == 1
    assert registry.champion_version(name) == summary["version"]
    assert again["decision"] == summary["decision"]


class _SerialReads:
    """The real store, its reads taken one at a time: its duckdb connection is per process, and these two
    trainings share one process where two workers would not."""

    def __init__(self, store: FeatureStore) -> None:
        self._store, self._lock = store, threading.Lock()

    def training_frame(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._store.training_frame(*args, **kwargs)


def test_two_trainings_at_once_leave_the_better_one_champion(
    feature_env: tuple[object, FeatureStore], tmp_path: Path
) -> None:
    """The decision and the alias move happen under one lock: whichever finishes last, the champion
    is the one with the better test metric on the same windows."""
    _, store = feature_env
    shared = _SerialReads(store)
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri())
    lock = threading.Lock()
    results: dict[int, dict] = {}

    def train(seed: int) -> None:
        config = CONFIG.with_(seed=seed, epochs=2)
        hooks = TrainHooks(job_key=f"job-{seed}", champion_lock=lambda _name: lock)
        results[seed] = train_child("MSFT", "scratch", store=shared, registry=registry, config=config,
                                    hooks=hooks)  # fmt: skip

    threads = [threading.Thread(target=train, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    name = child_name("MSFT")
    versions = {r["version"] for r in results.values()}
    assert len(versions) == 2 == len(registry.client.search_model_versions(f"name='{name}'"))
    metric = {r["version"]: r["test"]["mase_persistence_mean"] for r in results.values()}
    best = min(metric, key=metric.get)
    assert registry.champion_version(name) == best
