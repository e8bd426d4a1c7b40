"""Transfer-learning benchmark on the walk-forward (not a test): does a ^GSPC parent help the children?

For every bundled ticker (20 large caps) and 3 seeds, runs the walk-forward backtest (ml.evaluation.backtest:
K origins every `step` trading days over the last --history-days, purged, a fresh model per origin, CQR on
each origin's validation windows) of `scratch`, `freeze` and `fine_tune`, with the baselines (zero-return +
RiskMetrics, empirical quantiles, linear quantile regression, the parent as is) on the same windows. One
parent is trained on ^GSPC up to the children's common cutoff (the day before the first origin minus the
purge: it never saw an evaluation window), and its cost is part of the total.

Reports, per strategy: skill over the best baseline (1 - pinball / best baseline's pinball, from the
calibrated band) with a 90 % interval, the share of ticker x seed runs with measurable skill, 80 % coverage
before and after calibration (and the share of tickers within 75-85 % after); paired differences between
strategies on the same windows (1 - pinball_a / pinball_b) with 90 % intervals and win rates; wall time.
Intervals resample tickers (a ticker's 3 seeds stay together); all tickers share one evaluation period,
so they are not independent draws of the future: read the intervals as across-ticker spread.

    python -m bench.transfer                                   # ~10-20 min on 2 CPU cores (2 processes)
    python -m bench.transfer --tickers AAPL,KO,XOM --seeds 1   # quicker

Small settings so it finishes on 2 cores: hidden 32, 1 layer, at most 8 epochs per origin, 5 origins.
Writes var/bench/transfer.json (under STOCKQ_VAR_DIR). Needs no Redis: only the offline store is used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml.config import BacktestConfig
from ml.data.bundled import BundledSource, bundled_tickers
from ml.evaluation.backtest import origin_splits, parent_cutoff, walk_forward
from ml.features.store import FeatureStore
from ml.features.technical import MODEL_FEATURES, compute_features
from ml.model.lstm import ModelSpec
from ml.registry.mlflow_registry import ModelRegistry
from ml.settings import Settings, configure_process_env
from ml.tickers import INDEX_TICKER, PARENT_NAME
from ml.training.dataprep import load_dataset
from ml.training.recipes import STRATEGIES, ParentModel, strategy_recipe
from ml.training.train import TrainConfig, train_parent

PAIRS = (("freeze", "scratch"), ("fine_tune", "scratch"), ("fine_tune", "freeze"))
_state: dict[str, Any] = {}  # per worker process: store, parent, arguments


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tickers", default="", help="comma-separated bundled tickers (default: all 20)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--history-days", type=int, default=1100, help="children's history, calendar days")
    p.add_argument("--origins", type=int, default=5)
    p.add_argument("--step", type=int, default=21)
    p.add_argument("--epochs", type=int, default=8, help="per origin; early stopping usually ends sooner")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--parent-epochs", type=int, default=6)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bootstrap-reps", type=int, default=300)
    p.add_argument("--processes", type=int, default=2, help="worker processes (1 torch thread each)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default var/bench/transfer.json)")
    return p.parse_args()


def ingest_offline(store: FeatureStore, tickers: list[str]) -> None:
    """Offline rows only: the bench never touches the online store (so never anyone's Redis)."""
    source = BundledSource()
    for ticker in tickers:
        store.write(ticker, compute_features(source.fetch(ticker)), source="bundled")


def _init(store_dir: str, tracking: tuple[str, str], args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    settings = Settings()
    _state["store"] = FeatureStore(Path(store_dir), settings.feast_connection_string, window=settings.window)
    loaded = ModelRegistry(*tracking).load(PARENT_NAME)
    until = loaded.card["trained_until"]
    _state["parent"] = ParentModel(
        loaded.model, loaded.scaler, _date(until), f"{PARENT_NAME} v{loaded.version}"
    )
    _state["args"] = args


def _date(value: str) -> Any:
    from datetime import date

    return date.fromisoformat(value)


def _config(args: argparse.Namespace, seed: int) -> BacktestConfig:
    return BacktestConfig(
        origins=args.origins, step=args.step, epochs=args.epochs, patience=args.patience, seed=seed,
        bootstrap_reps=args.bootstrap_reps,
    )  # fmt: skip


def _child_data(store: FeatureStore, ticker: str, args: argparse.Namespace, spec: ModelSpec) -> Any:
    return load_dataset(store, ticker, TrainConfig(history_days=args.history_days, window=spec.window), spec)


def run_one(task: tuple[str, int, str]) -> dict[str, Any]:
    ticker, seed, strategy = task
    args, parent = _state["args"], _state["parent"]
    spec = parent.model.spec
    data = _child_data(_state["store"], ticker, args, spec)
    recipe = strategy_recipe(strategy, spec, args.lr, None if strategy == "scratch" else parent)
    bt = walk_forward(data, recipe, _config(args, 1337 + seed), device="cpu")
    m = bt["metrics"]
    verdict = bt["verdict"]
    return {
        "ticker": ticker,
        "seed": seed,
        "strategy": strategy,
        "pinball": m["model_cqr"]["pinball"],
        "baseline_pinball": {k: v["pinball"] for k, v in m.items() if k not in ("model", "model_cqr")},
        "best_baseline": verdict["best_baseline"],
        "skill": verdict["skill"],
        "skill_lo": verdict["lo"],
        "skill_hi": verdict["hi"],
        "measurable": verdict["measurable"],
        "skill_vs_zero": bt["skill"]["model_cqr"]["zero_ewma"]["skill"],
        "coverage_before": bt["coverage"]["before"],
        "coverage_after": bt["coverage"]["after"],
        "refit_epochs": bt["refit_epochs"],
        "n_windows": bt["n_windows"],
        "first_origin": bt["first_origin"],
        "seconds": bt["seconds"],
    }


def _ticker_bootstrap(values: dict[str, list[float]], reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean over all runs and a 90 % percentile interval, resampling tickers (their seeds together)."""
    tickers = sorted(values)
    rng = np.random.default_rng(seed)
    means = [
        float(np.mean([v for t in rng.choice(tickers, len(tickers)) for v in values[t]])) for _ in range(reps)
    ]
    flat = [v for t in tickers for v in values[t]]
    return {"mean": float(np.mean(flat)), "lo": float(np.quantile(means, 0.05)),
            "hi": float(np.quantile(means, 0.95))}  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["ticker"], r["seed"], r["strategy"]): r for r in rows}
    tickers = sorted({r["ticker"] for r in rows})
    out: dict[str, Any] = {"strategies": {}, "paired": {}}
    for s in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == s]
        per_ticker_cov = [
            statistics.fmean(r["coverage_after"] for r in mine if r["ticker"] == t) for t in tickers
        ]
        out["strategies"][s] = {
            "skill_vs_best_baseline": _ticker_bootstrap(
                {t: [r["skill"] for r in mine if r["ticker"] == t] for t in tickers}
            ),
            "skill_vs_zero_ewma": _ticker_bootstrap(
                {t: [r["skill_vs_zero"] for r in mine if r["ticker"] == t] for t in tickers}
            ),
            "measurable_share": statistics.fmean(r["measurable"] for r in mine),
            "best_baseline_counts": {
                b: sum(r["best_baseline"] == b for r in mine)
                for b in sorted({r["best_baseline"] for r in mine})
            },
            "coverage_before": statistics.fmean(r["coverage_before"] for r in mine),
            "coverage_after": statistics.fmean(r["coverage_after"] for r in mine),
            "tickers_in_75_85_after": sum(0.75 <= c <= 0.85 for c in per_ticker_cov) / len(tickers),
            "backtest_seconds": round(sum(r["seconds"] for r in mine), 1),
        }
    for a, b in PAIRS:
        diffs = {
            t: [
                1 - by[(t, seed, a)]["pinball"] / by[(t, seed, b)]["pinball"]
                for (tt, seed, s) in by
                if tt == t and s == a
            ]
            for t in tickers
        }
        flat = [d for ds in diffs.values() for d in ds]
        out["paired"][f"{a}_vs_{b}"] = {
            **_ticker_bootstrap(diffs),
            "win_rate": float(np.mean(np.array(flat) > 0)),
        }
    return out


def main() -> None:
    args = parse_args()
    settings = Settings()
    configure_process_env(settings)
    tickers = [t.strip().upper() for t in args.tickers.split(",") if t.strip()] or [
        t for t in bundled_tickers() if t != INDEX_TICKER
    ]
    out = args.out or settings.var_path / "bench" / "transfer.json"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stockq-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        store = FeatureStore(store_dir, settings.feast_connection_string, window=settings.window)
        ingest_offline(store, [INDEX_TICKER, *tickers])
        tracking = (f"sqlite:///{tmp}/mlflow.db", (Path(tmp) / "artifacts").as_uri())
        registry = ModelRegistry(*tracking)
        spec = ModelSpec(
            len(MODEL_FEATURES), args.hidden, args.layers, 0.1, settings.window, settings.horizon
        )
        cutoff = min(
            parent_cutoff(d, origin_splits(len(d.targets), spec.horizon, _config(args, 0)))
            for d in (_child_data(store, t, args, spec) for t in tickers)
        )
        parent_config = TrainConfig(
            epochs=args.parent_epochs, hidden=args.hidden, layers=args.layers, patience=args.patience,
            until=cutoff, device="cpu",
        )  # fmt: skip
        parent = train_parent(store=store, registry=registry, config=parent_config)
        tasks = [(t, seed, s) for t in tickers for seed in range(args.seeds) for s in STRATEGIES]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.processes, initializer=_init, initargs=(str(store_dir), tracking, args)) as pool:
            rows = []
            for row in pool.imap_unordered(run_one, tasks):
                rows.append(row)
                print(f"{len(rows)}/{len(tasks)} {row['ticker']} seed {row['seed']} {row['strategy']}: "
                      f"skill {row['skill']:+.3%} [{row['skill_lo']:+.3%}, {row['skill_hi']:+.3%}] "
                      f"cov {row['coverage_before']:.2f}->{row['coverage_after']:.2f} {row['seconds']:.1f}s",
                      flush=True)  # fmt: skip
    wall = time.perf_counter() - started
    report = {
        "config": {**vars(args), "out": str(out), "tickers": tickers, "parent_until": cutoff.isoformat()},
        "parent": {
            "trained_until": parent["trained_until"],
            "epochs_run": parent["epochs_run"],
            "seconds": parent["seconds"],
        },
        "rows": sorted(rows, key=lambda r: (r["ticker"], r["seed"], r["strategy"])),
        "summary": {**summarise(rows), "wall_seconds": round(wall, 1)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    show(report)
    print(f"wrote {out}")


def show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def iv(x: dict[str, float]) -> str:
        return f"{x['mean']:+.2%} [{x['lo']:+.2%}, {x['hi']:+.2%}]"

    console = Console(width=max(Console().width, 140))
    summary = report["summary"]
    table = Table(title=f"Walk-forward transfer benchmark ({len(report['config']['tickers'])} tickers x "
                        f"{report['config']['seeds']} seeds, CPU)")  # fmt: skip
    for col in ("strategy", "skill vs best baseline (90 %)", "vs zero+EWMA", "measurable", "cov raw",
                "cov CQR", "tickers 75-85 %", "backtest s"):  # fmt: skip
        table.add_column(col, justify="right")
    for s, v in summary["strategies"].items():
        table.add_row(
            s,
            iv(v["skill_vs_best_baseline"]),
            iv(v["skill_vs_zero_ewma"]),
            f"{v['measurable_share']:.0%}",
            f"{v['coverage_before']:.3f}",
            f"{v['coverage_after']:.3f}",
            f"{v['tickers_in_75_85_after']:.0%}",
            f"{v['backtest_seconds']:.0f}",
        )
    console.print(table)
    paired = Table(title="Paired differences on the same windows: 1 - pinball_a / pinball_b")
    for col in ("pair", "mean [90 %]", "win rate"):
        paired.add_column(col, justify="right")
    for pair, v in summary["paired"].items():
        paired.add_row(pair, iv(v), f"{v['win_rate']:.0%}")
    console.print(paired)
    console.print(f"parent: {report['parent']}; wall {summary['wall_seconds']} s")


if __name__ == "__main__":
    main()
