"""Every number the report uses is derived here, from the forecast, the technical snapshot and the model card.

Both analysts (LLM and deterministic) and the Critic read these facts, so a stance can always be checked
against the same numbers it should have come from.

The model is volatility-scaled: it forecasts the spread of the next days' log returns around a median of
zero (calibration moves it by a hair), so it says how far the price may move, not which way. A direction
can only come from the technicals: the close against its 20- and 50-day averages, measured in units of
the model's 7-day 80 % band, so that a trend counts only when it is large against the moves the model
expects anyway.
"""

from __future__ import annotations

import math
from typing import Any

from agent.evaluation import card_evaluation
from agent.report import fmt
from agent.state import ReportDraft, Stance

# A close within a tenth of the 7-day band's half-width of its nearer average is no trend.
NEUTRAL_EDGE = 0.1
# A close a whole half-width beyond both averages is as clear a trend as moving averages show.
FULL_EDGE = 1.0
# Even a perfect evaluation leaves room for doubt, and even none allows some confidence in a clear trend.
CONFIDENCE_FLOOR = 0.3


def pct(log_return: float) -> float:
    return math.expm1(log_return) * 100.0


def confidence_cap(quality: float) -> float:
    return CONFIDENCE_FLOOR + (1.0 - CONFIDENCE_FLOOR) * quality


def _log_gap(average_rel: float | None) -> float | None:
    """log(close / average), from the stored average / close - 1."""
    return None if average_rel is None else -math.log1p(average_rel)


def trend_gap(snapshot: dict[str, float | None]) -> float | None:
    """The log distance of the close beyond the nearer of its 20- and 50-day averages: positive above both,
    negative below both, zero between them; None when either average is unknown."""
    g20, g50 = _log_gap(snapshot.get("sma_20_rel")), _log_gap(snapshot.get("sma_50_rel"))
    if g20 is None or g50 is None:
        return None
    if g20 > 0 and g50 > 0:
        return min(g20, g50)
    if g20 < 0 and g50 < 0:
        return max(g20, g50)
    return 0.0


def _trend(gap: float | None) -> str:
    if gap is None:
        return "unknown"
    return "up" if gap > 0 else "down" if gap < 0 else "mixed"


def _gap_pct(average_rel: float | None) -> float | None:
    """close / average - 1 in percent."""
    gap = _log_gap(average_rel)
    return None if gap is None else pct(gap)


def _rsi_zone(rsi: float | None) -> str:
    if rsi is None:
        return "unknown"
    if rsi >= 70:
        return "overbought"
    if rsi <= 30:
        return "oversold"
    return "neutral"


def stance_from_numbers(
    forecast: dict[str, Any], snapshot: dict[str, float | None], quality: float
) -> tuple[Stance, float, float]:
    """(stance, confidence, edge): the trend gap in units of the 7-day 80 % band's half-width (log
    returns); the model's median takes no part, being zero by design."""
    seven = forecast["seven_day"]
    half_width = (seven["log_return_p90"] - seven["log_return_p10"]) / 2.0
    gap = trend_gap(snapshot)
    edge = gap / half_width if gap is not None and half_width > 0 else 0.0
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
    evaluation = card_evaluation(card, forecast["ticker"])
    stance, confidence, edge = stance_from_numbers(forecast, snapshot, evaluation["quality"])
    rsi = snapshot.get("rsi_14")
    macd_hist = snapshot.get("macd_hist_rel")
    ret_5d, vol_20 = snapshot.get("log_ret_5d"), snapshot.get("vol_20")
    return {
        "ticker": forecast["ticker"],
        "as_of": forecast["as_of"],
        "data_source": forecast.get("data_source"),
        "last_close": forecast["last_close"],
        "model": forecast["model"],
        "daily_sigma_pct": forecast["band"]["sigma"] * 100,
        "next_day": _point(forecast["next_day"]),
        "seven_day": _point(forecast["seven_day"]),
        "trend": _trend(trend_gap(snapshot)),
        "sma_20_gap_pct": _gap_pct(snapshot.get("sma_20_rel")),
        "sma_50_gap_pct": _gap_pct(snapshot.get("sma_50_rel")),
        "rsi_14": rsi,
        "rsi_zone": _rsi_zone(rsi),
        "macd": "unknown" if macd_hist is None else ("above signal" if macd_hist > 0 else "below signal"),
        "return_5d_pct": None if ret_5d is None else pct(ret_5d),
        "volatility_20d_pct": None if vol_20 is None else vol_20 * 100,
        "evaluation": evaluation,
        "confidence_cap": confidence_cap(evaluation["quality"]),
        "stance": stance,
        "confidence": confidence,
        "edge": round(edge, 3),
    }


def check_report(report: ReportDraft, facts: dict[str, Any]) -> list[str]:
    """The Critic's non-negotiable checks: a direction only where the trend shows one, and a confidence
    the evaluation supports."""
    issues = []
    wanted = {"bullish": "up", "bearish": "down"}.get(report.stance)
    if wanted is not None and facts["trend"] != wanted:
        s20, s50 = fmt(facts["sma_20_gap_pct"], "+.2f", "%"), fmt(facts["sma_50_gap_pct"], "+.2f", "%")
        issues.append(
            f"The stance is {report.stance} but the trend is {facts['trend']} (close {s20} against its "
            f"20-day and {s50} against its 50-day average); the model's median is zero by design, so only "
            "the trend can give a direction."
        )
    cap = facts["confidence_cap"]
    if report.confidence > cap:
        issues.append(
            f"Confidence {report.confidence:.2f} exceeds what the model's evaluation supports (at most "
            f"{cap:.2f}: {facts['evaluation']['basis']})."
        )
    return issues
