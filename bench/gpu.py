"""CUDA check for the device machine: the real training loop (`ml.training.train.fit`, AMP on CUDA) on ^GSPC,
epoch time on the GPU next to the CPU's, a freeze and a fine-tune child on the GPU, and GPU vs CPU
predictions from the same weights.

Here: `python -m bench.gpu export .devdata` writes the feature frames (no Feast or MLflow is needed
there). There: `python -m bench.gpu run .devdata --out $OUT`."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ml.features.technical import MODEL_FEATURES
from ml.model.lstm import ModelSpec, QuantileLSTM, predict_log_returns
from ml.training.train import TrainConfig, autocast_dtype, fit, prepare

TICKERS = ("^GSPC", "AAPL")


class ParquetFrames:
    """The one method of the feature store that training reads, served from exported parquet files."""

    def __init__(self, directory: Path) -> None:
        self.frames = {t: pd.read_parquet(directory / f"{t.replace('^', '_')}.parquet") for t in TICKERS}

    def training_frame(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        frame = self.frames[ticker]
        return frame.loc[pd.Timestamp(start) if start else None : pd.Timestamp(end) if end else None]


def export(directory: Path) -> None:
    from ml.data.bundled import BundledSource
    from ml.features.technical import compute_features, model_rows

    directory.mkdir(parents=True, exist_ok=True)
    for ticker in TICKERS:
        rows = model_rows(compute_features(BundledSource().fetch(ticker)))
        rows.to_parquet(directory / f"{ticker.replace('^', '_')}.parquet")
        print(ticker, len(rows))


def train_once(
    frames: ParquetFrames, ticker: str, config: TrainConfig, init: dict | None, freeze: bool
) -> dict:
    device = torch.device(config.device or "cpu")
    spec = ModelSpec(len(MODEL_FEATURES), config.hidden, config.layers, config.dropout, config.window, 7)
    prep = prepare(frames, ticker, config, spec, device)  # type: ignore[arg-type]
    torch.manual_seed(config.seed)
    model = QuantileLSTM(spec)
    if init is not None:
        model.load_state_dict(init)
    if freeze:
        model.lstm.requires_grad_(False)
    model.to(device)
    before = {k: v.detach().clone() for k, v in model.lstm.state_dict().items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fitted = fit(
        model,
        prep.tensors,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        patience=config.epochs,
        seed=config.seed,
        freeze_lstm=freeze,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    epochs = [h["seconds"] for h in fitted.history]
    lstm_changed = any(not torch.equal(before[k], v) for k, v in model.lstm.state_dict().items())
    x_test = prep.data.windows[prep.split.test]
    return {
        "ticker": ticker,
        "device": str(device),
        "amp": str(autocast_dtype(device)),
        "batch_size": config.batch_size,
        "train_samples": int(prep.tensors.x_train.shape[0]),
        "epochs": len(epochs),
        "first_epoch_s": epochs[0],
        "median_epoch_s": statistics.median(epochs[1:] or epochs),
        "wall_s": time.perf_counter() - started,
        "best_val_loss": fitted.best_val_loss,
        "finite": bool(np.isfinite(fitted.best_val_loss)),
        "lstm_changed": lstm_changed,
        "_model": model,
        "_scaler": prep.scaler,
        "_x_test": x_test,
    }


def run(directory: Path, out: Path, epochs: int) -> None:
    frames = ParquetFrames(directory)
    assert torch.cuda.is_available(), "no CUDA device"
    results = []
    base = TrainConfig(epochs=epochs, device="cuda")
    for batch in (64, 512):
        gpu = train_once(frames, "^GSPC", base.with_(batch_size=batch), None, False)
        results.append(gpu)
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        cpu = train_once(frames, "^GSPC", base.with_(device="cpu", epochs=2), None, False)
        cpu["cpu_threads"] = threads
        results.append(cpu)
    parent = results[0]
    state = {k: v.cpu() for k, v in parent["_model"].state_dict().items()}
    child = base.with_(history_days=730, lr=1e-4)
    results.append({**train_once(frames, "AAPL", child, state, freeze=False), "strategy": "fine_tune"})
    results.append(
        {**train_once(frames, "AAPL", child.with_(lr=1e-3), state, freeze=True), "strategy": "freeze"}
    )
    on_gpu = predict_log_returns(
        parent["_model"], parent["_scaler"], parent["_x_test"], device=torch.device("cuda")
    )
    cpu_model = QuantileLSTM(parent["_model"].spec)
    cpu_model.load_state_dict(state)
    on_cpu = predict_log_returns(cpu_model.eval(), parent["_scaler"], parent["_x_test"])
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    summary = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "rows": rows,
        "gpu_vs_cpu_prediction_max_abs_diff": float(np.abs(on_gpu - on_cpu).max()),
        "gpu_speedup_vs_1_thread_cpu_epoch": rows[2]["median_epoch_s"] / rows[0]["median_epoch_s"],
        "gpu_speedup_vs_all_threads_cpu_epoch": rows[3]["median_epoch_s"] / rows[0]["median_epoch_s"],
    }
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["export", "run"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    export(args.directory) if args.mode == "export" else run(args.directory, args.out, args.epochs)


if __name__ == "__main__":
    main()
