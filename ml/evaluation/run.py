"""An evaluation from end to end: the walk-forward of neural recipes, the baselines on the same decisions,
the comparison and the per-window losses (`evaluate`, pure), and the `evaluate` job's adapter that reads
the panel from the feature store and records the result in the registry (`evaluate_panel`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml.config import EpochCallback, EvaluationConfig, StopCallback
from ml.evaluation.neural import GlobalRecipe, NeuralRecipe
from ml.evaluation.panel_report import compare_panel, counts, losses_frame, verdict
from ml.evaluation.quantile_calibration import fit_shifts
from ml.evaluation.vol_baselines import BASELINES, baseline_quantiles
from ml.evaluation.walk_forward import ProgressCallback, WalkForwardRun, origin_rows, walk_forward
from ml.model.vol_lstm import horizon_scale
from ml.tickers import INDEX_TICKER
from ml.training.loop import resolve_device
from ml.training.panel import PanelData, build_panel

if TYPE_CHECKING:  # the adapters arrive as arguments
    from ml.features.store import FeatureStore
    from ml.registry.mlflow_registry import ModelRegistry

LOSSES_FILE = "losses.parquet"
SERVED_RECIPE = "global"


@dataclass(frozen=True)
class Evaluation:
    reports: dict[str, dict[str, Any]]  # recipe label -> comparison, verdict and counts
    losses: pd.DataFrame  # every forecaster's per-window losses (ml.evaluation.panel_report.losses_frame)
    run: WalkForwardRun
    baselines_seconds: float


def daily_returns(panel: PanelData) -> dict[str, pd.Series]:
    """Log returns per ticker on the panel's calendar; a missing close inside a history counts as no move."""
    closes = pd.DataFrame(panel.log_close, index=panel.dates, columns=list(panel.tickers)).ffill()
    returns = closes.diff()
    return {t: returns[t] for t in panel.tickers}


def evaluate(
    panel: PanelData,
    recipes: list[NeuralRecipe],
    config: EvaluationConfig,
    *,
    baselines: tuple[str, ...] = BASELINES,
    with_raw: bool = False,
    should_stop: StopCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> Evaluation:
    run = walk_forward(panel, recipes, config, should_stop=should_stop, on_progress=on_progress)
    h, levels = config.horizon, np.asarray(config.levels)
    dates = panel.dates[run.rows]
    scale = horizon_scale(panel.sigma[run.rows], h)
    forecasts = {label: q * scale[..., None] for label, q in run.forecasts.items()}
    if with_raw:  # the same models before the recalibration: what the recalibration is worth
        forecasts |= {f"{label}_raw": q * scale[..., None] for label, q in run.raw.items()}
    if on_progress is not None:
        on_progress("baselines", 1, 1)
    started = time.perf_counter()
    origins = panel.dates[origin_rows(panel, config)[1:]]
    fitted = baseline_quantiles(daily_returns(panel), dates, origins, h, levels, names=baselines)
    reference = {
        name: np.stack([per_ticker[t] for t in panel.tickers], axis=1) for name, per_ticker in fitted.items()
    }
    baselines_seconds = round(time.perf_counter() - started, 3)
    y = panel.log_returns(h)[run.rows]
    reports = {}
    for label, q in forecasts.items():
        report = compare_panel(
            dates, panel.tickers, y, {label: q, **reference}, levels, model=label,
            reps=config.bootstrap_reps, seed=config.seed,
        )  # fmt: skip
        reports[label] = {**report, "verdict": verdict(report), "counts": counts(report)}
    losses = losses_frame(dates, panel.tickers, y, {**forecasts, **reference}, levels)
    return Evaluation(reports, losses, run, baselines_seconds)


def serving_calibration(panel: PanelData, run: WalkForwardRun, label: str, config: EvaluationConfig) -> dict:
    """Shifts for the served model, fit on every raw out-of-sample forecast of the evaluation."""
    shifts = fit_shifts(run.raw[label], panel.z_targets(config.horizon)[run.rows], np.asarray(config.levels))
    return {"levels": list(config.levels), "shifts": shifts.tolist()}


def evaluate_panel(
    store: FeatureStore,
    registry: ModelRegistry,
    config: EvaluationConfig,
    *,
    tickers: list[str] | None = None,
    should_stop: StopCallback | None = None,
    on_progress: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """The `evaluate` job: the served recipe over the stored panel (every ingested ticker by default),
    recorded in the registry with its per-window losses; returns the summary a card quotes. `on_progress`
    sees each origin (then the baselines), `on_epoch` each epoch of each origin's fit."""
    started = time.perf_counter()
    names = sorted({*(tickers or store.tickers()), INDEX_TICKER})
    panel = build_panel({t: store.training_frame(t)["close"] for t in names})
    universe = None if config.universe == "panel" else (INDEX_TICKER,)
    recipe = GlobalRecipe(SERVED_RECIPE, config.model, universe=universe, on_epoch=on_epoch)
    result = evaluate(panel, [recipe], config, should_stop=should_stop, on_progress=on_progress)
    report = result.reports[SERVED_RECIPE]
    dates = panel.dates[result.run.rows]
    summary = {
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": SERVED_RECIPE,
        "universe": config.universe,
        "config": config.model_dump(mode="json"),
        "reference": "zero_ewma",
        "baselines": [b for b in BASELINES if b != "zero_ewma"],
        "period": [dates[0].date().isoformat(), dates[-1].date().isoformat()],
        "tickers": list(panel.tickers),
        "n_decisions": len(dates),
        "origins": len(origin_rows(panel, config)) - 1,
        "device": str(resolve_device(config.model.device)),
        "seconds": round(time.perf_counter() - started, 3),
        "walk_forward_seconds": result.run.seconds,
        "baselines_seconds": result.baselines_seconds,
        "pooled": report["pooled"],
        "per_ticker": report["per_ticker"],
        "verdict": report["verdict"],
        "counts": report["counts"],
        "calibration": serving_calibration(panel, result.run, SERVED_RECIPE, config),
        "losses_artifact": LOSSES_FILE,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / LOSSES_FILE
        result.losses.to_parquet(path, index=False, compression="zstd")
        run_id = registry.record_evaluation(summary, {LOSSES_FILE: path})
    return {**summary, "run_id": run_id}
