"""Every number the report uses is derived here, from the forecast, the technical snapshot and the model card.

Both analysts (LLM and deterministic) and the Critic read these facts, so a stance can always be checked
against the same numbers it should have come from.
"""

from __future__ import annotations

import math
from typing import Any

from agent.state import ReportDraft, Stance
from ml.evaluation.compare import NO_SKILL

# A 7-day median move under a tenth of the 80% band's half-width is indistinguishable from noise.
NEUTRAL_EDGE = 0.1
# An edge of half the band's half-width is as clear a signal as this model gives.
FULL_EDGE = 0.5
# Even a perfect backtest leaves room for doubt, and even a poor one allows some confidence in a clear signal.
CONFIDENCE_FLOOR = 0.3


def pct(log_return: float) -> float:
    return math.expm1(log_return) * 100.0


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def card_evaluation(card: dict[str, Any]) -> dict[str, Any]:
    """The card's evaluation in one shape: the walk-forward's calibrated band (a served model), else the
    single holdout's test metrics (a model registered before walk-forward, or by a plain library call)."""
    backtest = card.get("backtest") or {}
    served = (backtest.get("metrics") or {}).get("model_cqr")
    if served is not None:
        return {
            "evaluation": "walk_forward",
            "direction_accuracy": served.get("direction_accuracy"),
            "coverage_80": served.get("coverage_80"),
            "mase_persistence": served.get("rel_mae_zero"),  # relative MAE against the zero-return forecast
            "skill": card.get("verdict") or backtest.get("verdict"),
        }
    test = card.get("test") or {}
    return {
        "evaluation": "holdout",
        "direction_accuracy": test.get("direction_accuracy_mean"),
        "coverage_80": test.get("coverage_80_mean"),
        "mase_persistence": test.get("mase_persistence_mean"),
        "skill": None,
    }


def model_quality(ev: dict[str, Any]) -> float:
    """0..1 from the backtest: direction hit rate, 80% band calibration, and skill over the best baseline
    where it is measurable (a walk-forward card), else the relative MAE of a single holdout."""
    parts = []
    if ev.get("direction_accuracy") is not None:
        # 60% right on direction is as good as daily equity models get.
        parts.append(_clip01((ev["direction_accuracy"] - 0.5) / 0.1))
    if ev.get("coverage_80") is not None:
        # A nominal 80% band that covers 60% (or 100%) of outcomes says nothing about risk.
        parts.append(_clip01(1.0 - abs(ev["coverage_80"] - 0.8) / 0.2))
    if ev.get("skill") is not None:
        # Only the lower end of the interval counts: a 90% interval from +5% up earns full marks.
        parts.append(_clip01(ev["skill"]["lo"] / 0.05) if ev["skill"]["measurable"] else 0.0)
    elif ev.get("mase_persistence") is not None:
        # 10% better than "tomorrow = today" earns full marks; 10% worse earns none.
        parts.append(_clip01((1.1 - ev["mase_persistence"]) / 0.2))
    return sum(parts) / len(parts) if parts else 0.0


def confidence_cap(quality: float) -> float:
    return CONFIDENCE_FLOOR + (1.0 - CONFIDENCE_FLOOR) * quality


def skill_text(ev: dict[str, Any]) -> str:
    """Skill as the card states it, with its interval; a holdout has none, so it claims none."""
    if ev.get("skill") is not None:
        return str(ev["skill"]["text"])
    if ev.get("mase_persistence") is not None:
        return f"{NO_SKILL} shown: a single holdout, no interval"
    return "no backtest"


def _backtest_verdict(ev: dict[str, Any]) -> str:
    words = [skill_text(ev)]
    coverage = ev.get("coverage_80")
    if coverage is not None:
        if coverage < 0.75:
            words.append("80% band too narrow")
        elif coverage > 0.85:
            words.append("80% band too wide")
        else:
            words.append("80% band well calibrated")
    return ", ".join(words)


def _trend(snapshot: dict[str, float | None]) -> str:
    # *_rel is average / close - 1, so a negative value means the close is above that average.
    s20, s50 = snapshot.get("sma_20_rel"), snapshot.get("sma_50_rel")
    if s20 is None or s50 is None:
        return "unknown"
    if s20 < 0 and s50 < 0:
        return "up"
    if s20 > 0 and s50 > 0:
        return "down"
    return "mixed"


def _gap_pct(average_rel: float | None) -> float | None:
    """close / average - 1 in percent, from the stored average / close - 1."""
    return None if average_rel is None else (1.0 / (1.0 + average_rel) - 1.0) * 100.0


def _rsi_zone(rsi: float | None) -> str:
    if rsi is None:
        return "unknown"
    if rsi >= 70:
        return "overbought"
    if rsi <= 30:
        return "oversold"
    return "neutral"


def stance_from_numbers(forecast: dict[str, Any], quality: float) -> tuple[Stance, float, float]:
    """(stance, confidence, edge): the 7-day median log return in units of the 80% band's half-width."""
    seven = forecast["seven_day"]
    half_width = (seven["log_return_p90"] - seven["log_return_p10"]) / 2.0
    edge = seven["log_return_p50"] / half_width if half_width > 0 else 0.0
    stance: Stance
    if edge >= NEUTRAL_EDGE:
        stance, clarity = "bullish", min(1.0, edge / FULL_EDGE)
    elif edge <= -NEUTRAL_EDGE:
        stance, clarity = "bearish", min(1.0, -edge / FULL_EDGE)
    else:
        stance, clarity = "neutral", 1.0 - abs(edge) / NEUTRAL_EDGE
    # Rounded down so that the stated confidence never exceeds the cap the Critic enforces.
    return stance, math.floor(clarity * confidence_cap(quality) * 100) / 100, edge


def _point(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "date": step["date"],
        "p10": step["p10"],
        "p50": step["p50"],
        "p90": step["p90"],
        "return_p50_pct": pct(step["log_return_p50"]),
        "band_pct": (pct(step["log_return_p10"]), pct(step["log_return_p90"])),
    }


def performance_facts(
    forecast: dict[str, Any], snapshot: dict[str, float | None], card: dict[str, Any]
) -> dict[str, Any]:
    ev = card_evaluation(card)
    quality = model_quality(ev)
    stance, confidence, edge = stance_from_numbers(forecast, quality)
    rsi = snapshot.get("rsi_14")
    macd_hist = snapshot.get("macd_hist_rel")
    ret_5d, vol_20 = snapshot.get("log_ret_5d"), snapshot.get("vol_20")
    return {
        "ticker": forecast["ticker"],
        "as_of": forecast["as_of"],
        "data_source": forecast.get("data_source"),
        "last_close": forecast["last_close"],
        "model": forecast["model"],
        "next_day": _point(forecast["next_day"]),
        "seven_day": _point(forecast["seven_day"]),
        "trend": _trend(snapshot),
        "sma_20_gap_pct": _gap_pct(snapshot.get("sma_20_rel")),
        "sma_50_gap_pct": _gap_pct(snapshot.get("sma_50_rel")),
        "rsi_14": rsi,
        "rsi_zone": _rsi_zone(rsi),
        "macd": "unknown" if macd_hist is None else ("above signal" if macd_hist > 0 else "below signal"),
        "return_5d_pct": None if ret_5d is None else pct(ret_5d),
        "volatility_20d_pct": None if vol_20 is None else vol_20 * 100,
        "backtest": {
            "evaluation": ev["evaluation"],
            "direction_accuracy": ev["direction_accuracy"],
            "coverage_80": ev["coverage_80"],
            "mase_persistence": ev["mase_persistence"],
            "skill": skill_text(ev),
            "quality": quality,
            "verdict": _backtest_verdict(ev),
        },
        "confidence_cap": confidence_cap(quality),
        "stance": stance,
        "confidence": confidence,
        "edge": round(edge, 3),
    }


def check_report(report: ReportDraft, facts: dict[str, Any]) -> list[str]:
    """The Critic's non-negotiable checks: the stance and confidence must agree with the numbers."""
    issues = []
    seven = facts["seven_day"]
    move = seven["return_p50_pct"]
    if report.stance == "bullish" and move < 0:
        issues.append(
            f"The stance is bullish but the 7-day median forecast is {move:+.2f}% "
            f"({seven['p50']:.2f} against a last close of {facts['last_close']:.2f})."
        )
    if report.stance == "bearish" and move > 0:
        issues.append(
            f"The stance is bearish but the 7-day median forecast is {move:+.2f}% "
            f"({seven['p50']:.2f} against a last close of {facts['last_close']:.2f})."
        )
    cap = facts["confidence_cap"]
    if report.confidence > cap:
        issues.append(
            f"Confidence {report.confidence:.2f} exceeds what the backtest supports (at most {cap:.2f}: "
            f"{facts['backtest']['verdict']})."
        )
    return issues
