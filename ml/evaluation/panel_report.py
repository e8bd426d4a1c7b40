"""Forecasters side by side on one panel's evaluation grid: losses, skill with intervals, DM tests,
coverage, and the verdict a card quotes (pure: arrays in, a JSON-safe dict or a DataFrame out).

Every forecaster's quantiles are on the log-return scale, (D dates, N tickers, H horizons, L levels), NaN
where it has no forecast; a window is one (date, ticker) decision, and its loss is the pinball loss
averaged over the levels and horizons. Skill = 1 - loss / reference loss. The reference (zero+EWMA) and
the strong baselines (GARCH-t + FHS, pooled HAR + FHS) are fixed before any loss is seen, so no
"best baseline" is picked after the fact. Consecutive dates overlap by h - 1 days of target, which the
block bootstrap (Politis–White blocks, whole dates resampled across tickers) and the HAC variance of
the Diebold–Mariano test account for (ml.evaluation.panel_stats).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ml.evaluation.panel_stats import (
    bootstrap_skill,
    diebold_mariano,
    panel_bootstrap_skill,
    pooled_diebold_mariano,
)
from ml.evaluation.quantile_loss import pinball

REFERENCE = "zero_ewma"
STRONG = ("garch_t_fhs", "har_pooled")
COVERAGE_OK = (0.75, 0.85)


def window_losses(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(D, N): each decision's pinball loss averaged over levels and horizons (NaN: no forecast)."""
    return pinball(y, q, levels).mean(axis=(-2, -1))


def crps_weights(levels: np.ndarray) -> np.ndarray:
    """Trapezoid weights of the levels on [0, 1]: CRPS ~ 2 * sum_l w_l * pinball_l for uneven levels."""
    nodes = np.concatenate([[0.0], levels, [1.0]])
    return (nodes[2:] - nodes[:-2]) / 2.0


def in_band(
    y: np.ndarray, q: np.ndarray, levels: np.ndarray, band: tuple[float, float] = (0.1, 0.9)
) -> np.ndarray:
    """(D, N, H) 1.0 where the outcome falls inside the band's quantiles, NaN where there is no forecast."""
    lo, hi = (list(np.round(levels, 6)).index(b) for b in band)
    hit = ((y >= q[..., lo]) & (y <= q[..., hi])).astype(np.float64)
    return np.where(np.isfinite(q[..., lo]) & np.isfinite(y), hit, np.nan)


def _skill_row(
    loss: pd.DataFrame, base: pd.DataFrame, horizon: int, reps: int, seed: int, column: str | None = None
) -> dict[str, Any]:
    if column is None:
        interval = panel_bootstrap_skill(loss, base, reps=reps, seed=seed)
        dm = pooled_diebold_mariano(loss, base, horizon)
    else:
        interval = bootstrap_skill(loss[column].to_numpy(), base[column].to_numpy(), reps=reps, seed=seed)
        dm = diebold_mariano(loss[column].to_numpy(), base[column].to_numpy(), horizon)
    return {
        "skill": interval["skill"],
        "lo": interval["lo"],
        "hi": interval["hi"],
        "block_length": interval["block"],
        "dm_statistic": dm["statistic"],
        "dm_p_value": dm["p_value"],
    }


def compare_panel(
    dates: pd.DatetimeIndex,
    tickers: tuple[str, ...],
    y: np.ndarray,
    forecasts: dict[str, np.ndarray],
    levels: np.ndarray,
    *,
    model: str,
    reps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores of every forecaster, `model`'s skill against each other one, per ticker and pooled.

    Cells where any forecaster has no forecast are dropped for all, so every comparison is on the same
    windows.
    """
    horizon = y.shape[-1]
    losses = {name: window_losses(y, q, levels) for name, q in forecasts.items()}
    common = np.logical_and.reduce([np.isfinite(v) for v in losses.values()])
    frames = {
        name: pd.DataFrame(np.where(common, v, np.nan), dates, list(tickers)) for name, v in losses.items()
    }
    hits = {name: np.where(common[..., None], in_band(y, q, levels), np.nan) for name, q in forecasts.items()}
    others = [name for name in forecasts if name != model]
    pooled = {
        "pinball": {name: float(np.nanmean(f.to_numpy())) for name, f in frames.items()},
        "crps_approx": {
            name: float(2 * np.nanmean(pinball(y, q, levels)[common] @ crps_weights(levels)))
            for name, q in forecasts.items()
        },
        "coverage_80": {name: float(np.nanmean(h)) for name, h in hits.items()},
        "skill": {o: _skill_row(frames[model], frames[o], horizon, reps, seed) for o in others},
    }
    per_ticker = {}
    for i, ticker in enumerate(tickers):
        if not common[:, i].any():
            continue
        per_ticker[ticker] = {
            "n": int(common[:, i].sum()),
            "pinball": float(np.nanmean(frames[model][ticker])),
            "coverage_80": float(np.nanmean(hits[model][:, i])),
            "skill": {o: _skill_row(frames[model], frames[o], horizon, reps, seed, ticker) for o in others},
        }
    return {"pooled": pooled, "per_ticker": per_ticker, "n_windows": int(common.sum())}


def verdict(
    report: dict[str, Any], reference: str = REFERENCE, strong: tuple[str, ...] = STRONG
) -> dict[str, Any]:
    """The sentence a card quotes: skill over the reference declared in advance, and against the strong
    baselines. Measurable means the pooled 90 % interval over the reference lies above zero."""
    s = report["pooled"]["skill"][reference]
    measurable = bool(s["lo"] > 0)
    against = {
        b: {
            "skill": report["pooled"]["skill"][b]["skill"],
            "dm_p_value": report["pooled"]["skill"][b]["dm_p_value"],
        }
        for b in strong
        if b in report["pooled"]["skill"]
    }
    interval = f"{s['skill']:+.1%} (90 % interval {s['lo']:+.1%} to {s['hi']:+.1%})"
    head = (
        f"skill {interval} over zero+EWMA"
        if measurable
        else f"no measurable skill over zero+EWMA: {interval}"
    )
    tail = "; ".join(f"{b} {v['skill']:+.1%} (DM p {v['dm_p_value']:.2f})" for b, v in against.items())
    return {
        "text": f"{head}" + (f"; against {tail}" if tail else ""),
        "measurable": measurable,
        "skill": s["skill"],
        "lo": s["lo"],
        "hi": s["hi"],
        "dm_p_value": s["dm_p_value"],
        "reference": reference,
        "against": against,
    }


def counts(report: dict[str, Any], reference: str = REFERENCE) -> dict[str, int]:
    rows = report["per_ticker"].values()
    lo, hi = COVERAGE_OK
    return {
        "tickers": len(report["per_ticker"]),
        "skill_over_reference": sum(r["skill"][reference]["lo"] > 0 for r in rows),
        "coverage_80_in_75_85": sum(lo <= r["coverage_80"] <= hi for r in rows),
    }


def losses_frame(
    dates: pd.DatetimeIndex,
    tickers: tuple[str, ...],
    y: np.ndarray,
    forecasts: dict[str, np.ndarray],
    levels: np.ndarray,
) -> pd.DataFrame:
    """Long table, one row per (forecaster, ticker, decision date, horizon) with a forecast: the outcome,
    the pinball loss at every level and whether the 80 % band held it (every card figure recomputes
    from it)."""
    names = [f"loss_q{round(100 * level):02d}" for level in levels]
    parts = []
    for name, q in forecasts.items():
        loss = pinball(y, q, levels).astype(np.float32)
        hit = in_band(y, q, levels)
        d, n, h = np.nonzero(np.isfinite(loss).all(axis=-1))
        part = pd.DataFrame(loss[d, n, h], columns=names)
        part.insert(0, "forecaster", name)
        part.insert(1, "ticker", np.asarray(tickers)[n])
        part.insert(2, "decision_date", dates[d])
        part.insert(3, "horizon", (h + 1).astype(np.int8))
        part.insert(4, "y", y[d, n, h].astype(np.float32))
        part["in_band_80"] = hit[d, n, h] == 1.0
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    for column in ("forecaster", "ticker"):
        out[column] = out[column].astype("category")
    return out
