"""bench/scale.py's capacity model inputs: the measured jobs taken apart (bench/capacity.py), the samples
a training sees at this environment's worker settings, and the model's rows of the table."""

from __future__ import annotations

import argparse
from typing import Any

from bench import capacity
from bench.submit import BenchStack

PARENT_TICKER = "^GSPC"


def worker_config(s: Any) -> Any:
    """The TrainConfig a training worker builds from its settings (workers/tasks.py's _train_config)."""
    from ml.config import PanelModelConfig, TrainConfig

    return TrainConfig(
        model=PanelModelConfig(epochs=s.default_epochs),
        universe=s.parent_universe,
        history_days=s.train_history_days,
    )


def bench_store(stack: BenchStack, s: Any) -> Any:
    """The feature store of the bench's stack."""
    from ml.features.store import FeatureStore
    from stockq.settings import Settings

    feast = Settings(redis_url=stack.redis_url).feast_connection_string
    return FeatureStore(stack.var, feast, window=s.window)


def targets(store: Any, s: Any, child: str) -> dict[str, Any]:
    """The samples a parent and a child training see at worker settings `s` (stockq/settings.py: the
    defaults unless STOCKQ_* says otherwise) on the data in `store`: the parent's panel is every ticker
    stored there (or ^GSPC alone with STOCKQ_PARENT_UNIVERSE=gspc)."""
    from ml.tickers import PARENT_NAME, child_name
    from ml.training.job import TrainingJob
    from ml.training.train import plan

    config = worker_config(s)
    # A child's samples are its strategy's alike (one ticker, every decision day): a scratch plan, which
    # needs no parent, counts them.
    jobs = {
        "parent": TrainingJob(PARENT_NAME, "parent", PARENT_TICKER, None, None),
        "child": TrainingJob(child_name(child), "child", child, "scratch", None),
    }
    out: dict[str, Any] = {"settings": s}
    for kind, job in jobs.items():
        p = plan(job, store, config)
        out[kind] = capacity.Target(
            epochs=config.model.epochs, patience=config.model.patience, n_train=len(p.samples.train),
            n_val=len(p.samples.val), n_all=len(p.samples.all),
        )  # fmt: skip
        out[f"{kind}_tickers"] = len(p.panel.tickers)
    return out


def model(stack: BenchStack, api: Any, run: dict[str, Any], tickers: list[str],
          args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Each kind's measured job taken apart, and rebuilt at this environment's worker settings."""
    parent = capacity.decompose(run["parent"], api.card(run["parent"]))
    children = [capacity.decompose(j, api.card(j)) for j in run["one"]["jobs"]]
    child = capacity.mean_cost(children)
    from stockq.settings import Settings

    settings = Settings()
    t = targets(bench_store(stack, settings), settings, tickers[0])
    out: dict[str, Any] = {
        "measured": {"parent": parent, "child": child, "children": children},
        "panel_tickers": {"parent": t["parent_tickers"], "child": t["child_tickers"]},
    }
    for kind, cost in (("parent", parent), ("child", child)):
        target = t[kind]
        seconds = capacity.bounds(cost, target)
        out[kind] = {"target": target, **seconds,
                     "jobs_per_h_low": capacity.per_hour(seconds["high_s"]),
                     "jobs_per_h_high": capacity.per_hour(seconds["low_s"]),
                     "nightly": {n: [capacity.workers_for(n, seconds[b], args.window_hours)
                                     for b in ("low_s", "high_s")] for n in _nightly(args)}}  # fmt: skip
    names = ("default_epochs", "train_history_days", "parent_universe", "checkpoint_s")
    out["settings"] = {k: getattr(t["settings"], k) for k in names}
    return out


def _nightly(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in args.nightly.split(",") if x]


def rows(cap: dict[str, Any], args: argparse.Namespace) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for kind in ("parent", "child"):
        m, c = cap["measured"][kind], cap[kind]
        out += [("capacity", f"{kind}: ms per 1,000 samples per epoch, trained / evaluated", m.c * 1e6,
                 m.v * 1e6, "ms", ""),
                ("capacity", f"{kind}: fixed seconds per job / per epoch beyond the loop", m.fixed, m.delta,
                 "s", ""),
                ("capacity", f"{kind}: seconds per job", c["low_s"], c["high_s"], "s", ""),
                ("capacity", f"{kind}: jobs/hour per worker", c["jobs_per_h_low"], c["jobs_per_h_high"],
                 "jobs/h", "")]  # fmt: skip
        if kind == "child":  # the nightly retrain fine-tunes children (workers/scheduled.py)
            hours = args.window_hours
            out += [("capacity", f"child: workers for {n} in {hours:g} h", w[0], w[1], "workers", "")
                    for n, w in c["nightly"].items()]  # fmt: skip
    return out
