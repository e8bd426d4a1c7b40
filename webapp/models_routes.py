"""Model cards over the API: `GET /models`, `GET /models/<name>[?version=]` and
`GET /models/<name>/versions` (read-only)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from webapp.schemas import ErrorBody

models_tag = Tag(name="models", description="Registered models and their cards")
models = APIBlueprint("models", __name__, abp_responses={"401": ErrorBody, "503": ErrorBody})


class ModelPath(BaseModel):
    # Registered names are `stockq-parent` and `stockq-child-<TICKER>`; anything else is simply not found.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9^._=-]+$")


class VersionQuery(BaseModel):
    version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="A registered version (default: the champion)."
    )


class Skill(BaseModel):
    skill: float = Field(description="Pooled skill over zero+EWMA (1 - loss / reference loss).")
    lo: float = Field(description="Lower end of its 90 % block-bootstrap interval.")
    hi: float = Field(description="Upper end of its 90 % block-bootstrap interval.")
    evaluated_at: str | None = Field(None, description="When the evaluation measuring it ran.")


class ModelSummary(BaseModel):
    name: str
    champion_version: str | None
    trained_until: str | None
    kind: str | None
    ticker: str | None
    skill: Skill | None = Field(
        description="The champion card's skill: the latest evaluation of its recipe (null: none yet)."
    )


class ModelList(BaseModel):
    models: list[ModelSummary]


class DieboldMariano(BaseModel):
    statistic: float | None = Field(description="Null when the loss differential was constant.")
    p_value: float = Field(description="One-sided: small means the recipe's loss is lower.")
    reference: str = Field(description="The forecaster the recipe's walk-forward losses were tested against.")
    against_version: str | None = Field(description="The champion the decision compared this version with.")


class Decision(BaseModel):
    promoted: bool
    provisional: bool = Field(description="Promoted without measurable skill (no evaluation, or a first).")
    text: str
    dm: DieboldMariano | None = Field(description="The evaluation's test the decision rests on (null: none).")


class ModelVersionRow(BaseModel):
    version: str
    created_at: str | None
    trained_until: str | None
    champion: bool
    decision: Decision | None = Field(description="Recorded at registration (null: none was recorded).")
    skill: Skill | None = Field(description="The skill the decision saw (null: not evaluated then).")
    job_id: str | None = Field(description="The job that trained it (null: trained outside a job).")
    run_id: str | None


class ModelVersions(BaseModel):
    name: str
    champion_version: str | None
    versions: list[ModelVersionRow] = Field(description="Newest first.")


def _reader() -> Any:
    """One card reader per API process, made on first use: MLflow is imported then, never at start."""
    reader = current_app.extensions.get("stockq.cards")
    if reader is None:
        from ml.registry.cards import CardReader

        reader = CardReader(current_app.extensions["stockq"].settings.tracking_uri)
        current_app.extensions["stockq.cards"] = reader
    return reader


@models.get("/models", tags=[models_tag], responses={200: ModelList})
def list_models() -> Response:
    """Every registered model, its champion version and the last date its champion learnt from."""
    return jsonify({"models": _reader().models()})


@models.get("/models/<name>", tags=[models_tag], responses={200: None, 404: ErrorBody})
def model_card(path: ModelPath, query: VersionQuery) -> Response:
    """A version's card: the latest evaluation of its recipe (`evaluation`: the summary `POST /evaluate`
    records, or null before any ran) and its `verdict`, calibration and the champion decision."""
    version = None if query.version is None else str(query.version)
    return jsonify(_reader().card(path.name, version))


@models.get("/models/<name>/versions", tags=[models_tag], responses={200: ModelVersions, 404: ErrorBody})
def model_versions(path: ModelPath) -> Response:
    """Every registered version, newest first: whether it is the champion, the decision recorded when it
    was registered (with the evaluation's Diebold–Mariano test and the champion it was compared with),
    the skill that evaluation measured, and the job that trained it."""
    return jsonify(_reader().versions(path.name))
