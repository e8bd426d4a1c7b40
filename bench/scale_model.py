"""bench/scale.py's capacity model inputs: the measured jobs taken apart (bench/capacity.py), the rows a
training sees at this environment's worker settings, and the model's rows of the table."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench import capacity
from bench.submit import BenchStack

PARENT_TICKER = "^GSPC"


def backtest_parent_run(stack: BenchStack, job_id: str) -> dict[str, Any] | None:
    """The backtest parent a child's job trained itself (ml/training/train.py tags its run with the job), if
    any: its MLflow run's wall, epochs and training rows."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`stockq.job_key` = '{job_id}:backtest-parent'"
    runs = client.search_runs(experiments, query, max_results=1)
    if not runs:
        return None
    run = runs[0]
    return {"wall_s": (run.info.end_time - run.info.start_time) / 1000,
            "epochs": int(run.data.metrics["epochs_run"]),
            "rows": int(run.data.params["samples_train_val_test"].split("/")[0])}  # fmt: skip


def targets(stack: BenchStack, tickers: list[str]) -> dict[str, Any]:
    """The rows a parent and a child training see at this environment's worker settings (ml/settings.py:
    the defaults unless STOCKQ_* says otherwise), from the data the bench ingested, and whether each child
    training trains a backtest parent of its own there (ml/training/train.py's rule)."""
    from dataclasses import replace

    from ml.config import BacktestConfig
    from ml.evaluation.backtest import origin_splits, parent_cutoff
    from ml.features.store import FeatureStore
    from ml.features.technical import MODEL_FEATURES
    from ml.model.lstm import ModelSpec
    from ml.settings import Settings
    from ml.training.dataprep import chronological_split, load_dataset
    from ml.training.train import BACKTEST_PARENT_MAX_AGE, TrainConfig

    s = Settings()
    feast = Settings(redis_url=stack.redis_url).feast_connection_string
    store = FeatureStore(stack.var, feast, window=s.window)
    spec = ModelSpec(len(MODEL_FEATURES), 64, 2, 0.1, s.window, s.horizon)
    config = TrainConfig(history_days=s.train_history_days, window=s.window)
    backtest = BacktestConfig(origins=s.backtest_origins, step=s.backtest_step)

    def rows(ticker: str) -> tuple[Any, list[Any]]:
        data = load_dataset(store, ticker, config, spec)
        return data, origin_splits(len(data.targets), s.horizon, backtest)

    parent, parent_splits = rows(PARENT_TICKER)
    child, child_splits = rows(tickers[0])
    # The served parent learnt up to its data's end, past the child's cutoff: the child's backtest needs a
    # parent trained until the cutoff, reused only if it stopped learning within BACKTEST_PARENT_MAX_AGE.
    cutoff = parent_cutoff(child, child_splits)
    held = load_dataset(store, PARENT_TICKER, config.with_(until=cutoff), spec)
    split = chronological_split(len(held.targets), s.horizon)
    held_until = held.dates[split.train.stop - 1 + s.window - 1 + s.horizon].date()
    per_job = held_until < cutoff - BACKTEST_PARENT_MAX_AGE
    child_target = _target(s, len(child.targets), [x.train.stop for x in child_splits])
    return {
        "settings": s,
        "parent": _target(s, len(parent.targets), [x.train.stop for x in parent_splits]),
        "child": replace(child_target, backtest_parent_rows=split.train.stop if per_job else None),
        "child_reused": child_target,
        "backtest_parent": {"cutoff": cutoff.isoformat(), "trained_until": held_until.isoformat(),
                            "trained_per_child": per_job, "rows": split.train.stop},
    }  # fmt: skip


def _target(s: Any, rows: int, origin_rows: list[int]) -> capacity.Target:
    from ml.config import BacktestConfig

    return capacity.Target(
        epochs=s.default_epochs, backtest_epochs=min(s.backtest_epochs, s.default_epochs),
        patience=BacktestConfig().patience, step=s.backtest_step, reps=s.backtest_bootstrap_reps,
        rows=rows, origin_rows=origin_rows,
    )  # fmt: skip


def model(stack: BenchStack, api: Any, run: dict[str, Any], tickers: list[str],
          args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Each kind's measured job taken apart, and rebuilt at this environment's worker settings."""
    parent = capacity.decompose(run["parent"], api.card(run["parent"]))
    held = [(j, backtest_parent_run(stack, j["job_id"])) for j in run["one"]["jobs"]]
    children = [capacity.decompose(j, api.card(j), bp["wall_s"] if bp else 0.0) for j, bp in held]
    child = capacity.mean_cost(children)
    trained = [bp for _, bp in held if bp]
    # A backtest parent is a holdout training of the parent's architecture on ^GSPC: the parent's c.
    if trained:
        mean = {k: statistics.fmean(bp[k] for bp in trained) for k in ("wall_s", "epochs", "rows")}
        holdout = capacity.Holdout.measured(mean["wall_s"], mean["epochs"], mean["rows"], parent.c)
    else:  # none trained at the bench's history: a parent job's fixed part stands in for its own
        holdout = capacity.Holdout(parent.fixed, parent.c)
    t = targets(stack, tickers)
    out: dict[str, Any] = {
        "measured": {"parent": parent, "child": child, "children": children, "backtest_parents": trained,
                     "holdout": holdout, "holdout_from": "measured" if trained else "parent job"},
        "backtest_parent": t["backtest_parent"],
    }  # fmt: skip
    for kind, cost, target in (("parent", parent, t["parent"]), ("child", child, t["child"]),
                               ("child_reused", child, t["child_reused"])):  # fmt: skip
        seconds = capacity.bounds(cost, target, holdout)
        out[kind] = {"target": target, **seconds,
                     "jobs_per_h_low": capacity.per_hour(seconds["high_s"]),
                     "jobs_per_h_high": capacity.per_hour(seconds["low_s"]),
                     "nightly": {n: [capacity.workers_for(n, seconds[b], args.window_hours)
                                     for b in ("low_s", "high_s")] for n in _nightly(args)}}  # fmt: skip
    names = ("default_epochs", "backtest_epochs", "backtest_origins", "backtest_step",
             "backtest_bootstrap_reps", "train_history_days", "window")  # fmt: skip
    out["settings"] = {k: getattr(t["settings"], k) for k in names}
    return out


def _nightly(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in args.nightly.split(",") if x]


def rows(cap: dict[str, Any], args: argparse.Namespace) -> list[tuple[Any, ...]]:
    kinds = [("parent", "parent"), ("child", "child")]
    if cap["child"]["target"].backtest_parent_rows is not None:
        kinds = [("parent", "parent"),
                 ("child", "child, a backtest parent per job (ml/training/train.py now)"),
                 ("child_reused", "child, the backtest parent reused")]  # fmt: skip
    out: list[tuple[Any, ...]] = []
    for kind, label in kinds:
        c = cap[kind]
        out += [("capacity", f"{label}: seconds per job", c["low_s"], c["high_s"], "s", ""),
                ("capacity", f"{label}: jobs/hour per worker", c["jobs_per_h_low"], c["jobs_per_h_high"],
                 "jobs/h", "")]  # fmt: skip
        if kind != "parent":
            hours = args.window_hours
            out += [("capacity", f"{label}: workers for {n} in {hours:g} h", w[0], w[1], "workers", "")
                    for n, w in c["nightly"].items()]  # fmt: skip
    return out
