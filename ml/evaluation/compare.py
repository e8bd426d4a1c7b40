"""Forecasters side by side on the same windows: scores, intervals, skill, a verdict, a promotion rule.

Pure: (n, h) targets and a dict of (n, h, 3) quantile forecasts in, a JSON-safe dict out. The windows
must be consecutive days (a walk-forward's evaluation windows, concatenated in date order), because the
block bootstrap and the HAC variance rely on the dependence being between neighbours.

The loss compared is each window's pinball loss averaged over the three levels and all h horizons (one
number per 7-day forecast); its differentials are dependent over h - 1 lags (see ml.evaluation.stats).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.evaluation.scoring import pinball_losses, score
from ml.evaluation.stats import REPS, bootstrap_mean, bootstrap_skill, diebold_mariano

PROMOTION_P = 0.10
NO_SKILL = "no measurable skill"


def window_losses(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n,): each window's pinball loss, averaged over quantile levels and horizons."""
    return pinball_losses(y, q).mean(axis=1)


def skill_against(
    y: np.ndarray, q: np.ndarray, base_q: np.ndarray, *, reps: int = REPS, seed: int = 0
) -> dict[str, Any]:
    """Pinball skill of q over base_q: point, bootstrap interval, one-sided DM; per horizon (point, DM)."""
    horizon = y.shape[1]
    loss, base = pinball_losses(y, q), pinball_losses(y, base_q)
    overall = bootstrap_skill(loss.mean(axis=1), base.mean(axis=1), horizon=horizon, reps=reps, seed=seed)
    dm = diebold_mariano(loss.mean(axis=1), base.mean(axis=1), horizon=horizon)
    per_horizon = [
        {
            "horizon": h + 1,
            "skill": float(1.0 - loss[:, h].mean() / base[:, h].mean()),
            "dm_p_value": diebold_mariano(loss[:, h], base[:, h], horizon=h + 1)["p_value"],
        }
        for h in range(horizon)
    ]
    return {
        **overall,
        "dm_statistic": dm["statistic"],
        "dm_p_value": dm["p_value"],
        "significant": overall["lo"] > 0,
        "per_horizon": per_horizon,
    }


def verdict(skills: dict[str, dict[str, Any]], losses: dict[str, float]) -> dict[str, Any]:
    """The sentence a card, report or CLI quotes: skill over the best (lowest-loss) baseline.

    "Measurable" means the bootstrap interval excludes zero from below; anything else, including a model
    that is reliably worse, is reported as no measurable skill.
    """
    best = min(skills, key=lambda name: losses[name])
    s = skills[best]
    interval = f"{s['skill']:+.1%} (90 % interval {s['lo']:+.1%} to {s['hi']:+.1%})"
    if s["lo"] > 0:
        text = f"skill {interval} over the best baseline, {best}"
    else:
        text = f"{NO_SKILL} over the best baseline, {best}: skill {interval}"
    return {
        "best_baseline": best,
        "measurable": bool(s["lo"] > 0),
        **{k: s[k] for k in ("skill", "lo", "hi")},
        "dm_p_value": s["dm_p_value"],
        "text": text,
    }


def compare(
    y: np.ndarray,
    forecasts: dict[str, np.ndarray],
    *,
    candidates: tuple[str, ...],
    reference: str,
    mase_scale: np.ndarray,
    reps: int = REPS,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores of every forecaster, a 90 % interval on each mean pinball loss, each candidate's skill
    against every non-candidate (the baselines), and each other baseline's skill against `reference`
    (the random walk: is there anything to learn at all?). The verdict is for the first candidate."""
    horizon = y.shape[1]
    metrics = {name: score(y, q, mase_scale=mase_scale) for name, q in forecasts.items()}
    intervals = {
        name: bootstrap_mean(window_losses(y, q), horizon=horizon, reps=reps, seed=seed)
        for name, q in forecasts.items()
    }
    baselines = [name for name in forecasts if name not in candidates]
    skill = {
        c: {b: skill_against(y, forecasts[c], forecasts[b], reps=reps, seed=seed) for b in baselines}
        for c in candidates
    }
    baseline_skill = {
        b: skill_against(y, forecasts[b], forecasts[reference], reps=reps, seed=seed)
        for b in baselines
        if b != reference
    }
    losses = {name: m["pinball"] for name, m in metrics.items()}
    return {
        "n_windows": len(y),
        "metrics": metrics,
        "pinball_interval": intervals,
        "skill": skill,
        "baseline_skill": {"reference": reference, **baseline_skill},
        "verdict": verdict(skill[candidates[0]], losses),
    }


def decide_promotion(
    candidate_loss: np.ndarray, champion_loss: np.ndarray, *, horizon: int, p_threshold: float = PROMOTION_P
) -> dict[str, Any]:
    """Promote only if the candidate's per-window loss is lower by a one-sided DM test at p < p_threshold.

    Both loss series must be on the same windows (e.g. `window_losses` of each on one walk-forward).
    """
    dm = diebold_mariano(candidate_loss, champion_loss, horizon=horizon)
    promote = dm["p_value"] < p_threshold
    return {
        "promote": bool(promote),
        "candidate_loss": float(np.mean(candidate_loss)),
        "champion_loss": float(np.mean(champion_loss)),
        "dm_statistic": dm["statistic"],
        "p_value": dm["p_value"],
        "threshold": p_threshold,
        "n": dm["n"],
    }
