"""Champion decisions: does a newly registered version replace the champion? (pure but for loading it)

Walk-forward (the served models): the candidate replaces the champion only when its pinball loss is lower
on the SAME walk-forward windows (matched by decision date) by a one-sided Diebold–Mariano test with HAC
variance at lag h - 1, at p < 0.10 (ml.evaluation.compare.decide_promotion). The loss of a window is its
pinball loss at each horizon divided by the champion's mean loss at that horizon, then averaged over horizons:
every horizon weighs the same. Unscaled, the 7-day losses (about sqrt(7) times the 1-day ones, and where daily
returns leave almost nothing to learn) would drown the short horizons, and the test would mostly measure
noise; scaled, a real short-horizon edge shows while the test stays one test per window series. A champion
without comparable windows (a first champion, a card from before walk-forward, or a period that no longer
overlaps) is replaced, and the decision says why.

Holdout (a plain library training without a backtest config): the champion is re-scored on the
candidate's own test windows and kept when the candidate's relative MAE is higher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ml.errors import CorruptModel
from ml.evaluation.compare import PROMOTION_P, decide_promotion
from ml.evaluation.evaluate import evaluate
from ml.model.lstm import predict_log_returns

if TYPE_CHECKING:
    from ml.registry.mlflow_registry import ModelRegistry

CHAMPION_METRIC = "mase_persistence_mean"  # holdout only; lower is better
SERVED = "model_cqr"  # the calibrated band is what users get, so it is what is compared


def matched_losses(
    candidate: dict[str, Any], champion: dict[str, Any], *, candidate_name: str = SERVED,
    champion_name: str = SERVED,
) -> tuple[np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """Two backtests' (n, h) per-window pinball losses on their common decision dates, in date order."""
    cand_w, champ_w = candidate["windows"], champion["windows"]
    champ_at = {d: i for i, d in enumerate(champ_w["dates"])}
    common = [(i, champ_at[d]) for i, d in enumerate(cand_w["dates"]) if d in champ_at]
    dates = [cand_w["dates"][i] for i, _ in common]
    cand = np.asarray(cand_w["pinball"][candidate_name], np.float64)[[i for i, _ in common]]
    champ = np.asarray(champ_w["pinball"][champion_name], np.float64)[[j for _, j in common]]
    return cand, champ, dates


def compare_backtests(
    candidate: dict[str, Any], champion: dict[str, Any], *, champion_name: str = SERVED,
    p_threshold: float = PROMOTION_P,
) -> dict[str, Any] | None:  # fmt: skip
    """The DM promotion test of two walk-forward results, or None without enough common windows."""
    if "windows" not in champion or "windows" not in candidate:
        return None
    cand, champ, dates = matched_losses(candidate, champion, champion_name=champion_name)
    horizon = cand.shape[1] if cand.ndim == 2 else 0
    if len(dates) < 2 * horizon + 2 or horizon == 0:
        return None
    scale = np.maximum(champ.mean(axis=0), 1e-12)
    decision = decide_promotion(
        (cand / scale).mean(axis=1), (champ / scale).mean(axis=1), horizon=horizon, p_threshold=p_threshold
    )
    return {
        **decision,
        "loss": "pinball per window, each horizon divided by the champion's mean loss there",
        "candidate_pinball": float(cand.mean()),
        "champion_pinball": float(champ.mean()),
        "windows": [dates[0], dates[-1]],
    }


def walk_forward_decision(
    name: str, current: str | None, candidate: dict[str, Any], champion_card: dict[str, Any] | None
) -> dict[str, Any]:
    """The recorded decision: `promote`, `text`, and the test's numbers when there was a test."""
    if current is None:
        return {"promote": True, "text": f"promoted: first champion of {name}"}
    champion = (champion_card or {}).get("backtest") or {}
    result = compare_backtests(candidate, champion)
    if result is None:
        return {
            "promote": True,
            "text": f"promoted: champion v{current} has no walk-forward windows in common to compare on",
        }
    numbers = (
        f"pinball {result['candidate_pinball']:.5f} vs champion v{current}'s "
        f"{result['champion_pinball']:.5f} "
        f"on the same {result['n']} walk-forward windows, DM {result['dm_statistic']:+.2f}, "
        f"p = {result['p_value']:.3f}"
    )
    if result["promote"]:
        return {**result, "text": f"promoted: {numbers} < {result['threshold']}"}
    return {**result, "text": f"kept champion v{current}: {numbers}, not below {result['threshold']}"}


def holdout_decision(
    registry: ModelRegistry,
    name: str,
    current: str | None,
    test: dict[str, Any],
    x_test: np.ndarray,
    y_test: np.ndarray,
    drift: float,
) -> tuple[bool, str]:
    """Promote unless the current champion is better on CHAMPION_METRIC.

    Where the architectures allow, the champion is re-scored on the candidate's own test windows, since
    two test periods are not comparable; its score from its own card is the fallback.
    """
    if current is None:
        return True, f"promoted: first champion of {name}"
    try:
        champion = registry.load(name, current)
    except CorruptModel as exc:
        return True, f"promoted: champion v{current} cannot be loaded ({exc.message})"
    spec = champion.model.spec
    if spec.window <= x_test.shape[1] and spec.horizon == y_test.shape[1]:
        pred = predict_log_returns(champion.model, champion.scaler, x_test)
        old = float(evaluate(y_test, pred, drift_per_day=drift)[CHAMPION_METRIC])
        basis = "on the same test windows"
    elif CHAMPION_METRIC in (champion.card.get("test") or {}):
        old = float(champion.card["test"][CHAMPION_METRIC])
        basis = "on its own test period (shapes differ)"
    else:
        return True, f"promoted: champion v{current} has no holdout score to compare with"
    new = float(test[CHAMPION_METRIC])
    if new <= old:
        return True, f"promoted: test {CHAMPION_METRIC} {new:.4f} <= champion v{current}'s {old:.4f} {basis}"
    return False, f"kept champion v{current}: test {CHAMPION_METRIC} {new:.4f} > its {old:.4f} {basis}"
