"""The walk-forward evaluation over years: refit origins every `refit_months` (the first trading day of
each period), a decision every trading day of the period, every training target known before its origin.

At origin o, with purge = horizon rows and `val_days` of validation:

    [ train decisions ... ] purge [ val: early stopping ] purge | o: decisions o .. next origin - 1

Each refit starts from the previous origin's weights (a warm start: fewer epochs, the same early
stopping). The band is recalibrated per level and horizon on every earlier out-of-sample forecast whose
target is known by o (a calibration split of its own: never the rows that chose the epoch). One period
before `first_year` is a burn-in that only feeds that first calibration. The neural
recipes live in ml.evaluation.neural; the baselines (ml.evaluation.vol_baselines) forecast the same
decisions; ml.evaluation.panel_report turns the forecasts into losses, skill and coverage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.config import EvaluationConfig, StopCallback
from ml.errors import Cancelled, InsufficientHistory
from ml.evaluation.neural import NeuralRecipe
from ml.evaluation.quantile_calibration import apply_shifts, fit_shifts
from ml.training.panel import PanelData, select_samples

ProgressCallback = Callable[[str, int, int], None]  # (what, k, of)


def origin_rows(panel: PanelData, config: EvaluationConfig) -> list[int]:
    """Rows of the refit origins: the burn-in origin, then one every refit_months from first_year."""
    start = pd.Timestamp(year=config.first_year, month=1, day=1) - pd.DateOffset(months=config.refit_months)
    last_decision = panel.dates[-1 - config.horizon]
    rows = []
    day = start
    while day <= last_decision:
        rows.append(panel.date_row(day))
        day += pd.DateOffset(months=config.refit_months)
    rows = sorted(set(rows))
    if len(rows) < 2:
        raise InsufficientHistory(
            f"the panel ends {panel.dates[-1].date()}: too short to evaluate from {config.first_year}"
        )
    return rows


@dataclass(frozen=True)
class WalkForwardRun:
    rows: np.ndarray  # (D,) evaluated decision rows (the burn-in excluded)
    forecasts: dict[str, np.ndarray]  # recipe label -> (D, N, H, L) z-quantiles as served (calibrated)
    raw: dict[str, np.ndarray]  # the same before recalibration
    origins: list[dict[str, object]]  # per origin and recipe: dates, epochs, losses, seconds
    seconds: float


def walk_forward(
    panel: PanelData,
    recipes: list[NeuralRecipe],
    config: EvaluationConfig,
    *,
    should_stop: StopCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> WalkForwardRun:
    """Every recipe through every origin; forecasts for every evaluated decision row and ticker."""
    started = time.perf_counter()
    h = config.horizon
    origins = origin_rows(panel, config)
    last_row = len(panel.dates) - 1 - h  # the last decision whose target is known
    bounds = [*origins[1:], last_row + 1]
    grid = np.arange(origins[0], last_row + 1)
    shape = (len(grid), len(panel.tickers), h, len(config.levels))
    raw = {r.label: np.full(shape, np.nan, np.float32) for r in recipes}
    served = {r.label: np.full(shape, np.nan, np.float32) for r in recipes}
    log: list[dict[str, object]] = []
    z_true = panel.z_targets(h)
    for k, (origin, stop) in enumerate(zip(origins, bounds, strict=True)):
        if should_stop is not None and should_stop():
            raise Cancelled(f"evaluation cancelled before origin {k + 1} of {len(origins)}")
        val_first = origin - h - config.val_days
        train_last = val_first - h - 1
        decisions = select_samples(
            panel, window=config.window, horizon=h, first_row=origin, last_row=stop - 1
        )
        for recipe in recipes:
            if on_progress is not None:
                on_progress(f"origin {panel.dates[origin].date()} · {recipe.label}", k + 1, len(origins))
            fitted = recipe.refit(panel, train_last=train_last, val_first=val_first, val_last=origin - h - 1)
            z = recipe.predict(panel, decisions)
            at = decisions.rows - grid[0]
            raw[recipe.label][at, decisions.cols] = z
            # Calibrate on every earlier out-of-sample forecast whose target is known by now (one year of
            # overlapping windows gave shifts noisy enough to cost more pinball than they saved).
            prev = slice(0, origin - h - grid[0]) if k else slice(0, 0)
            shifts = fit_shifts(raw[recipe.label][prev], z_true[grid[prev]], np.asarray(config.levels))
            served[recipe.label][at, decisions.cols] = apply_shifts(z, shifts)
            log.append(
                {
                    "origin": _day(panel, origin),
                    "recipe": recipe.label,
                    "train_until": _day(panel, max(train_last, 0)),
                    "decisions": [_day(panel, origin), _day(panel, stop - 1)],
                    "n_forecasts": len(decisions),
                    **fitted,
                }
            )
    keep = grid >= origins[1]  # the burn-in period only fed the first calibration
    return WalkForwardRun(
        rows=grid[keep],
        forecasts={name: q[keep] for name, q in served.items()},
        raw={name: q[keep] for name, q in raw.items()},
        origins=log,
        seconds=round(time.perf_counter() - started, 3),
    )


def _day(panel: PanelData, row: int) -> str:
    return panel.dates[row].date().isoformat()
