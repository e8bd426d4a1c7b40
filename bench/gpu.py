"""Epoch time of the served model on CUDA (not a test): the global parent (ml.model.vol_lstm through the one
training loop, ml.training.loop.fit, bf16/fp16 autocast on CUDA) on the bundled panel, its epoch on the GPU
next to the CPU's, a fine-tune and a freeze child on the GPU, and GPU vs CPU predictions from the same
weights.

The samples are a worker's selection phase (ml.training.dataprep.phase_samples: the parent every
PanelModelConfig.stride-th decision day of every ticker, validated on the last 252 days; a child every
day of its ticker over --child-days), the model is PanelModelConfig's defaults, and every epoch runs (no
early stopping), so an epoch is the cost bench/capacity.py models as c x trained + v x evaluated samples.

Here: `python -m bench.gpu export .devdata` writes the bundled closes (one parquet file: the run needs
neither skfolio, Feast nor MLflow). On a CUDA machine: `python -m bench.gpu run .devdata --out $OUT`.
Without CUDA, `run` says so and measures the CPU rows only (`--tickers 2 --epochs 2` for a quick check).
Writes gpu.json under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ml.config import PanelModelConfig
from ml.model.vol_lstm import VolQuantileLSTM, VolSpec, predict_z
from ml.tickers import INDEX_TICKER
from ml.training.dataprep import make_tensors, phase_samples
from ml.training.loop import autocast_dtype, fit
from ml.training.panel import PanelData, build_panel, fit_input_scaler
from ml.training.recipes import child_spec, from_parent, learning_rate, new_spec

CLOSES_FILE = "closes.parquet"
VAL_DAYS = 252  # TrainConfig's default validation days
CHILD = "AAPL"


def export(directory: Path) -> None:
    from ml.data.bundled import BundledSource, bundled_tickers

    source = BundledSource()
    closes = pd.DataFrame({t: source.fetch(t)["close"] for t in bundled_tickers()})
    directory.mkdir(parents=True, exist_ok=True)
    closes.to_parquet(directory / CLOSES_FILE)
    print(f"{directory / CLOSES_FILE}: {closes.shape[1]} tickers, {closes.shape[0]} days")


def load_panel(directory: Path, tickers: int) -> PanelData:
    """^GSPC, CHILD and the first other tickers up to `tickers` (0: all)."""
    closes = pd.read_parquet(directory / CLOSES_FILE)
    others = [t for t in closes.columns if t not in (INDEX_TICKER, CHILD)]
    keep = [INDEX_TICKER, CHILD, *others][: tickers or None]
    return build_panel({t: closes[t] for t in keep})


def train_once(
    panel: PanelData,
    spec: VolSpec,
    config: PanelModelConfig,
    device: torch.device,
    *,
    tickers: tuple[str, ...],
    stride: int,
    history_days: int | None = None,
    parent: tuple[VolQuantileLSTM, Any] | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """One selection phase with every epoch run: its timings, and the model, scaler and val samples."""
    samples = phase_samples(panel, spec, tickers=tickers, stride=stride, val_days=VAL_DAYS,
                            history_days=history_days)  # fmt: skip
    # A child reads through its parent's statistics (ml/training/dataprep.py's Plan.scaler).
    scaler = parent[1] if parent else fit_input_scaler(panel, samples.train, spec.horizon)
    tensors = make_tensors(panel, scaler, spec, samples.train, samples.val, device)
    torch.manual_seed(config.seed)
    model = VolQuantileLSTM(spec) if parent is None else from_parent(parent[0], spec, str(strategy))
    model.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fitted = fit(model, tensors, epochs=config.epochs, lr=learning_rate(strategy, config.lr),
                 batch_size=config.batch_size, patience=config.epochs, seed=config.seed,
                 freeze_lstm=strategy == "freeze")  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize()
    epochs = [h["seconds"] for h in fitted.history]
    return {
        "device": str(device),
        "amp": str(autocast_dtype(device)),
        "batch_size": config.batch_size,
        "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "strategy": strategy or "parent",
        "tickers": len(tickers),
        "train_samples": len(samples.train),
        "val_samples": len(samples.val),
        "epochs": len(epochs),
        "first_epoch_s": epochs[0],
        "median_epoch_s": statistics.median(epochs[1:] or epochs),
        "wall_s": time.perf_counter() - started,
        "best_val_loss": fitted.best_val_loss,
        "finite": bool(np.isfinite(fitted.best_val_loss)),
        "_model": model,
        "_scaler": scaler,
        "_val": (tensors.x_val.cpu().numpy(), tensors.ids_val.cpu().numpy()),
    }


def run(args: argparse.Namespace) -> None:
    panel = load_panel(args.directory, args.tickers)
    base = PanelModelConfig(epochs=args.epochs)
    spec = new_spec(base, panel.input_names, panel.tickers, base.embed)
    parent_rows = {"tickers": spec.tickers, "stride": base.stride}
    cuda = torch.cuda.is_available()
    results: list[dict[str, Any]] = []
    if cuda:
        gpu = torch.device("cuda")
        for batch in sorted({base.batch_size, args.big_batch}):
            results.append(train_once(panel, spec, base.with_(batch_size=batch), gpu, **parent_rows))
    else:
        print("NOTE: no CUDA device here: the GPU rows are skipped and only the CPU rows are measured; "
              "run `python -m bench.gpu run` on a CUDA machine for the GPU figures.")  # fmt: skip
    cpu_rows = []
    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        cpu_config = base.with_(epochs=args.cpu_epochs)
        cpu_rows.append(train_once(panel, spec, cpu_config, torch.device("cpu"), **parent_rows))
    results += cpu_rows
    parent = results[0]
    device = torch.device("cuda" if cuda else "cpu")
    child = base.with_(epochs=args.epochs if cuda else args.cpu_epochs)
    for strategy in ("fine_tune", "freeze"):
        results.append(train_once(
            panel, child_spec(spec, CHILD), child, device, tickers=(CHILD,), stride=1,
            history_days=args.child_days, parent=(parent["_model"], parent["_scaler"]), strategy=strategy,
        ))  # fmt: skip
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    summary: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "panel": {"tickers": len(panel.tickers), "days": len(panel.dates)},
        "rows": rows,
    }
    if cuda:
        x, ids = parent["_val"]
        state = {k: v.cpu() for k, v in parent["_model"].state_dict().items()}
        cpu_model = VolQuantileLSTM(parent["_model"].spec)
        cpu_model.load_state_dict(state)
        on_gpu = predict_z(parent["_model"], x, ids)
        summary["gpu_vs_cpu_prediction_max_abs_diff_z"] = float(
            np.abs(on_gpu - predict_z(cpu_model, x, ids)).max()
        )
        gpu_epoch = parent["median_epoch_s"]
        summary["gpu_speedup_vs_1_thread_cpu_epoch"] = cpu_rows[0]["median_epoch_s"] / gpu_epoch
        summary["gpu_speedup_vs_all_threads_cpu_epoch"] = cpu_rows[-1]["median_epoch_s"] / gpu_epoch
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(summary, indent=1))
    print(f"written {args.out / 'gpu.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["export", "run"])
    parser.add_argument("directory", type=Path, help="where export writes, and run reads, closes.parquet")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each GPU training (all run)")
    parser.add_argument("--cpu-epochs", type=int, default=2, help="epochs of each CPU training")
    parser.add_argument("--tickers", type=int, default=0, help="panel size with ^GSPC and AAPL (0: all 21)")
    parser.add_argument("--big-batch", type=int, default=4096, help="a second, larger GPU batch size")
    parser.add_argument("--child-days", type=int, default=730, help="a child's history (calendar days)")
    args = parser.parse_args()
    export(args.directory) if args.mode == "export" else run(args)


if __name__ == "__main__":
    main()
