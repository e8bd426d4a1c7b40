"""Model cards, read without torch: what the API and the CLI show about registered models.

A thin reader over the MLflow registry (MlflowClient only, imported when a reader is made), so the API's
processes never load PyTorch to answer `GET /models`. The served card is the JSON artifact each version's
run logged last (ml.registry.registration), with the champion decision in it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ml.errors import CorruptModel, InvalidInput, ModelNotFound

CHAMPION = "champion"
MODEL_DIR = "model"
CARD_FILE = "model_card.json"
# Per-window losses (a few thousand numbers) serve the next promotion test, not a reader of the card.
_HEAVY = ("windows",)


def _missing(exc: Exception) -> bool:
    return str(getattr(exc, "error_code", "")) in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class CardReader:
    def __init__(self, tracking_uri: str) -> None:
        from ml.registry.mlflow_store import ensure_tracking_store

        ensure_tracking_store(tracking_uri)
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def models(self) -> list[dict[str, Any]]:
        """Every registered model: its champion version and what that version was trained until."""
        out = []
        for rm in self.client.search_registered_models(order_by=["name ASC"]):
            champion = rm.aliases.get(CHAMPION) if isinstance(rm.aliases, dict) else None
            tags = dict(self.client.get_model_version(rm.name, champion).tags) if champion else {}
            out.append(
                {
                    "name": rm.name,
                    "champion_version": None if champion is None else str(champion),
                    "trained_until": tags.get("trained_until"),
                    "kind": tags.get("kind"),
                    "ticker": tags.get("ticker"),
                }
            )
        return out

    def card(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A version's card (None: the champion's), with whether it is the champion; ModelNotFound if not."""
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
        backtest = card.get("backtest")
        if isinstance(backtest, dict):
            card["backtest"] = {k: v for k, v in backtest.items() if k not in _HEAVY}
        champion = self.client.get_registered_model(name).aliases.get(CHAMPION)
        return {**card, "version": str(mv.version), "champion": str(champion) == str(mv.version)}
