"""Transfer-learning benchmark (not a test): does a ^GSPC parent help children with a scarce history?

For each ticker, trains `scratch` (the baseline), `freeze` and `fine_tune` children on the last
--history-days of bundled data, on CPU, and reports epochs and wall time to reach the scratch model's best
validation loss, test MASE against persistence, direction accuracy and 80 % interval coverage. The parent
only sees ^GSPC data from before the children's period, so the transfer cannot leak their test returns.
It also times the pipeline's epochs against a plain PyTorch loop over the same tensors.

    python -m bench.transfer                       # defaults: 10 tickers, ~5 minutes on 2 CPU cores
    python -m bench.transfer --tickers AAPL,KO --child-epochs 30 --parent-epochs 4   # quicker

Writes var/bench/transfer.json (under STOCKQ_VAR_DIR). Needs no Redis: only the offline store is used.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from ml.data.bundled import BundledSource
from ml.feature_store import FeatureStore
from ml.features import MODEL_FEATURES, compute_features
from ml.model import ModelSpec, QuantileLSTM, pinball_loss
from ml.registry import ModelRegistry
from ml.settings import Settings, configure_process_env
from ml.tickers import INDEX_TICKER
from ml.train import (
    Tensors,
    TrainConfig,
    fit,
    prepare,
    resolve_device,
    train_child,
    train_parent,
    val_loss,
)

DEFAULT_TICKERS = "AAPL,JPM,KO,XOM,PFE,MSFT,WMT,GE,HD,UNH"
ORDER = ("scratch", "freeze", "fine_tune")  # scratch first: its best val loss is the others' target


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tickers", default=DEFAULT_TICKERS, help="comma-separated bundled tickers (>= 5 advised)"
    )
    p.add_argument("--history-days", type=int, default=730, help="children's history, calendar days")
    p.add_argument("--parent-epochs", type=int, default=10)
    p.add_argument(
        "--child-epochs", type=int, default=80, help="upper bound; early stopping usually ends sooner"
    )
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--overhead-epochs", type=int, default=8, help="epochs per timing run (>= 2)")
    p.add_argument("--overhead-rounds", type=int, default=3, help="alternating pipeline/plain timing runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = what a worker uses)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default var/bench/transfer.json)")
    return p.parse_args()


def ingest_offline(store: FeatureStore, tickers: list[str]) -> None:
    """Offline rows only: the bench never touches the online store (so never anyone's Redis)."""
    source = BundledSource()
    for ticker in tickers:
        store.write(ticker, compute_features(source.fetch(ticker)), source="bundled")


def gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


def plain_epochs(tensors: Tensors, spec: ModelSpec, config: TrainConfig) -> list[float]:
    """The same model, tensors, batches and update rule as `ml.train.fit`, and nothing else."""
    torch.manual_seed(config.seed)
    model = QuantileLSTM(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    stamps = []
    for _ in range(config.epochs):
        model.train()
        for idx in torch.randperm(len(tensors.x_train), generator=gen).split(config.batch_size):
            loss = pinball_loss(model(tensors.x_train[idx]), tensors.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        val_loss(model, tensors.x_val, tensors.y_val, None)
        stamps.append(time.perf_counter())
    return gaps(stamps)


def pipeline_epochs(
    tensors: Tensors, spec: ModelSpec, config: TrainConfig, registry: ModelRegistry
) -> list[float]:
    """The pipeline's loop as train_child runs it: callbacks, cancel check, MLflow metric logging."""
    torch.manual_seed(config.seed)
    model = QuantileLSTM(spec)
    stamps: list[float] = []
    with registry.training_run("bench-overhead", {"epochs": config.epochs}, {}) as run:
        fit(
            model,
            tensors,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            patience=config.epochs,  # never stop early: both loops run the same epochs
            seed=config.seed,
            on_epoch=lambda *_: stamps.append(time.perf_counter()),
            should_stop=lambda: False,
            log_epoch=run.log_epoch,
        )
    return gaps(stamps)


def overhead(
    store: FeatureStore, registry: ModelRegistry, ticker: str, config: TrainConfig, rounds: int
) -> dict[str, Any]:
    """Per-epoch seconds, pipeline against plain loop, over the same tensors. The two alternate so both
    see the same load on a shared machine; each side's first epoch (one-off allocations) is left out."""
    spec = ModelSpec(
        len(MODEL_FEATURES), config.hidden, config.layers, config.dropout, config.window, config.horizon
    )
    tensors = prepare(store, ticker, config, spec, torch.device("cpu")).tensors
    plain: list[float] = []
    pipeline: list[float] = []
    for _ in range(rounds):
        plain += plain_epochs(tensors, spec, config)
        pipeline += pipeline_epochs(tensors, spec, config, registry)
    return {
        "ticker": ticker,
        "pipeline_epoch_s": statistics.median(pipeline),
        "plain_epoch_s": statistics.median(plain),
        "ratio": statistics.median(pipeline) / statistics.median(plain),
    }


def reach(history: list[dict[str, float]], target: float) -> tuple[int | None, float | None]:
    """First epoch whose val loss is at or below `target`, and the training seconds spent until then."""
    spent = 0.0
    for row in history:
        spent += row["seconds"]
        if row["val_loss"] <= target:
            return int(row["epoch"]), round(spent, 3)
    return None, None


def bench_ticker(
    ticker: str, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, args: argparse.Namespace
) -> dict[str, Any]:
    runs = {s: train_child(ticker, s, store=store, registry=registry, config=config) for s in ORDER}
    target = runs["scratch"]["best_val_loss"]
    rows = []
    for strategy in ORDER:
        summary = runs[strategy]
        epochs, wall = reach(summary["history"], target)
        test = summary["test"]
        rows.append(
            {
                "ticker": ticker,
                "strategy": strategy,
                "epochs_run": summary["epochs_run"],
                "best_val_loss": summary["best_val_loss"],
                "epochs_to_scratch_best": epochs,
                "seconds_to_scratch_best": wall,
                "train_seconds": round(sum(h["seconds"] for h in summary["history"]), 3),
                "total_seconds": summary["seconds"],
                "test_mase_persistence": test["mase_persistence_mean"],
                "test_direction_accuracy": test["direction_accuracy_mean"],
                "test_coverage_80": test["coverage_80_mean"],
                "test_n": test["n"],
            }
        )
    timing = overhead(
        store, registry, ticker, replace(config, epochs=args.overhead_epochs), args.overhead_rounds
    )
    return {"rows": rows, "overhead": timing}


def savings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy: mean test metrics; for transfer ones also how often they reached scratch's best val
    loss, the time saved getting there, and their whole training time relative to scratch's."""
    scratch = {r["ticker"]: r for r in rows if r["strategy"] == "scratch"}
    out: dict[str, Any] = {}
    for strategy in ORDER:
        mine = [r for r in rows if r["strategy"] == strategy]
        out[strategy] = {
            "mean_test_mase": statistics.fmean(r["test_mase_persistence"] for r in mine),
            "mean_direction_accuracy": statistics.fmean(r["test_direction_accuracy"] for r in mine),
            "mean_coverage_80": statistics.fmean(r["test_coverage_80"] for r in mine),
            # Feature loading, MLflow run, test evaluation, registration: paid once per training.
            "median_fixed_seconds": statistics.median(r["total_seconds"] - r["train_seconds"] for r in mine),
        }
        if strategy == "scratch":
            continue
        reached = [r for r in mine if r["seconds_to_scratch_best"] is not None]
        saved = [
            1 - r["seconds_to_scratch_best"] / scratch[r["ticker"]]["seconds_to_scratch_best"]
            for r in reached
            if scratch[r["ticker"]]["seconds_to_scratch_best"]
        ]
        out[strategy] |= {
            "reached": f"{len(reached)}/{len(mine)}",
            "median_time_saved": statistics.median(saved) if saved else None,
            # All epochs until early stopping, against scratch's: the time a user actually waits.
            "train_time_vs_scratch": sum(r["train_seconds"] for r in mine)
            / sum(r["train_seconds"] for r in scratch.values()),
        }
    return out


def show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(value: object, spec: str = ".3f") -> str:
        return "—" if value is None else format(value, spec) if isinstance(value, float) else str(value)

    console = Console(width=max(Console().width, 120))
    table = Table(title=f"Transfer benchmark ({report['config']['history_days']} days of child history, CPU)")
    for col in ["ticker", "strategy", "epochs", "ep→scratch", "s→scratch", "train s"]:
        table.add_column(col)
    for col in ["best val", "test MASE", "dir acc", "cov 80"]:
        table.add_column(col, justify="right")
    for r in report["rows"]:
        table.add_row(
            r["ticker"],
            r["strategy"],
            str(r["epochs_run"]),
            fmt(r["epochs_to_scratch_best"]),
            fmt(r["seconds_to_scratch_best"], ".2f"),
            fmt(r["train_seconds"], ".2f"),
            fmt(r["best_val_loss"], ".4f"),
            fmt(r["test_mase_persistence"]),
            fmt(r["test_direction_accuracy"]),
            fmt(r["test_coverage_80"]),
        )
    console.print(table)
    overhead = Table(title="Per-epoch time: pipeline vs plain PyTorch loop (same tensors, scratch model)")
    for col in ["ticker", "pipeline s/epoch", "plain s/epoch", "ratio"]:
        overhead.add_column(col, justify="right")
    for o in report["overhead"]:
        overhead.add_row(
            o["ticker"], f"{o['pipeline_epoch_s']:.4f}", f"{o['plain_epoch_s']:.4f}", f"{o['ratio']:.3f}"
        )
    console.print(overhead)
    console.print_json(json.dumps({"summary": report["summary"], "parent": report["parent"]}))


def main() -> None:
    args = parse_args()
    settings = Settings()
    configure_process_env(settings)
    torch.set_num_threads(args.threads)
    tickers = [t.strip().upper() for t in args.tickers.split(",") if t.strip()]
    out = args.out or settings.var_path / "bench" / "transfer.json"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stockq-bench-") as tmp:
        store = FeatureStore(Path(tmp) / "store", settings.feast_connection_string, window=settings.window)
        ingest_offline(store, [INDEX_TICKER, *tickers])
        registry = ModelRegistry(f"sqlite:///{tmp}/mlflow.db", (Path(tmp) / "artifacts").as_uri())
        last = store.training_frame(tickers[0]).index[-1].date()
        cutoff = last - timedelta(days=args.history_days)
        base = TrainConfig(
            epochs=args.child_epochs,
            hidden=args.hidden,
            layers=args.layers,
            batch_size=args.batch_size,
            patience=args.patience,
            seed=args.seed,
            history_days=args.history_days,
            device="cpu",
        )
        parent_config = replace(base, epochs=args.parent_epochs, history_days=None, until=cutoff)
        parent = train_parent(store=store, registry=registry, config=parent_config)
        results = [bench_ticker(t, store, registry, base, args) for t in tickers]
    rows = [r for res in results for r in res["rows"]]
    overheads = [res["overhead"] for res in results]
    report = {
        "config": {
            **vars(args),
            "out": str(out),
            "device": str(resolve_device("cpu")),
            "parent_until": str(cutoff),
        },
        "parent": {
            "epochs_run": parent["epochs_run"],
            "train_seconds": round(sum(h["seconds"] for h in parent["history"]), 2),
            "test_mase_persistence": parent["test"]["mase_persistence_mean"],
            "test_n": parent["test"]["n"],
        },
        "rows": rows,
        "overhead": overheads,
        "summary": {
            **savings(rows),
            "median_overhead_ratio": statistics.median(o["ratio"] for o in overheads),
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    show(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
