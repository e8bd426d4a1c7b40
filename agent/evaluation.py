"""What the model card's evaluation says about one ticker's forecast, and how far it lets the report trust it.

A card quotes the latest walk-forward evaluation of its recipe (ml.evaluation.run), or none yet. The agent
reads the skill over zero+EWMA (the reference declared before any loss was seen) with its 90 % interval
and the 80 % band's coverage, from the ticker's own row of the evaluation when it has one (else pooled
over the panel), and turns them into the quality that caps the report's confidence.
"""

from __future__ import annotations

from typing import Any

from ml.evaluation.panel_report import COVERAGE_OK, REFERENCE, verdict
from ml.evaluation.promotion import NOT_EVALUATED, card_verdict

# Pinball skill over zero+EWMA is a few percent at best for daily volatility forecasts, so a 90 % interval
# that starts at +2 % earns full marks; an interval that reaches zero earns none.
FULL_SKILL_LO = 0.02
# A nominal 80 % band that covers 60 % (or 100 %) of outcomes says nothing about risk.
COVERAGE_SLACK = 0.2


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _coverage_words(coverage: float) -> str:
    lo, hi = COVERAGE_OK
    if coverage < lo:
        return "too narrow"
    if coverage > hi:
        return "too wide"
    return "well calibrated"


def _quality(skill: dict[str, Any], measurable: bool, coverage: float | None) -> float:
    """0..1: the lower end of the skill interval (measurable skill only) and the band's calibration."""
    parts = [_clip01(skill["lo"] / FULL_SKILL_LO) if measurable else 0.0]
    if coverage is not None:
        parts.append(_clip01(1.0 - abs(coverage - 0.8) / COVERAGE_SLACK))
    return sum(parts) / len(parts)


def card_evaluation(card: dict[str, Any], ticker: str) -> dict[str, Any]:
    """The evaluation as the report uses it: `evaluated`, the `scope` its numbers come from (the ticker, or
    "pooled"), skill over zero+EWMA with its interval, 80 % coverage, the `quality` in [0, 1] that caps
    confidence, `basis` (those numbers in words) and `text` (the card's verdict with the basis)."""
    evaluation = card.get("evaluation")
    stated = card_verdict(evaluation)
    if not evaluation:
        # Nothing measured the band yet: the report claims nothing for it, and confidence stays at the floor.
        empty = dict.fromkeys(("scope", "skill", "lo", "hi", "coverage_80", "calibration"))
        return {**empty, "evaluated": False, "measurable": False, "quality": 0.0, "basis": NOT_EVALUATED,
                "text": stated["text"]}  # fmt: skip
    row = evaluation["per_ticker"].get(ticker)
    if row is not None:
        scope, skill, coverage = ticker, row["skill"][REFERENCE], row["coverage_80"]
    else:
        pooled = evaluation["pooled"]
        scope, skill = "pooled", pooled["skill"][REFERENCE]
        coverage = pooled["coverage_80"].get(evaluation.get("recipe"))
    # The card's own sentence for this one interval (no strong baselines given, so no "against" tail):
    # the ticker's row reads like the pooled verdict and is measurable by the same rule.
    own = verdict({"pooled": {"skill": {REFERENCE: skill}}})
    calibration = None if coverage is None else _coverage_words(coverage)
    band = "" if coverage is None else f"80% band coverage {coverage:.0%} ({calibration})"
    first, last = evaluation["period"]
    when = f"walk-forward {first} to {last}, evaluated {evaluation['evaluated_at'][:10]}"
    if row is not None:
        basis = f"{ticker} alone: {own['text']}" + (f", {band}" if band else "")
        text = f"over the panel, {stated['text']} ({when}); {basis}"
    else:
        basis = f"pooled, {ticker} not evaluated alone: {own['text']}" + (f", {band}" if band else "")
        text = f"over the panel, {stated['text']} ({when}); {ticker} was not in it" + (
            f"; pooled {band}" if band else ""
        )
    return {
        "evaluated": True,
        "scope": scope,
        "skill": skill["skill"],
        "lo": skill["lo"],
        "hi": skill["hi"],
        "measurable": own["measurable"],
        "coverage_80": coverage,
        "calibration": calibration,
        "quality": _quality(skill, own["measurable"], coverage),
        "basis": basis,
        "text": text,
    }
