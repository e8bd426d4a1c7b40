"""The served model: walk-forward evaluation, then a refit on all the data, its card over the API, its
calibrated band, and the parent fallback (real bundled data, Feast offline store, MLflow; tiny models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ml.config import BacktestConfig
from ml.errors import Paused
from ml.evaluation.backtest import origin_splits, parent_cutoff
from ml.evaluation.baselines import BASELINES, ewma_volatility
from ml.evaluation.calibration import apply_cqr
from ml.features.store import FeatureStore
from ml.model.lstm import predict_log_returns
from ml.registry.mlflow_registry import ModelRegistry
from ml.serving.predict import predict
from ml.tickers import PARENT_NAME, child_name
from ml.training.dataprep import load_dataset
from ml.training.train import BACKTEST_FILE, TrainConfig, TrainHooks, train_child, train_parent
from tests.conftest import flush_db, make_settings
from webapp import create_app

pytestmark = pytest.mark.slow  # trains five small models

BACKTEST = BacktestConfig(origins=5, step=10, epochs=2, patience=2, bootstrap_reps=100)
CONFIG = TrainConfig(epochs=2, hidden=8, layers=1, patience=2, history_days=700, seed=5, backtest=BACKTEST)


@dataclass
class Served:
    store: FeatureStore
    registry: ModelRegistry
    tracking_uri: str
    parent: dict[str, Any]
    child: dict[str, Any]
    again: dict[str, Any]


@pytest.fixture(scope="module")
def served(feature_env: tuple[object, FeatureStore], tmp_path_factory: pytest.TempPathFactory) -> Served:
    _, store = feature_env
    tmp = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{tmp}/mlflow.db"
    registry = ModelRegistry(uri, (tmp / "art").as_uri())
    parent = train_parent(store=store, registry=registry, config=CONFIG)
    child = train_child("AAPL", "fine_tune", store=store, registry=registry, config=CONFIG)
    again = train_child("AAPL", "fine_tune", store=store, registry=registry, config=CONFIG.with_(seed=6))
    return Served(store, registry, uri, parent, child, again)


def test_the_served_parent_saw_every_known_target_and_keeps_its_walk_forward(served: Served) -> None:
    card = served.registry.model_card(PARENT_NAME, served.parent["version"])
    loaded = served.registry.load(PARENT_NAME)
    data = load_dataset(served.store, "^GSPC", CONFIG, loaded.model.spec)
    # Trained until the last row (the last 7-day target); its decision day is 7 sessions before it.
    assert card["trained_until"] == data.dates[-1].date().isoformat() == served.parent["trained_until"]
    assert card["last_decision_day"] == data.dates[-8].date().isoformat()
    assert (
        card["refit"]["samples"] == len(data.targets) and loaded.scaler.fit_end == card["last_decision_day"]
    )
    backtest = card["backtest"]
    assert card["evaluation"] == "walk_forward" and len(backtest["origins"]) == 5
    assert card["epochs_run"] == card["refit"]["epochs"] == backtest["refit_epochs"]
    # Every origin stopped learning before its own evaluation windows, all of them before the refit's end.
    assert all(o["trained_until"] < o["origin"] for o in backtest["origins"])
    assert set(card["baselines"]) == set(BASELINES) and set(card["skill"]) == set(BASELINES)
    assert card["calibration"] == backtest["serving_calibration"] and card["calibration"]["method"] == "cqr"
    assert card["decision"] == {"promote": True, "text": "promoted: first champion of stockq-parent"}


def test_a_child_backtest_used_an_earlier_parent_and_names_both(served: Served) -> None:
    registry = served.registry
    card = registry.model_card(child_name("AAPL"), served.child["version"])
    data = load_dataset(served.store, "AAPL", CONFIG, registry.load(PARENT_NAME).model.spec)
    cutoff = parent_cutoff(data, origin_splits(len(data.targets), 7, BACKTEST))
    parents = card["parents"]
    # The served parent trained until the end of ^GSPC's data, past the child's first origin: a backtest
    # parent was trained with until=cutoff, registered and never promoted.
    assert parents["served"] == "stockq-parent v1" and parents["backtest"] == "stockq-parent v2"
    assert date.fromisoformat(parents["backtest_trained_until"]) <= cutoff
    assert card["backtest"]["parent"]["label"] == "stockq-parent v2"
    assert registry.champion_version(PARENT_NAME) == "1"
    tags = registry.version_tags(PARENT_NAME)
    assert tags["2"]["role"] == "backtest_parent" and tags["1"]["role"] == "served"
    # The next child training finds that parent again instead of training a third.
    assert len(tags) == 2 and served.again["parent_version"] == "1"
    assert set(card["skill"]) == {*BASELINES, "parent"}


def test_the_second_child_is_promoted_only_by_a_dm_test_and_the_decision_is_recorded(served: Served) -> None:
    record = served.again["decision_record"]
    assert record["n"] == 50 and record["threshold"] == 0.10
    assert record["promote"] is (record["p_value"] < 0.10)
    assert served.again["champion"] is record["promote"]
    champion = served.registry.champion_version(child_name("AAPL"))
    assert champion == (served.again["version"] if record["promote"] else served.child["version"])
    for key in ("candidate_pinball", "champion_pinball", "dm_statistic", "p_value"):
        assert np.isfinite(record[key]) and f"{record['p_value']:.3f}" in record["text"]


def test_served_bands_are_calibrated_and_a_parent_fallback_takes_the_tickers_volatility(
    served: Served,
) -> None:
    store, registry = served.store, served.registry
    child = registry.load(child_name("AAPL"))
    window = store.online_window("AAPL")
    raw = predict_log_returns(child.model, child.scaler, window.window[None, -child.model.spec.window :])
    want = apply_cqr(raw, child.card["calibration"])[0]
    result = predict("AAPL", store=store, registry=registry)
    got = np.array(
        [[r["log_return_p10"], r["log_return_p50"], r["log_return_p90"]] for r in result["forecast"]]
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert result["band"] == {"calibration": "cqr"} and "fallback" not in result

    fallback = predict("MSFT", store=store, registry=registry)
    assert fallback["fallback"] == "parent" and fallback["model"]["name"] == PARENT_NAME
    msft = store.online_window("MSFT")
    daily = msft.window[:, msft.feature_names.index("log_ret_1d")]
    z = stats.norm.ppf([0.1, 0.9])
    day1 = fallback["forecast"][0]
    width = day1["log_return_p90"] - day1["log_return_p10"]
    assert width == pytest.approx((z[1] - z[0]) * ewma_volatility(daily)[-1], rel=1e-6)
    assert predict("^GSPC", store=store, registry=registry).get("fallback") is None


def test_model_cards_over_the_api(served: Served, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 4, 5, mlflow_tracking_uri=served.tracking_uri)
    flush_db(settings.redis_url)
    client = create_app(settings).test_client()
    listed = client.get("/models")
    assert listed.status_code == 200
    by_name = {m["name"]: m for m in listed.get_json()["models"]}
    assert set(by_name) == {PARENT_NAME, child_name("AAPL")}
    assert by_name[PARENT_NAME]["champion_version"] == "1"
    assert by_name[PARENT_NAME]["trained_until"] == served.parent["trained_until"]

    card = client.get("/models/stockq-child-AAPL")
    assert card.status_code == 200
    body = card.get_json()
    assert body["champion"] is True and len(body["backtest"]["origins"]) >= 5
    assert set(body["baselines"]) == {*BASELINES, "parent"} and "windows" not in body["backtest"]
    assert {"text", "skill", "lo", "hi", "best_baseline"} <= set(body["verdict"])
    assert body["calibration"]["method"] == "cqr" and "text" in body["decision"]
    first = client.get("/models/stockq-child-AAPL?version=1").get_json()
    assert first["version"] == "1" and first["decision"]["text"].startswith("promoted: first champion")

    for path in ("/models/stockq-child-ZZZZ", "/models/stockq-child-AAPL?version=99"):
        missing = client.get(path)
        assert missing.status_code == 404
        assert missing.get_json()["error"]["code"] == "model_not_found"


def test_a_paused_walk_forward_training_resumes_without_running_its_backtest_again(
    feature_env: tuple[object, FeatureStore], tmp_path: Path
) -> None:
    store = feature_env[1]
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri())
    config = CONFIG.with_(epochs=3, backtest=BACKTEST.with_(epochs=3, patience=3))
    pauses = iter([True])
    first = TrainHooks(job_key="job-1", should_pause=lambda: next(pauses, False))
    with pytest.raises(Paused):
        train_child("MSFT", "scratch", store=store, registry=registry, config=config, hooks=first)
    runs = registry.client.search_runs([registry.experiment_id()])
    assert len(runs) == 1
    stored = json.loads(
        Path(
            registry.client.download_artifacts(runs[0].info.run_id, BACKTEST_FILE, str(tmp_path))
        ).read_text()
    )
    resumed: list[int] = []
    hooks = TrainHooks(job_key="job-1", on_resume=resumed.append)
    summary = train_child("MSFT", "scratch", store=store, registry=registry, config=config, hooks=hooks)
    assert summary["run_id"] == runs[0].info.run_id and resumed == [1]
    # Its own wall time, read back from the run: the backtest did not run a second time.
    assert summary["backtest_seconds"] == stored["seconds"]
    assert summary["epochs_run"] == stored["refit_epochs"] and summary["resumed_from_epoch"] == 1
