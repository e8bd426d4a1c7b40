"""Checkpoint and resume: a training paused at an epoch boundary (in either phase) continues bit for bit,
in the same MLflow run, and registers one version however often its job is retried."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ml.config import PanelModelConfig, TrainConfig, TrainHooks
from ml.errors import Paused
from ml.features.store import FeatureStore
from ml.registry.mlflow_registry import CHECKPOINT_DIR, ModelRegistry
from ml.tickers import PARENT_NAME, child_name
from ml.training.train import SELECTION_FILE, train_child, train_parent
from tests.test_model_train import synthetic_store

DB, FEAST_DB = 4, 5
CONFIG = TrainConfig(
    model=PanelModelConfig(epochs=4, hidden=8, embed=2, stride=8, patience=50, seed=11, device="cpu"),
    val_days=100,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    yield synthetic_store(tmp_path_factory.mktemp("checkpoint"), DB, FEAST_DB)


def _registry(tmp: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp}/mlflow.db", (tmp / "art").as_uri())


class Steering:
    """Hooks that pause once after `pause_at` (phase, epoch) and record what they saw."""

    def __init__(self, pause_at: tuple[str, int] | None) -> None:
        self.pause_at = pause_at
        self.seen: list[tuple[str, int]] = []
        self.resumed: list[int] = []
        self.phase = ""

    def hooks(self, job_key: str) -> TrainHooks:
        def on_phase(phase: str, _epochs: int) -> None:
            self.phase = phase

        return TrainHooks(
            on_epoch=lambda epoch, *_: self.seen.append((self.phase, epoch)),
            on_phase=on_phase,
            should_pause=lambda: self.seen[-1] == self.pause_at,
            on_resume=self.resumed.append,
            job_key=job_key,
        )


def test_a_parent_paused_in_each_phase_resumes_bit_for_bit(store: FeatureStore, tmp_path: Path) -> None:
    straight_registry = _registry(tmp_path / "straight")
    straight = train_parent(store=store, registry=straight_registry, config=CONFIG,
                            hooks=Steering(None).hooks("job-straight"))  # fmt: skip
    registry = _registry(tmp_path / "paused")
    first = Steering(("select", 2))
    with pytest.raises(Paused):
        train_parent(store=store, registry=registry, config=CONFIG, hooks=first.hooks("job-1"))
    second = Steering(("refit", 1))
    with pytest.raises(Paused):
        train_parent(store=store, registry=registry, config=CONFIG, hooks=second.hooks("job-1"))
    third = Steering(None)
    summary = train_parent(store=store, registry=registry, config=CONFIG, hooks=third.hooks("job-1"))

    assert first.seen == [("select", 1), ("select", 2)] and first.resumed == []
    assert second.seen[:2] == [("select", 3), ("select", 4)] and second.resumed == [2]
    assert third.seen[0] == ("refit", 2) and third.resumed == [1]  # the selection ran once, never again

    def losses(s: dict) -> list[tuple]:
        return [(r["phase"], r["epoch"], r["train_loss"], r["val_loss"]) for r in s["history"]]

    assert straight["best_epoch"] >= 2  # so that the refit had an epoch boundary to pause at
    assert losses(summary) == losses(straight)
    a = straight_registry.load(PARENT_NAME).model.state_dict()
    b = registry.load(PARENT_NAME).model.state_dict()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    runs = registry.client.search_runs([registry.experiment_id()])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]
    artifacts = [a.path for a in registry.client.list_artifacts(summary["run_id"])]
    assert SELECTION_FILE in artifacts and CHECKPOINT_DIR in artifacts
    history = registry.client.get_metric_history(summary["run_id"], "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    refit_steps = [m.step for m in registry.client.get_metric_history(summary["run_id"], "refit_train_loss")]
    assert sorted(refit_steps) == list(range(1, summary["epochs_run"] + 1))


def test_a_retried_job_registers_once(store: FeatureStore, tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    name = child_name("S00")
    summary = train_child("S00", "scratch", store=store, registry=registry, config=CONFIG,
                          hooks=Steering(None).hooks("job-1"))  # fmt: skip
    # Retried after it finished (a crash after registration): nothing new is registered or decided.
    again = train_child("S00", "scratch", store=store, registry=registry, config=CONFIG,
                        hooks=Steering(None).hooks("job-1"))  # fmt: skip
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


def test_two_trainings_at_once_each_decide_under_the_lock(store: FeatureStore, tmp_path: Path) -> None:
    """Before any evaluation every new version is served provisionally: under the lock, whichever decides
    last is the champion, and the compare-and-set never sees the champion move under a decision."""
    shared = _SerialReads(store)
    registry = _registry(tmp_path)
    lock = threading.Lock()
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def train(seed: int) -> None:
        config = CONFIG.with_(model=CONFIG.model.with_(seed=seed, epochs=2))
        hooks = TrainHooks(job_key=f"job-{seed}", champion_lock=lambda _name: lock)
        try:
            results[seed] = train_child("S01", "scratch", store=shared, registry=registry, config=config,
                                        hooks=hooks)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    name = child_name("S01")
    assert len(registry.client.search_model_versions(f"name='{name}'")) == 2
    decisions = {r["version"]: r["decision"] for r in results.values()}
    first = next(v for v, d in decisions.items() if d.startswith("promoted provisionally (first champion"))
    last = next(v for v in decisions if v != first)
    assert decisions[last].startswith(f"promoted provisionally (v{last} replaces v{first})")
    assert registry.champion_version(name) == last
