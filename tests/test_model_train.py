"""The served path of the global volatility-scaled model on a synthetic panel through a real FeatureStore
(Redis DBs 4/5) and a real MLflow registry: training in two phases, children, the evaluation records, the
champion rule and the served forecast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from ml.config import PanelModelConfig, TrainConfig, TrainHooks
from ml.errors import Cancelled, InvalidInput, ModelNotFound
from ml.evaluation.promotion import NOT_EVALUATED
from ml.features.store import FeatureStore
from ml.features.technical import compute_features
from ml.model.vol_lstm import LEVELS, VolQuantileLSTM, predict_z
from ml.registry.mlflow_registry import ModelRegistry
from ml.serving.predict import predict, predict_many
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name
from ml.training.recipes import child_spec, from_parent
from ml.training.train import train_child, train_parent
from tests.conftest import flush_db, make_settings
from tests.synthetic_panel import garch_factor_panel

DB, FEAST_DB = 4, 5
CONFIG = TrainConfig(
    model=PanelModelConfig(epochs=2, hidden=8, embed=2, stride=8, patience=2, seed=7, device="cpu"),
    val_days=100,
)
NOW = datetime(2005, 10, 20, tzinfo=UTC)  # two days after the synthetic histories end
OUTSIDE = "S09"  # ingested after the parent trained: outside its universe


def write_panel(store: FeatureStore, closes: dict[str, pd.Series]) -> None:
    """Store each close series' features as an ingest would (the market's inputs from ^GSPC's closes)."""
    market = closes[INDEX_TICKER]
    for ticker, close in closes.items():
        features = compute_features(
            pd.DataFrame({"close": close}), None if ticker == INDEX_TICKER else market
        )
        store.write(ticker, features, source="synthetic")
    store.materialize(list(closes))


def synthetic_store(tmp: Path, db: int, feast_db: int) -> FeatureStore:
    """^GSPC, S00 and S01 from a GARCH factor panel (6 years), stored and materialised."""
    settings = make_settings(tmp, db, feast_db)
    flush_db(settings.feast_redis_url)
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    write_panel(store, garch_factor_panel(n_tickers=2, years=6))
    return store


@dataclass
class Trained:
    store: FeatureStore
    registry: ModelRegistry
    parent: dict[str, Any]
    children: dict[str, dict[str, Any]]
    epochs: list[tuple[int, int]]
    phases: list[tuple[str, int]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    tmp = tmp_path_factory.mktemp("model_train")
    store = synthetic_store(tmp / "var", DB, FEAST_DB)
    registry = ModelRegistry(f"sqlite:///{tmp}/mlflow.db", (tmp / "art").as_uri())
    epochs: list[tuple[int, int]] = []
    phases: list[tuple[str, int]] = []
    hooks = TrainHooks(
        on_epoch=lambda e, n, *_: epochs.append((e, n)), on_phase=lambda p, n: phases.append((p, n))
    )
    parent = train_parent(store=store, registry=registry, config=CONFIG, hooks=hooks)
    children = {s: train_child("S00", s, store=store, registry=registry, config=CONFIG) for s in ("freeze",)}
    closes = garch_factor_panel(n_tickers=2, years=6)
    write_panel(store, {INDEX_TICKER: closes[INDEX_TICKER], OUTSIDE: closes["S01"] * 1.5})
    yield Trained(store, registry, parent, children, epochs, phases)


def _window_input(
    store: FeatureStore, model: VolQuantileLSTM, scaler: Any, ticker: str
) -> tuple[np.ndarray, float]:
    window = store.online_window(ticker, now=NOW)
    x = scaler.transform(window.columns(model.spec.inputs)[-model.spec.window :])
    return x[None], float(window.columns(("sigma",))[-1, 0])


def test_parent_trains_on_the_panel_in_two_phases_and_is_served_provisionally(trained: Trained) -> None:
    s = trained.parent
    assert (s["name"], s["version"], s["kind"], s["recipe"], s["universe"]) == (
        PARENT_NAME,
        "1",
        "parent",
        "global",
        "panel",
    )
    assert s["champion"] is True and s["device"] == "cpu"
    assert s["decision"] == f"promoted provisionally (first champion of {PARENT_NAME}): {NOT_EVALUATED}"
    assert s["verdict"] == {"measurable": False, "text": NOT_EVALUATED}
    # Each phase is announced with its epoch count: the epochs asked, then those the selection chose.
    assert trained.phases == [("select", 2), ("refit", s["best_epoch"])]
    select = [row for row in s["history"] if row["phase"] == "select"]
    refit = [row for row in s["history"] if row["phase"] == "refit"]
    assert s["best_epoch"] == min(select, key=lambda r: r["val_loss"])["epoch"]
    assert len(refit) == s["epochs_run"] == s["best_epoch"]  # the refit runs the chosen epoch count
    assert trained.epochs == [(e, 2) for e in range(1, len(select) + 1)] + [
        (e, s["best_epoch"]) for e in range(1, len(refit) + 1)
    ]
    json.dumps(s, allow_nan=False)


def test_parent_card_names_its_universe_refit_and_device(trained: Trained) -> None:
    card = trained.registry.model_card(PARENT_NAME, "1")
    assert card["tickers"] == ["S00", "S01", INDEX_TICKER] == card["architecture"]["tickers"]
    assert card["levels"] == list(LEVELS) and card["device"] == "cpu" and card["window"] == 20
    sel = card["selection"]
    # The validation days follow the training decisions after a purge of the horizon.
    assert np.busday_count(sel["train"][1], sel["val"][0]) > CONFIG.model.horizon
    assert card["refit"]["decisions"][0] == sel["train"][0]
    assert card["refit"]["text"].startswith(f"refit on all {card['refit']['samples']} samples for ")
    assert "from random weights (seed 7)" in card["refit"]["text"]
    assert card["evaluation"] is None and card["verdict"]["text"] == NOT_EVALUATED


def test_freeze_child_changes_only_its_embedding_row_and_the_head(trained: Trained) -> None:
    parent = trained.registry.load(PARENT_NAME)
    child = trained.registry.load(child_name("S00"))
    assert child.model.spec == parent.model.spec and child.card["learning_rate"] == CONFIG.model.lr
    row = parent.model.spec.tickers.index("S00") + 1
    before, after = parent.model.state_dict(), child.model.state_dict()
    for key, value in before.items():
        if key.startswith(("lstm.", "trunk.")):
            assert torch.equal(value, after[key]), key
    others = [i for i in range(len(before["embedding.weight"])) if i != row]
    assert torch.equal(before["embedding.weight"][others], after["embedding.weight"][others])
    assert not torch.equal(before["embedding.weight"][row], after["embedding.weight"][row])
    assert not torch.equal(before["log_scale.weight"], after["log_scale.weight"])
    assert child.scaler == parent.scaler  # a child reads its inputs the way the parent's encoder learnt them


def test_a_ticker_outside_the_universe_gets_a_new_row_at_the_mean() -> None:
    parent = VolQuantileLSTM(child_spec(child_spec(_spec(), "A"), "B"))
    spec = child_spec(parent.spec, "NEW")
    assert spec.tickers == ("A", "B", "NEW") and child_spec(spec, "A") is spec
    child = from_parent(parent, spec, "fine_tune")
    rows = child.embedding.weight.detach()
    assert torch.equal(rows[:3], parent.embedding.weight.detach())
    torch.testing.assert_close(rows[3], parent.embedding.weight.detach()[1:].mean(dim=0))
    assert all(p.requires_grad for p in child.parameters())
    frozen = from_parent(parent, spec, "freeze")
    assert not any(p.requires_grad for p in [*frozen.lstm.parameters(), *frozen.trunk.parameters()])


def _spec() -> Any:
    from ml.model.vol_lstm import VolSpec

    return VolSpec(inputs=("a", "b"), tickers=(), hidden=4, embed=2, window=5, horizon=3)


def test_served_forecast_is_z_times_sigma_sqrt_h(trained: Trained) -> None:
    loaded = trained.registry.load(PARENT_NAME)
    result = predict("S01", "parent", store=trained.store, registry=trained.registry, now=NOW)
    x, sigma = _window_input(trained.store, loaded.model, loaded.scaler, "S01")
    z = predict_z(loaded.model, x, loaded.model.spec.ticker_ids(["S01"]))[0]
    assert result["band"]["sigma"] == sigma and result["band"]["embedding"] == "ticker"
    assert result["fallback"] == "parent" and result["band"]["calibration"] is None
    for h, row in enumerate(result["forecast"]):
        for name, level in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
            expected = z[h, LEVELS.index(level)] * sigma * np.sqrt(h + 1)
            assert row[f"log_return_{name}"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
            assert row[name] == pytest.approx(result["last_close"] * np.exp(expected), rel=1e-12)
        assert [q["level"] for q in row["quantiles"]] == list(LEVELS)
    assert result["next_day"]["log_return_p50"] == 0.0  # no drift head: the median is zero
    assert result["seven_day"] == result["forecast"][6]


def test_unknown_ticker_is_served_by_the_parent_with_the_mean_embedding(trained: Trained) -> None:
    loaded = trained.registry.load(PARENT_NAME)
    result = predict(OUTSIDE, store=trained.store, registry=trained.registry, now=NOW)
    assert result["model"]["name"] == PARENT_NAME and result["fallback"] == "parent"
    assert result["band"]["embedding"] == "mean"
    x, sigma = _window_input(trained.store, loaded.model, loaded.scaler, OUTSIDE)
    z = predict_z(loaded.model, x, np.array([0]))[0]
    assert result["forecast"][2]["log_return_p90"] == pytest.approx(
        z[2, LEVELS.index(0.9)] * sigma * np.sqrt(3), rel=1e-12
    )


def test_predict_many_matches_predict(trained: Trained) -> None:
    batch = predict_many(
        ["S00", "S01", OUTSIDE, "NOPE"], store=trained.store, registry=trained.registry, now=NOW
    )
    assert batch["NOPE"]["error"]["code"] == "features_missing"
    for ticker in ("S00", "S01", OUTSIDE):
        single = predict(ticker, store=trained.store, registry=trained.registry, now=NOW)
        # One batch through the LSTM: the same numbers up to float rounding of the batched kernels.
        batched = [[q["log_return"] for q in row["quantiles"]] for row in batch[ticker]["forecast"]]
        alone = [[q["log_return"] for q in row["quantiles"]] for row in single["forecast"]]
        np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-9)
    assert batch["S00"]["model"]["name"] == child_name("S00")


def _evaluation(recipe: str, measurable: bool, shift: float = 0.0) -> dict[str, Any]:
    text = "skill +1.0% ..." if measurable else "no measurable skill over zero+EWMA: ..."
    lo = 0.005 if measurable else -0.01
    return {
        "evaluated_at": "2024-01-02T00:00:00+00:00",
        "recipe": recipe,
        "universe": "panel",
        "verdict": {"text": text, "measurable": measurable, "skill": 0.01, "lo": lo, "hi": 0.02},
        "calibration": {"levels": list(LEVELS), "shifts": [[shift] * len(LEVELS)] * CONFIG.model.horizon},
    }


def test_evaluations_decide_promotion_and_calibrate_the_served_band(trained: Trained, tmp_path: Path) -> None:
    registry = trained.registry
    (tmp_path / "losses.parquet").write_bytes(b"not really parquet")
    run_id = registry.record_evaluation(
        _evaluation("global", False), {"losses.parquet": tmp_path / "losses.parquet"}
    )
    latest = registry.latest_evaluation("global", "panel")
    assert latest is not None and latest["run_id"] == run_id and latest["verdict"]["measurable"] is False
    assert registry.latest_evaluation("global", "gspc") is None
    assert [a.path for a in registry.client.list_artifacts(run_id)] == ["evaluation.json", "losses.parquet"]
    card = registry.model_card(PARENT_NAME, "1")
    assert card["evaluation"]["run_id"] == run_id and card["verdict"]["measurable"] is False

    kept = train_parent(store=trained.store, registry=registry, config=CONFIG)
    assert kept["champion"] is False and registry.champion_version(PARENT_NAME) == "1"
    assert kept["decision"].startswith(
        "kept champion v1: the evaluation of recipe global (panel, 2024-01-02)"
    )

    registry.record_evaluation(_evaluation("global", True, shift=0.25), {})
    promoted = train_parent(store=trained.store, registry=registry, config=CONFIG.with_(val_days=120))
    assert promoted["champion"] is True and promoted["decision"].startswith(
        "promoted: the evaluation of recipe global"
    )
    loaded = registry.load(PARENT_NAME)
    result = predict("S01", "parent", store=trained.store, registry=registry, now=NOW)
    x, sigma = _window_input(trained.store, loaded.model, loaded.scaler, "S01")
    z = predict_z(loaded.model, x, loaded.model.spec.ticker_ids(["S01"]))[0]
    assert result["band"]["calibration"].startswith("evaluation ")
    expected = (z[4, LEVELS.index(0.5)] + 0.25) * sigma * np.sqrt(5)
    assert result["forecast"][4]["log_return_p50"] == pytest.approx(expected, rel=1e-12)


def test_scratch_child_has_no_embedding_and_its_own_statistics(trained: Trained) -> None:
    summary = train_child("S01", "scratch", store=trained.store, registry=trained.registry,
                          config=CONFIG.with_(history_days=900))  # fmt: skip
    assert summary["recipe"] == "per_ticker" and summary["parent_version"] is None
    loaded = trained.registry.load(child_name("S01"), summary["version"])
    assert loaded.model.spec.embed == 0 and loaded.model.spec.tickers == ("S01",)
    assert loaded.card["selection"]["train"][0] >= "2002-11"  # only the last 900 days


def test_cancel_registers_nothing_and_bad_input_is_refused(trained: Trained) -> None:
    before = len(trained.registry.client.search_model_versions(f"name='{child_name('S01')}'"))
    with pytest.raises(Cancelled):
        train_child("S01", "fine_tune", store=trained.store, registry=trained.registry, config=CONFIG,
                    hooks=TrainHooks(should_stop=lambda: True))  # fmt: skip
    assert len(trained.registry.client.search_model_versions(f"name='{child_name('S01')}'")) == before
    with pytest.raises(InvalidInput, match="strategy must be one of"):
        train_child("S01", "magic", store=trained.store, registry=trained.registry, config=CONFIG)
    with pytest.raises(InvalidInput, match="train it with train_parent"):
        train_child(INDEX_TICKER, "freeze", store=trained.store, registry=trained.registry, config=CONFIG)


def test_child_without_parent_fails(trained: Trained, tmp_path: Path) -> None:
    empty = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri())
    with pytest.raises(ModelNotFound, match="needs a parent model"):
        train_child("S00", "freeze", store=trained.store, registry=empty, config=CONFIG)
