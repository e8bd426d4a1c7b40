"""The design's ^GSPC-only parent (STOCKQ_PARENT_UNIVERSE=gspc) on the bundled data, a child outside its
universe, and the cards as the API reads them (without torch), with the latest evaluation of their recipe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from ml.config import PanelModelConfig, TrainConfig
from ml.errors import ModelNotFound
from ml.evaluation.promotion import NOT_EVALUATED
from ml.features.store import FeatureStore
from ml.registry.cards import CardReader
from ml.registry.mlflow_registry import ModelRegistry
from ml.serving.predict import predict
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name
from ml.training.train import train_child, train_parent

CONFIG = TrainConfig(
    model=PanelModelConfig(epochs=1, hidden=8, stride=16, seed=5, device="cpu"),
    universe="gspc",
    history_days=1500,
)
NOW = datetime(2100, 1, 1, tzinfo=UTC)  # the bundled history is frozen: never stale


@dataclass
class Served:
    store: FeatureStore
    registry: ModelRegistry
    tracking_uri: str
    parent: dict[str, Any]
    child: dict[str, Any]


@pytest.fixture(scope="module")
def served(feature_env: tuple[object, FeatureStore], tmp_path_factory: pytest.TempPathFactory) -> Served:
    store = feature_env[1]
    tmp = tmp_path_factory.mktemp("served_model")
    uri = f"sqlite:///{tmp}/mlflow.db"
    registry = ModelRegistry(uri, (tmp / "art").as_uri())
    parent = train_parent(store=store, registry=registry, config=CONFIG.with_(history_days=None))
    child = train_child("AAPL", "fine_tune", store=store, registry=registry, config=CONFIG)
    return Served(store, registry, uri, parent, child)


def test_a_gspc_parent_knows_one_ticker_and_serves_the_others_with_the_mean_embedding(served: Served) -> None:
    loaded = served.registry.load(PARENT_NAME)
    assert loaded.model.spec.tickers == (INDEX_TICKER,) and loaded.card["universe"] == "gspc"
    own = predict(INDEX_TICKER, store=served.store, registry=served.registry, now=NOW)
    assert own["band"]["embedding"] == "ticker" and "fallback" not in own
    other = predict("MSFT", store=served.store, registry=served.registry, now=NOW)
    assert other["band"]["embedding"] == "mean" and other["fallback"] == "parent"
    assert other["as_of"] == "2022-12-28" and len(other["forecast"]) == 7


def test_a_child_outside_the_universe_grows_a_row_and_fine_tunes_everything(served: Served) -> None:
    parent = served.registry.load(PARENT_NAME)
    child = served.registry.load(child_name("AAPL"))
    assert child.model.spec.tickers == (INDEX_TICKER, "AAPL")
    assert child.card["learning_rate"] == pytest.approx(CONFIG.model.lr * 0.1)
    assert (child.card["recipe"], child.card["universe"], child.card["parent_version"]) == (
        "child_fine_tune",
        "gspc",
        "1",
    )
    assert child.card["refit"]["text"].endswith(f"from {PARENT_NAME} v1's weights")
    # Fine-tuning moves the encoder when an epoch beat the parent's own weights on validation; when none
    # did, the child is the parent (keep_start) and says so through its selection.
    moved = not torch.equal(child.model.lstm.weight_hh_l0, parent.model.lstm.weight_hh_l0)
    assert moved == (child.card["selection"]["best_epoch"] > 0)
    assert child.card["refit"]["epochs"] == child.card["selection"]["best_epoch"]
    assert torch.equal(
        child.model.embedding.weight[1], parent.model.embedding.weight[1]
    )  # ^GSPC's row: no gradient
    result = predict("AAPL", store=served.store, registry=served.registry, now=NOW)
    assert result["model"]["name"] == child_name("AAPL") and result["band"]["embedding"] == "ticker"
    assert "fallback" not in result


def test_cards_read_without_torch_carry_the_latest_evaluation_of_their_recipe(served: Served) -> None:
    reader = CardReader(served.tracking_uri)
    models = {m["name"]: m for m in reader.models()}
    assert models[PARENT_NAME]["champion_version"] == "1" and models[child_name("AAPL")]["ticker"] == "AAPL"
    card = reader.card(child_name("AAPL"))
    assert card["champion"] is True and card["evaluation"] is None
    assert card["verdict"] == {"measurable": False, "text": NOT_EVALUATED}
    summary = {"recipe": "child_fine_tune", "universe": "gspc", "evaluated_at": "2024-05-01T00:00:00+00:00",
               "verdict": {"text": "skill ...", "measurable": True, "lo": 0.01}}  # fmt: skip
    run_id = served.registry.record_evaluation(summary, {})
    card = reader.card(child_name("AAPL"), "1")
    assert card["evaluation"]["run_id"] == run_id and card["verdict"]["measurable"] is True
    assert card["verdict"]["evaluated_at"] == "2024-05-01T00:00:00+00:00"
    assert reader.card(PARENT_NAME)["evaluation"] is None  # another recipe
    assert served.registry.model_card(child_name("AAPL"), "1")["evaluation"]["run_id"] == run_id
    with pytest.raises(ModelNotFound):
        reader.card(child_name("ZZZZ"))


def test_nothing_about_the_card_needs_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys, ml.registry.cards; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
