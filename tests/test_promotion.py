"""The champion rule: the latest evaluation of a model's recipe decides, a first champion and a model
before any evaluation are served provisionally, and every decision says why."""

from __future__ import annotations

from typing import Any

from ml.evaluation.promotion import NO_SKILL, NOT_EVALUATED, card_verdict, decide


def _evaluation(measurable: bool) -> dict[str, Any]:
    text = (
        "skill +2.0% (90 % interval +0.5% to +3.5%) over zero+EWMA"
        if measurable
        else f"{NO_SKILL} over zero+EWMA"
    )
    lo = 0.005 if measurable else -0.01
    return {
        "run_id": "abc",
        "recipe": "global",
        "universe": "panel",
        "evaluated_at": "2024-03-01T10:00:00+00:00",
        "verdict": {"text": text, "measurable": measurable, "skill": 0.02, "lo": lo, "hi": 0.035},
    }


def test_without_an_evaluation_every_new_version_is_served_provisionally() -> None:
    first = decide("stockq-parent", "1", None, None)
    text = f"promoted provisionally (first champion of stockq-parent): {NOT_EVALUATED}"
    assert first == {"promote": True, "provisional": True, "text": text}
    later = decide("stockq-parent", "3", "2", None)
    assert later["promote"] is True and later["text"].startswith("promoted provisionally (v3 replaces v2)")
    assert card_verdict(None) == {"measurable": False, "text": "not evaluated yet: run `stockq evaluate`"}


def test_a_measurable_evaluation_promotes_and_an_unmeasurable_one_keeps_the_champion() -> None:
    good = decide("stockq-parent", "3", "2", _evaluation(True))
    assert good["promote"] is True and good["provisional"] is False and good["evaluation_run_id"] == "abc"
    assert good["text"] == (
        "promoted: the evaluation of recipe global (panel, 2024-03-01) shows skill +2.0% (90 % interval "
        "+0.5% to +3.5%) over zero+EWMA"
    )
    kept = decide("stockq-parent", "3", "2", _evaluation(False))
    assert kept["promote"] is False
    shows = f"the evaluation of recipe global (panel, 2024-03-01) shows {NO_SKILL} over zero+EWMA"
    assert kept["text"] == f"kept champion v2: {shows}"


def test_a_first_champion_is_served_even_without_measurable_skill() -> None:
    first = decide("stockq-child-AAPL", "1", None, _evaluation(False))
    assert first["promote"] is True and first["provisional"] is True and first["measurable"] is False
    assert first["text"].startswith(
        "promoted as the first champion of stockq-child-AAPL, though the evaluation"
    )


def test_the_card_verdict_is_the_evaluations_with_its_date() -> None:
    verdict = card_verdict(_evaluation(True))
    assert verdict["measurable"] is True and verdict["lo"] == 0.005
    assert (verdict["evaluated_at"], verdict["evaluation_run_id"]) == ("2024-03-01T10:00:00+00:00", "abc")
