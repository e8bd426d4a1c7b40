"""The MLflow sqlite store on a fresh var dir: several processes starting at once all get a working store.

Without the file lock of ml/registry/mlflow_store.py the processes race on MLflow's schema migration (each
sees a half-built schema and migrates it too: `table _alembic_tmp_tags already exists`, `Online migration
expected to match one row`). Without the lock the harness below failed on 10 of 10 fresh var dirs on the
2-core development machine (3 of the 4 processes each time); the last test keeps that proof.
"""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest

import ml.registry.mlflow_store
from ml.registry.mlflow_registry import ModelRegistry
from ml.registry.mlflow_store import sqlite_path

PROCESSES = 4


def _first_use(var: str, index: int, start: multiprocessing.synchronize.Barrier,
               errors: multiprocessing.Queue) -> None:  # fmt: skip
    """What a worker process does first: build the registry, then create the experiment, a run and a
    registered model (so the tracking and the model-registry tables are both used)."""
    try:
        start.wait(30)
        registry = ModelRegistry(f"sqlite:///{var}/mlflow.db", Path(var, "mlartifacts").as_uri())
        run = registry.client.create_run(registry.experiment_id(), run_name=f"process-{index}")
        registry.client.set_terminated(run.info.run_id)
        registry.client.create_registered_model(f"race-{index}")
    except BaseException:
        errors.put(f"process {index}: {traceback.format_exc()[-2000:]}")  # a pipe holds 64 KiB
        raise


def race(var: Path) -> list[str]:
    """PROCESSES forked processes released together on an empty var dir; returns their failures."""
    ctx = multiprocessing.get_context("fork")  # imports are done once, so the processes start at once
    start, errors = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(str(var), i, start, errors)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    failures = [errors.get() for _ in range(errors.qsize())]
    failures += [f"process {i} exit code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode != 0]
    return failures


# A fresh schema costs about 1.5 s, so the quick suite races twice and the slow one ten times in a row.
@pytest.mark.parametrize("rounds", [2, pytest.param(10, marks=pytest.mark.slow)])
def test_processes_starting_together_on_fresh_var_dirs_all_succeed(tmp_path: Path, rounds: int) -> None:
    for round_ in range(rounds):
        var = tmp_path / f"var-{round_}"
        var.mkdir()
        assert race(var) == [], f"round {round_}"
        registry = ModelRegistry(f"sqlite:///{var}/mlflow.db")
        runs = registry.client.search_runs([registry.experiment_id()])
        assert sorted(r.info.run_name for r in runs) == [f"process-{i}" for i in range(PROCESSES)]
        assert len(registry.client.search_registered_models()) == PROCESSES


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:////data/var/mlflow.db", Path("/data/var/mlflow.db")),
        ("sqlite:///relative.db", Path("relative.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("http://mlflow:5000", None),
        ("postgresql://u@db/mlflow", None),
    ],
)
def test_only_sqlite_files_are_locked(uri: str, path: Path | None) -> None:
    assert sqlite_path(uri) == path


def test_without_the_lock_the_same_race_breaks_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness can fail: with the guard taken out, processes racing on MLflow's own migration do."""
    monkeypatch.setattr(ml.registry.mlflow_store, "ensure_tracking_store", lambda *_, **__: None)
    failures: list[str] = []
    for round_ in range(3):  # it failed every round here; three keep a lucky ordering from passing
        (var := tmp_path / f"var-{round_}").mkdir()
        if failures := race(var):
            break
    assert failures
