"""Model cards over the API: `GET /models` and `GET /models/<name>[?version=]` (read-only)."""

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


class ModelSummary(BaseModel):
    name: str
    champion_version: str | None
    trained_until: str | None
    kind: str | None
    ticker: str | None


class ModelList(BaseModel):
    models: list[ModelSummary]


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
