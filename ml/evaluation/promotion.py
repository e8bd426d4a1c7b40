"""Champion decisions from the latest evaluation of a model's recipe (pure).

The evaluation job (ml.evaluation.run) measures a recipe, not one registered version: a walk-forward
over years of refits is what can show skill, one training cannot. So a new version is promoted when the
latest evaluation of its recipe has a measurable skill over zero+EWMA (the pooled 90 % interval above
zero), and kept out otherwise (the previous champion, or the parent's fallback, keeps serving). Before
any evaluation of the recipe exists the new version is served provisionally, and so is a first champion
whatever the evaluation says: without one nothing could be served at all.
"""

from __future__ import annotations

from typing import Any

NO_SKILL = "no measurable skill"
NOT_EVALUATED = "not evaluated yet: run `stockq evaluate`"


def card_verdict(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict a card shows: the evaluation's, or `measurable: False` with why there is none."""
    if evaluation is None or not isinstance(evaluation.get("verdict"), dict):
        return {"measurable": False, "text": NOT_EVALUATED}
    return {**evaluation["verdict"], "evaluated_at": evaluation.get("evaluated_at"),
            "evaluation_run_id": evaluation.get("run_id")}  # fmt: skip


def _which(evaluation: dict[str, Any]) -> str:
    day = str(evaluation.get("evaluated_at", "?"))[:10]
    return f"the evaluation of recipe {evaluation.get('recipe')} ({evaluation.get('universe')}, {day})"


def decide(name: str, version: str, current: str | None, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """`promote` and the recorded `text` for version `version` of `name`, `current` being the champion."""
    first = current is None
    if evaluation is None:
        head = f"first champion of {name}" if first else f"v{version} replaces v{current}"
        return {
            "promote": True,
            "provisional": True,
            "text": f"promoted provisionally ({head}): {NOT_EVALUATED}",
        }
    verdict = card_verdict(evaluation)
    shows = f"{_which(evaluation)} shows {verdict['text']}"
    record = {"evaluation_run_id": evaluation.get("run_id"), "measurable": bool(verdict["measurable"])}
    if verdict["measurable"]:
        return {**record, "promote": True, "provisional": False, "text": f"promoted: {shows}"}
    if first:
        return {**record, "promote": True, "provisional": True,
                "text": f"promoted as the first champion of {name}, though {shows}"}  # fmt: skip
    return {**record, "promote": False, "provisional": False, "text": f"kept champion v{current}: {shows}"}
