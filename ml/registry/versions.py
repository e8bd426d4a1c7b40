"""A model's version history, read without torch: every registered version with its champion decision.

Each version's decision is the record registration wrote on it as a tag (ml.registry.registration): whether
it was promoted and why, the champion it was compared with, the evaluation's Diebold–Mariano test of the
recipe against its reference forecaster and the skill with its interval. A version registered before that
tag existed falls back to the decision inside its card artifact (no test, no skill). The job that trained a
version is its run's `stockq.job_key` tag, read for all runs of the model with one paged search rather
than one request per version.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import ModelNotFound
from ml.registry.names import (
    CARD_FILE,
    CHAMPION,
    DECISION_TAG,
    EXPERIMENT,
    JOB_TAG,
    MODEL_DIR,
    RECORD_TAG,
)
from ml.registry.paging import every_page

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def _iso(millis: int | None) -> str | None:
    return (
        None if millis is None else datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")
    )


def _job_ids(client: MlflowClient, name: str) -> dict[str, str]:
    """run_id -> the job id of every training run of `name` that a job ran."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return {}
    runs = every_page(
        client.search_runs,
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.`stockq.model` = '{name}'",
    )
    return {run.info.run_id: run.data.tags[JOB_TAG] for run in runs if JOB_TAG in run.data.tags}


def _card_decision(client: MlflowClient, mv: ModelVersion) -> dict[str, Any] | None:
    """The decision inside the version's card (versions registered before the record tag existed)."""
    from mlflow.exceptions import MlflowException

    if not mv.run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            card = json.loads(
                Path(client.download_artifacts(mv.run_id, f"{MODEL_DIR}/{CARD_FILE}", tmp)).read_text()
            )
        except (MlflowException, OSError, ValueError):
            return None  # no readable card: the decision is unknown, the version is still listed
    record = card.get("decision") if isinstance(card, dict) else None
    return record if isinstance(record, dict) else None


def _decision(client: MlflowClient, mv: ModelVersion) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the decision as the API shows it, the skill recorded with it); (None, None) when none was recorded."""
    tags = dict(mv.tags or {})
    try:
        record = json.loads(tags[RECORD_TAG]) if RECORD_TAG in tags else _card_decision(client, mv)
    except ValueError:
        record = _card_decision(client, mv)
    if not isinstance(record, dict) or "promote" not in record:
        return None, None
    dm = record.get("dm")
    return {
        "promoted": bool(record["promote"]),
        "provisional": bool(record.get("provisional", False)),
        "text": str(record.get("text") or tags.get(DECISION_TAG, "")),
        "dm": None if dm is None else {**dm, "against_version": record.get("against_version")},
    }, record.get("skill")


def model_versions(client: MlflowClient, name: str) -> dict[str, Any]:
    """`{"name", "champion_version", "versions": [...]}`, newest version first (the shape of C4)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if str(getattr(exc, "error_code", "")) not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            raise
        raise ModelNotFound(f"the registry has no model {name}") from exc
    champion = aliases.get(CHAMPION) if isinstance(aliases, dict) else None
    found = every_page(client.search_model_versions, filter_string=f"name = '{name}'")
    jobs = _job_ids(client, name)
    versions = []
    for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
        decision, skill = _decision(client, mv)
        versions.append(
            {
                "version": str(mv.version),
                "created_at": _iso(mv.creation_timestamp),
                "trained_until": (mv.tags or {}).get("trained_until"),
                "champion": champion is not None and str(champion) == str(mv.version),
                "decision": decision,
                "skill": skill,
                "job_id": jobs.get(mv.run_id),
                "run_id": mv.run_id,
            }
        )
    return {
        "name": name,
        "champion_version": None if champion is None else str(champion),
        "versions": versions,
    }
