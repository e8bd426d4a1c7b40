"""Model cards and evaluation records, read without torch: what the API and the CLI show about models.

A thin reader over the MLflow registry (MlflowClient only, imported when a reader is made), so the API's
processes never load PyTorch to answer `GET /models`. The stored card is the JSON artifact each version's
run logged last (ml.registry.registration), with the champion decision in it. A card as read also
carries `evaluation`: the latest evaluation of its recipe and universe (a run of the
`stockq-evaluations` experiment, ml.evaluation.run), or None, and the `verdict` derived from it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import CorruptModel, InvalidInput, ModelNotFound
from ml.evaluation.promotion import card_verdict
from ml.registry.names import (
    CARD_FILE,
    CHAMPION,
    EVALUATION_FILE,
    EVALUATIONS,
    MODEL_DIR,
    RECIPE_TAG,
    UNIVERSE_TAG,
)
from ml.registry.paging import every_page

if TYPE_CHECKING:
    from mlflow import MlflowClient


def _missing(exc: Exception) -> bool:
    return str(getattr(exc, "error_code", "")) in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def latest_evaluation(client: MlflowClient, recipe: str, universe: str) -> dict[str, Any] | None:
    """The newest finished evaluation run of (recipe, universe): its summary with its run_id, or None."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(EVALUATIONS)
    if experiment is None:
        return None
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.{RECIPE_TAG} = '{recipe}' and tags.{UNIVERSE_TAG} = '{universe}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return None
    run_id = found[0].info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = json.loads(Path(client.download_artifacts(run_id, EVALUATION_FILE, tmp)).read_text())
        except (MlflowException, OSError, ValueError) as exc:
            raise CorruptModel(f"evaluation run {run_id}: {EVALUATION_FILE} unreadable: {exc}") from exc
    return {**summary, "run_id": run_id}


def with_evaluation(card: dict[str, Any], client: MlflowClient) -> dict[str, Any]:
    """The card with the latest evaluation of its recipe and universe, and the verdict from it."""
    recipe, universe = card.get("recipe"), card.get("universe")
    evaluation = latest_evaluation(client, recipe, universe) if recipe and universe else None
    return {**card, "evaluation": evaluation, "verdict": card_verdict(evaluation)}


def skill_of(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pooled skill over zero+EWMA with its 90 % interval, as the card's verdict quotes it, and when
    it was measured; None without an evaluation (or one that gives no interval)."""
    verdict = (evaluation or {}).get("verdict") or {}
    figures = {k: verdict.get(k) for k in ("skill", "lo", "hi")}
    if not all(isinstance(v, int | float) for v in figures.values()):
        return None
    return {**figures, "evaluated_at": evaluation.get("evaluated_at") if evaluation else None}


def dm_of(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The evaluation's pooled Diebold–Mariano test of the recipe against its reference forecaster
    (statistic None when the loss differential was constant); None when the evaluation has no such row."""
    evaluation = evaluation or {}
    reference = evaluation.get("reference", "zero_ewma")
    row = (((evaluation.get("pooled") or {}).get("skill") or {}).get(reference)) or {}
    if not isinstance(row.get("dm_p_value"), int | float):
        return None
    return {"statistic": row.get("dm_statistic"), "p_value": row["dm_p_value"], "reference": reference}


class CardReader:
    def __init__(self, tracking_uri: str) -> None:
        from ml.registry.mlflow_store import ensure_tracking_store

        ensure_tracking_store(tracking_uri)
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def models(self) -> list[dict[str, Any]]:
        """Every registered model: its champion version, what that version was trained until and the
        skill its card shows (the latest evaluation of its recipe and universe; read once per pair)."""
        evaluations: dict[tuple[str, str], dict[str, Any] | None] = {}
        out = []
        for rm in every_page(self.client.search_registered_models, order_by=["name ASC"]):
            champion = rm.aliases.get(CHAMPION) if isinstance(rm.aliases, dict) else None
            tags = dict(self.client.get_model_version(rm.name, champion).tags) if champion else {}
            pair = (tags.get(RECIPE_TAG), tags.get(UNIVERSE_TAG))
            if pair[0] and pair[1] and pair not in evaluations:
                evaluations[pair] = latest_evaluation(self.client, *pair)
            out.append(
                {
                    "name": rm.name,
                    "champion_version": None if champion is None else str(champion),
                    "trained_until": tags.get("trained_until"),
                    "kind": tags.get("kind"),
                    "ticker": tags.get("ticker"),
                    "skill": skill_of(evaluations.get(pair)),
                }
            )
        return out

    def versions(self, name: str) -> dict[str, Any]:
        """Every registered version of `name`, newest first, with its recorded champion decision
        (ml.registry.versions); ModelNotFound if no such model is registered."""
        from ml.registry.versions import model_versions

        return model_versions(self.client, name)

    def card(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A version's card (None: the champion's) with its recipe's latest evaluation and whether it is
        the champion; ModelNotFound if there is no such version."""
        from mlflow.exceptions import MlflowException

        if version is not None and not str(version).isdigit():
            raise InvalidInput(f"model version must be a positive integer, got {version!r}")
        try:
            mv = (
                self.client.get_model_version_by_alias(name, CHAMPION)
                if version is None
                else self.client.get_model_version(name, str(version))
            )
        except MlflowException as exc:
            if not _missing(exc):
                raise
            what = f"version {version} of {name}" if version else f"a {CHAMPION} for {name}"
            raise ModelNotFound(f"the registry has no {what}") from exc
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = Path(self.client.download_artifacts(mv.run_id, f"{MODEL_DIR}/{CARD_FILE}", tmp))
                card = json.loads(path.read_text())
            except (MlflowException, OSError, ValueError) as exc:
                raise CorruptModel(f"{name} v{mv.version}: model card unreadable: {exc}") from exc
        champion = self.client.get_registered_model(name).aliases.get(CHAMPION)
        card = with_evaluation(card, self.client)
        return {**card, "version": str(mv.version), "champion": str(champion) == str(mv.version)}
