"""Training, registration, reload and prediction on real bundled data (small models, few epochs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from ml.errors import (
    Cancelled,
    FeaturesMissing,
    InsufficientHistory,
    InvalidInput,
    InvalidTicker,
    ModelNotFound,
)
from ml.evaluation.evaluate import evaluate
from ml.features.store import FeatureStore
from ml.features.technical import MODEL_FEATURES
from ml.model.lstm import predict_log_returns
from ml.registry.mlflow_registry import LoadedModel, ModelRegistry
from ml.serving.predict import predict, predict_many
from ml.tickers import PARENT_NAME, child_name
from ml.training.train import STRATEGIES, TrainConfig, TrainHooks, prepare, train_child, train_parent

CONFIG = TrainConfig(epochs=3, hidden=16, history_days=700, patience=3, seed=7)
CARD_KEYS = {
    "name",
    "version",
    "kind",
    "strategy",
    "ticker",
    "parent_version",
    "trained_at",
    "window",
    "horizon",
    "features",
    "split",
    "epochs_run",
    "best_val_loss",
    "test",
}
SUMMARY_KEYS = {
    "name",
    "version",
    "run_id",
    "kind",
    "strategy",
    "ticker",
    "epochs_run",
    "best_val_loss",
    "test",
    "champion",
    "decision",
    "device",
    "seconds",
}


@dataclass
class Trained:
    store: FeatureStore
    registry: ModelRegistry
    parent: dict[str, Any]
    children: dict[str, dict[str, Any]]
    epochs_seen: list[tuple[int, int, float, float]]


@pytest.fixture(scope="module")
def trained(feature_env: tuple[object, FeatureStore], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    _, store = feature_env
    tmp = tmp_path_factory.mktemp("model_train")
    registry = ModelRegistry(f"sqlite:///{tmp}/mlflow.db", (tmp / "art").as_uri())
    seen: list[tuple[int, int, float, float]] = []
    parent = train_parent(
        store=store,
        registry=registry,
        config=CONFIG,
        hooks=TrainHooks(on_epoch=lambda *args: seen.append(args)),
    )
    children = {s: train_child("AAPL", s, store=store, registry=registry, config=CONFIG) for s in STRATEGIES}
    return Trained(store, registry, parent, children, seen)


def _leaves(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _lstm_state(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in loaded.model.state_dict().items() if k.startswith("lstm.")}


def test_parent_summary_is_json_safe_and_promoted(trained: Trained) -> None:
    s = trained.parent
    assert s.keys() >= SUMMARY_KEYS
    assert (s["name"], s["version"], s["kind"], s["ticker"], s["strategy"]) == (
        PARENT_NAME,
        "1",
        "parent",
        "^GSPC",
        None,
    )
    assert s["champion"] is True and s["decision"] == "promoted: first champion of stockq-parent"
    assert s["device"] == "cpu" and 1 <= s["epochs_run"] <= 3
    assert all(type(v) in {str, int, float, bool, type(None)} for v in _leaves(s))
    json.dumps(s, allow_nan=False)
    assert len(s["test"]["per_horizon"]) == 7
    # Two epochs cannot make a forecaster that is wildly off persistence on daily index returns.
    assert 0.8 < s["test"]["mase_persistence_mean"] < 1.3
    assert 0.0 < s["test"]["coverage_80_mean"] <= 1.0


def test_on_epoch_reports_every_epoch(trained: Trained) -> None:
    seen = trained.epochs_seen
    assert [(e, total) for e, total, _, _ in seen] == [
        (i, 3) for i in range(1, trained.parent["epochs_run"] + 1)
    ]
    assert [v for *_, v in seen] == [h["val_loss"] for h in trained.parent["history"]]
    assert min(v for *_, v in seen) == trained.parent["best_val_loss"]


def test_card_matches_contract_and_split_is_purged(trained: Trained) -> None:
    card = trained.registry.model_card(PARENT_NAME, "1")
    assert card.keys() >= CARD_KEYS
    assert card["version"] == "1" and card["features"] == MODEL_FEATURES
    assert (card["window"], card["horizon"], card["split"]["purge_days"]) == (60, 7, 7)
    split = card["split"]
    assert split["train"][0] <= split["train"][1] < split["val"][0] <= split["val"][1] < split["test"][0]
    assert set(card["test"]["per_horizon"][0]) == {
        "horizon",
        "mae",
        "rmse",
        "mase_persistence",
        "mase_drift",
        "direction_accuracy",
        "coverage_80",
        "width_80",
    }
    frame = trained.store.training_frame("^GSPC")
    frame = frame[frame.index > frame.index[-1] - pd.Timedelta(days=700)]
    dates = [d.date().isoformat() for d in frame.index]
    # Purge: `horizon` decision days are skipped between the splits.
    assert dates.index(split["val"][0]) - dates.index(split["train"][1]) == 8
    assert dates.index(split["test"][0]) - dates.index(split["val"][1]) == 8
    assert split["test"][1] == dates[-8]  # the last decision day whose 7-day target is known


def test_scaler_saw_only_the_train_split(trained: Trained) -> None:
    loaded = trained.registry.load(PARENT_NAME)
    scaler, split = loaded.scaler, loaded.card["split"]
    frame = trained.store.training_frame("^GSPC")
    frame = frame[frame.index > frame.index[-1] - pd.Timedelta(days=700)]
    assert scaler.fit_end == split["train"][1] < split["val"][0] < split["test"][0]
    seen = frame.loc[: scaler.fit_end, MODEL_FEATURES]
    assert scaler.n_rows == len(seen) < len(frame)
    np.testing.assert_allclose(scaler.mean, seen.mean().to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(scaler.std, seen.std(ddof=0).to_numpy(), rtol=1e-10)
    with_test = frame[MODEL_FEATURES].mean().to_numpy()
    assert not np.allclose(scaler.mean, with_test, rtol=1e-6)
    # The targets' scale came from train targets, whose last close is before the first val decision day.
    last_target_row = frame.index.get_loc(pd.Timestamp(scaler.fit_end)) + 7
    assert frame.index[last_target_row] < pd.Timestamp(split["val"][0])


def test_freeze_keeps_parent_lstm_and_fine_tune_changes_it(trained: Trained) -> None:
    registry = trained.registry
    parent = registry.load(PARENT_NAME)
    name = child_name("AAPL")
    frozen = registry.load(name, trained.children["freeze"]["version"])
    tuned = registry.load(name, trained.children["fine_tune"]["version"])
    scratch = registry.load(name, trained.children["scratch"]["version"])
    for key, value in _lstm_state(parent).items():
        assert torch.equal(_lstm_state(frozen)[key], value), key
    assert not torch.equal(frozen.model.head[1].weight, parent.model.head[1].weight)
    assert any(not torch.equal(_lstm_state(tuned)[k], v) for k, v in _lstm_state(parent).items())
    assert any(not torch.equal(_lstm_state(scratch)[k], v) for k, v in _lstm_state(parent).items())
    assert (frozen.kind, frozen.strategy, frozen.card["parent_version"]) == ("child", "freeze", "1")
    assert (tuned.strategy, tuned.card["parent_version"]) == ("fine_tune", "1")
    assert (scratch.strategy, scratch.card["parent_version"]) == ("scratch", None)


def test_mlflow_run_records_params_epochs_and_decision(trained: Trained) -> None:
    summary = trained.children["fine_tune"]
    client = trained.registry.client
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "fine_tune" and run.data.params["parent_version"] == "1"
    assert float(run.data.params["effective_lr"]) == pytest.approx(CONFIG.lr * 0.1)
    assert run.data.tags["stockq.decision"] == summary["decision"]
    assert run.data.tags["stockq.champion"] == str(summary["champion"]).lower()
    history = client.get_metric_history(summary["run_id"], "val_loss")
    assert [m.step for m in history] == list(range(1, summary["epochs_run"] + 1))
    assert [m.value for m in history] == [h["val_loss"] for h in summary["history"]]
    assert run.data.metrics["test_mase_persistence_mean"] == summary["test"]["mase_persistence_mean"]
    files = {f.path for f in client.list_artifacts(summary["run_id"], "model")}
    assert files == {"model/state_dict.pt", "model/scaler.json", "model/model_card.json"}
    assert run.info.artifact_uri.startswith(trained.registry.artifact_root or "")


def test_reload_reproduces_card_metrics_bit_for_bit(trained: Trained) -> None:
    for name, summary, ticker in [
        (PARENT_NAME, trained.parent, "^GSPC"),
        *[(child_name("AAPL"), trained.children[s], "AAPL") for s in STRATEGIES],
    ]:
        loaded = trained.registry.load(name, summary["version"])
        prep = prepare(trained.store, ticker, CONFIG, loaded.model.spec, torch.device("cpu"))
        assert prep.scaler == loaded.scaler
        x, y = prep.data.windows[prep.split.test], prep.data.targets[prep.split.test]
        drift = float(prep.data.targets[prep.split.train, 0].mean())
        metrics = evaluate(y, predict_log_returns(loaded.model, loaded.scaler, x), drift_per_day=drift)
        assert metrics == loaded.card["test"] == summary["test"], name


def test_predict_auto_uses_child_champion(trained: Trained) -> None:
    store, registry = trained.store, trained.registry
    result = predict("aapl", store=store, registry=registry)
    champion = registry.champion_version(child_name("AAPL"))
    assert result["model"]["name"] == "stockq-child-AAPL" and result["model"]["version"] == champion
    assert result["model"]["kind"] == "child"
    assert (result["ticker"], result["as_of"], result["data_source"]) == ("AAPL", "2022-12-28", "bundled")
    assert result["last_close"] == store.online_window("AAPL").last_close
    dates = [r["date"] for r in result["forecast"]]
    assert dates == [
        "2022-12-29",
        "2022-12-30",
        "2023-01-03",
        "2023-01-04",
        "2023-01-05",
        "2023-01-06",
        "2023-01-09",
    ]
    assert result["next_day"] == result["forecast"][0] and result["seven_day"] == result["forecast"][6]
    for row in result["forecast"]:
        assert row["p10"] <= row["p50"] <= row["p90"]
        assert row["p50"] == pytest.approx(result["last_close"] * np.exp(row["log_return_p50"]))
        # A week's 80 % band on a large cap is a few percent, not a doubling.
        assert row["p10"] / result["last_close"] > 0.7 and row["p90"] / result["last_close"] < 1.3
    assert predict("AAPL", store=store, registry=registry) == result  # a fresh reload, bit-identical
    json.dumps(result, allow_nan=False)


def test_predict_model_choice(trained: Trained) -> None:
    store, registry = trained.store, trained.registry
    parent = predict("AAPL", "parent", store=store, registry=registry)
    assert parent["model"] == {"name": PARENT_NAME, "version": "1", "kind": "parent", "strategy": None}
    assert predict("MSFT", store=store, registry=registry)["model"]["name"] == PARENT_NAME
    with pytest.raises(ModelNotFound, match="no child model for MSFT"):
        predict("MSFT", "child", store=store, registry=registry)
    with pytest.raises(InvalidInput):
        predict("AAPL", "best", store=store, registry=registry)
    with pytest.raises(FeaturesMissing):
        predict("ZZZZ", store=store, registry=registry)


def test_predict_many_batches_one_forward_per_model(trained: Trained) -> None:
    store, registry = trained.store, trained.registry
    cache: dict[str, LoadedModel | None] = {}
    calls: list[tuple[str, int]] = []

    def get_model(name: str) -> LoadedModel | None:
        if name not in cache:
            loaded = registry.load(name) if registry.champion_version(name) else None
            if loaded is not None:
                loaded.model.register_forward_hook(
                    lambda _m, args, _out, n=name: calls.append((n, args[0].shape[0]))
                )
            cache[name] = loaded
        return cache[name]

    results = predict_many(
        ["AAPL", "MSFT", "^GSPC", "ZZZZ", "bad ticker"], store=store, registry=registry, get_model=get_model
    )
    assert sorted(calls) == [("stockq-child-AAPL", 1), (PARENT_NAME, 2)]
    assert results["AAPL"] == predict("AAPL", store=store, registry=registry)
    for ticker in ["MSFT", "^GSPC"]:
        single = predict(ticker, store=store, registry=registry)
        # A batch of two takes other float32 kernels than a batch of one: equal up to rounding.
        assert results[ticker]["model"] == single["model"] and results[ticker]["as_of"] == single["as_of"]
        for got, want in zip(results[ticker]["forecast"], single["forecast"], strict=True):
            assert got["date"] == want["date"]
            for key in ("p10", "p50", "p90"):
                assert got[key] == pytest.approx(want[key], rel=1e-6), ticker
    assert results["ZZZZ"]["error"]["code"] == "features_missing"
    assert results["bad ticker"]["error"]["code"] == "invalid_ticker"


def test_cancel_between_epochs_registers_nothing(trained: Trained) -> None:
    registry = trained.registry
    name = child_name("AAPL")
    before = len(registry.client.search_model_versions(f"name='{name}'"))
    champion = registry.champion_version(name)
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # cancel after the first epoch

    with pytest.raises(Cancelled):
        train_child(
            "AAPL",
            "scratch",
            store=trained.store,
            registry=registry,
            config=CONFIG,
            hooks=TrainHooks(should_stop=stop),
        )
    assert len(registry.client.search_model_versions(f"name='{name}'")) == before
    assert registry.champion_version(name) == champion
    runs = registry.client.search_runs([registry.experiment_id()], order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "KILLED"


def test_champion_moves_only_when_not_worse(trained: Trained) -> None:
    store, registry = trained.store, trained.registry
    name = child_name("MSFT")
    a = train_child("MSFT", "scratch", store=store, registry=registry, config=CONFIG.with_(seed=1))
    b = train_child("MSFT", "scratch", store=store, registry=registry, config=CONFIG.with_(seed=2))
    metric_a, metric_b = a["test"]["mase_persistence_mean"], b["test"]["mase_persistence_mean"]
    assert a["champion"] is True
    assert b["champion"] is (metric_b <= metric_a) and "on the same test windows" in b["decision"]
    better, worse, worse_seed = (a, b, 2) if metric_a < metric_b else (b, a, 1)
    if metric_a == metric_b:
        pytest.skip("the two seeds tied exactly")
    registry.set_champion(name, better["version"])
    again = train_child(
        "MSFT", "scratch", store=store, registry=registry, config=CONFIG.with_(seed=worse_seed)
    )
    assert again["test"] == worse["test"]  # same seed, same data: the same model
    assert again["champion"] is False and again["decision"].startswith(f"kept champion v{better['version']}")
    assert registry.champion_version(name) == better["version"]
    assert registry.client.get_run(again["run_id"]).data.tags["stockq.champion"] == "false"
    registry.set_champion(name, worse["version"])
    best_seed = 1 if worse_seed == 2 else 2
    last = train_child("MSFT", "scratch", store=store, registry=registry, config=CONFIG.with_(seed=best_seed))
    assert last["champion"] is True and registry.champion_version(name) == last["version"]


def test_bad_training_input(trained: Trained) -> None:
    store, registry = trained.store, trained.registry
    with pytest.raises(InsufficientHistory, match="need at least 140 trading days"):
        train_child("AAPL", "scratch", store=store, registry=registry, config=CONFIG.with_(history_days=150))
    with pytest.raises(FeaturesMissing, match="ingest it first"):
        train_child("ZZZZ", "scratch", store=store, registry=registry, config=CONFIG)
    with pytest.raises(InvalidTicker):
        train_child("AA PL", "scratch", store=store, registry=registry, config=CONFIG)
    with pytest.raises(InvalidInput, match="strategy must be one of"):
        train_child("AAPL", "distill", store=store, registry=registry, config=CONFIG)
    with pytest.raises(InvalidInput, match="parent's own series"):
        train_child("^GSPC", "freeze", store=store, registry=registry, config=CONFIG)


def test_child_without_parent_fails_or_trains_parent_first(
    feature_env: tuple[object, FeatureStore], tmp_path: Path
) -> None:
    _, store = feature_env
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri())
    with pytest.raises(ModelNotFound, match=r"train the parent first \(train_parent\)"):
        train_child("AAPL", "freeze", store=store, registry=registry, config=CONFIG)
    assert registry.champion_version(PARENT_NAME) is None
    config = CONFIG.with_(epochs=1)
    summary = train_child(
        "AAPL", "fine_tune", store=store, registry=registry, config=config, train_parent_if_missing=True
    )
    assert registry.champion_version(PARENT_NAME) == "1" and summary["parent_version"] == "1"
    parent_card = registry.model_card(PARENT_NAME, "1")
    assert parent_card["split"]["train"][0] < "1991-01-01"  # the parent got the full history
    assert summary["champion"] is True
