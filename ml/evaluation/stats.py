"""Significance for forecast comparisons (pure: arrays in, JSON-safe dicts out; None where undefined).

Walk-forward windows are daily and their h-day targets overlap, so consecutive losses are dependent over
at least h - 1 lags. Everything here respects that:

- `bootstrap_mean` / `bootstrap_skill`: moving-block bootstrap (Kuensch 1989; arch.bootstrap), percentile
  intervals, blocks of `2 * horizon` windows by default (twice the overlap, so a block carries the whole
  dependence of one target and some of the volatility clustering). Pairs are resampled together, so a
  skill interval reflects the correlation between the two forecasters' losses.
- `diebold_mariano`: the DM test (Diebold & Mariano 1995) of equal expected loss, one-sided for "the
  candidate's loss is lower". The variance of the mean loss differential is Newey–West (Bartlett kernel)
  at lag h - 1 (statsmodels HAC, no df correction), which is never negative, unlike DM's rectangular
  kernel. Small samples: the statistic gets the Harvey–Leybourne–Newbold (1997) factor
  sqrt((n + 1 - 2h + h (h - 1) / n) / n) and is compared with Student's t(n - 1), which HLN show keeps the
  size close to nominal for n of a few dozen; the factor was derived for the rectangular kernel, so with
  Bartlett weights the test is, if anything, slightly conservative.
- `pesaran_timmermann`: the PT (1992) test that predicted and realised signs are independent, one-sided
  for "better than chance given both marginal up-rates". It assumes independent observations: on
  overlapping multi-day returns it over-rejects, so read it as descriptive at h > 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.regression.linear_model import OLS

LEVEL = 0.9
REPS = 1000


def default_block(n: int, horizon: int) -> int:
    return max(1, min(2 * horizon, n // 2))


def _interval(
    block: int, arrays: tuple[np.ndarray, ...], func: Any, level: float, reps: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of func(*resampled arrays) under a moving-block bootstrap of the rows."""
    # Imported here: `arch` loads its whole volatility-model package, seconds that every importer of
    # ml.evaluation.evaluate (so ml.training.train) would pay for a bootstrap it may never run.
    from arch.bootstrap import MovingBlockBootstrap

    mbb = MovingBlockBootstrap(block, *arrays, seed=np.random.default_rng(seed))
    lo, hi = mbb.conf_int(func, reps=reps, method="percentile", size=level)[:, 0]
    return float(lo), float(hi)


def bootstrap_mean(
    x: np.ndarray,
    *,
    horizon: int,
    block: int | None = None,
    level: float = LEVEL,
    reps: int = REPS,
    seed: int = 0,
) -> dict[str, float]:
    """The mean of a loss (or loss-difference) series with a moving-block bootstrap `level` interval."""
    x = np.asarray(x, dtype=np.float64)
    block = block or default_block(len(x), horizon)
    lo, hi = _interval(block, (x,), lambda a: np.array([a.mean()]), level, reps, seed)
    return {"mean": float(x.mean()), "lo": lo, "hi": hi, "level": level, "block": block}


def skill(loss: np.ndarray, base_loss: np.ndarray) -> float:
    """1 - loss / baseline loss on the means: > 0 means better than the baseline, 1 is perfect."""
    return float(1.0 - np.mean(loss) / np.mean(base_loss))


def bootstrap_skill(
    loss: np.ndarray,
    base_loss: np.ndarray,
    *,
    horizon: int,
    block: int | None = None,
    level: float = LEVEL,
    reps: int = REPS,
    seed: int = 0,
) -> dict[str, float]:
    """The skill score with a paired moving-block bootstrap interval."""
    loss, base_loss = np.asarray(loss, np.float64), np.asarray(base_loss, np.float64)
    block = block or default_block(len(loss), horizon)
    lo, hi = _interval(block, (loss, base_loss), lambda a, b: np.array([skill(a, b)]), level, reps, seed)
    return {"skill": skill(loss, base_loss), "lo": lo, "hi": hi, "level": level, "block": block}


def diebold_mariano(loss: np.ndarray, base_loss: np.ndarray, *, horizon: int) -> dict[str, Any]:
    """One-sided DM test of H1 "`loss` is lower on average than `base_loss`" (HLN-corrected, t(n-1)).

    A small p-value is evidence that the candidate is better. Identical losses give statistic 0, p 0.5.
    """
    d = np.asarray(loss, np.float64) - np.asarray(base_loss, np.float64)
    n, lag = len(d), horizon - 1
    if n < 2 * horizon + 2:
        raise ValueError(
            f"Diebold–Mariano at horizon {horizon} needs at least {2 * horizon + 2} pairs, got {n}"
        )
    mean = float(d.mean())
    out: dict[str, Any] = {"mean_diff": mean, "n": n, "lag": lag}
    if np.ptp(d) == 0.0:  # a constant differential has no variance: the sign is the whole answer
        return {
            **out,
            "statistic": 0.0 if mean == 0 else None,
            "p_value": 0.5 if mean == 0 else float(mean > 0),
        }
    fit = OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False})
    hln = math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    statistic = float(mean / fit.bse[0] * hln)
    return {**out, "statistic": statistic, "p_value": float(stats.t.cdf(statistic, df=n - 1))}


def pesaran_timmermann(predicted_up: np.ndarray, realised_up: np.ndarray) -> dict[str, Any]:
    """PT statistic and one-sided p-value for booleans "predicted up" vs "went up"; None if undefined.

    Undefined when either side never changes (a constant call has no timing to test).
    """
    x, y = np.asarray(predicted_up, bool), np.asarray(realised_up, bool)
    n = len(y)
    p_hat, px, py = float((x == y).mean()), float(x.mean()), float(y.mean())
    p_star = py * px + (1 - py) * (1 - px)
    var_p = p_star * (1 - p_star) / n
    var_star = (
        (2 * py - 1) ** 2 * px * (1 - px) / n
        + (2 * px - 1) ** 2 * py * (1 - py) / n
        + 4 * py * px * (1 - py) * (1 - px) / n**2
    )
    denom = var_p - var_star
    if n < 2 or min(px, py) == 0.0 or max(px, py) == 1.0 or denom <= 0:
        return {"statistic": None, "p_value": None, "n": n}
    statistic = (p_hat - p_star) / math.sqrt(denom)
    return {"statistic": float(statistic), "p_value": float(stats.norm.sf(statistic)), "n": n}
