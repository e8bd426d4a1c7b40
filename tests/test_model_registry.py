"""Registry behaviour: lookups, aliases, isolation between stores, and refusing damaged artifacts."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
import torch

from ml.config import PanelModelConfig
from ml.errors import CorruptModel, InvalidInput, ModelNotFound
from ml.features.store import FeatureStore
from ml.model.vol_lstm import VolQuantileLSTM
from ml.registry.cards import CardReader
from ml.registry.mlflow_registry import ModelRegistry, load_weights
from ml.registry.names import RECORD_TAG
from ml.tickers import PARENT_NAME
from ml.training.train import TrainConfig, train_parent
from tests.test_model_train import synthetic_store

CONFIG = TrainConfig(model=PanelModelConfig(epochs=1, hidden=8, stride=8, seed=3, device="cpu"), val_days=100)


class _RunsCode:
    """Unpickling this would create a file: the stand-in for arbitrary code in a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (self.marker, "pwned"))


def write_pickle_payload(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"lstm.weight_ih_l0": _RunsCode(marker)}))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_weights_refuses_pickled_code(tmp_path: Path) -> None:
    weights, marker = tmp_path / "state_dict.pt", tmp_path / "marker.txt"
    write_pickle_payload(weights, marker)
    with pytest.raises(CorruptModel, match="not a valid state_dict"):
        load_weights(weights)
    assert not marker.exists()
    pickle.loads(weights.read_bytes())  # the payload is live: plain unpickling runs it
    assert marker.read_text() == "pwned"
    torch.save({"a": [1, 2]}, weights)  # loadable, but not a state_dict of tensors
    with pytest.raises(CorruptModel, match="state_dict of tensors"):
        load_weights(weights)


@dataclass
class Env:
    store: FeatureStore
    registry: ModelRegistry
    tmp: Path
    first: dict[str, object]
    second: dict[str, object]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    tmp = tmp_path_factory.mktemp("model_registry")
    store = synthetic_store(tmp / "var", 4, 5)
    registry = ModelRegistry(f"sqlite:///{tmp}/mlflow.db", (tmp / "art").as_uri())
    first = train_parent(store=store, registry=registry, config=CONFIG)
    second = train_parent(
        store=store, registry=registry, config=CONFIG
    )  # not evaluated: served provisionally
    return Env(store, registry, tmp, first, second)


def _artifact(registry: ModelRegistry, version: str, file: str) -> Path:
    run_id = registry.client.get_model_version(PARENT_NAME, version).run_id
    uri = registry.client.get_run(run_id).info.artifact_uri
    return Path(url2pathname(urlparse(uri).path)) / "model" / file


@pytest.fixture
def weights(env: Env) -> Iterator[Path]:
    """Version 1's weights file in the artifact store, restored after the test tampers with it."""
    path = _artifact(env.registry, "1", "state_dict.pt")
    original = path.read_bytes()
    yield path
    path.write_bytes(original)


def test_artifacts_live_under_the_artifact_root(env: Env) -> None:
    path = _artifact(env.registry, "1", "state_dict.pt")
    assert path.is_file() and path.is_relative_to(env.tmp / "art")
    assert not (env.tmp / "mlruns").exists()


def test_alias_lookups_and_moves(env: Env) -> None:
    registry = env.registry
    assert env.second["champion"] is True and "v2 replaces v1" in str(env.second["decision"])
    assert env.first["best_val_loss"] == env.second["best_val_loss"]  # deterministic seeds
    assert registry.champion_version(PARENT_NAME) == "2"
    registry.set_champion(PARENT_NAME, "1")
    assert registry.champion_version(PARENT_NAME) == "1"
    assert registry.load(PARENT_NAME).version == "1"
    registry.set_champion(PARENT_NAME, "2")
    assert registry.load(PARENT_NAME).card["version"] == "2"
    with pytest.raises(ModelNotFound):
        registry.set_champion(PARENT_NAME, "42")


def test_missing_models_are_model_not_found(env: Env) -> None:
    registry = env.registry
    assert registry.champion_version("stockq-child-NOPE") is None
    with pytest.raises(ModelNotFound, match="train this child first"):
        registry.load("stockq-child-NOPE")
    with pytest.raises(ModelNotFound, match="version 99"):
        registry.load(PARENT_NAME, "99")
    with pytest.raises(InvalidInput):
        registry.load(PARENT_NAME, "latest")


def test_loaded_model_is_eval_on_cpu(env: Env) -> None:
    loaded = env.registry.load(PARENT_NAME, "1")
    assert not loaded.model.training
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert isinstance(loaded.model, VolQuantileLSTM) and loaded.model.spec.hidden == 8
    assert (loaded.kind, loaded.strategy, loaded.card["architecture"]["hidden"]) == ("parent", None, 8)
    assert list(loaded.scaler.feature_names) == list(loaded.model.spec.inputs)


def test_two_registries_in_one_process_stay_apart(env: Env, tmp_path: Path) -> None:
    other = ModelRegistry(f"sqlite:///{tmp_path}/other.db", (tmp_path / "art").as_uri())
    assert other.champion_version(PARENT_NAME) is None
    other.experiment_id()  # creating an experiment on the other store must not redirect the first
    assert env.registry.champion_version(PARENT_NAME) == "2"
    assert env.registry.load(PARENT_NAME, "1").version == "1"
    assert not list((tmp_path / "art").glob("**/*.pt"))


def test_truncated_weights_are_corrupt(env: Env, weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptModel, match="stockq-parent v1"):
        env.registry.load(PARENT_NAME, "1")


def test_pickle_payload_in_the_store_never_runs(env: Env, weights: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    write_pickle_payload(weights, marker)
    with pytest.raises(CorruptModel):
        env.registry.load(PARENT_NAME, "1")
    assert not marker.exists()


def test_tampered_but_loadable_weights_fail_the_checksum(env: Env, weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    state["gaps.bias"] = state["gaps.bias"] + 1.0
    torch.save(state, weights)
    with pytest.raises(CorruptModel, match="checksum"):
        env.registry.load(PARENT_NAME, "1")
    assert env.registry.load(PARENT_NAME, "2").version == "2"  # other versions are unaffected


def test_an_architecture_that_does_not_fit_the_weights_is_corrupt(env: Env) -> None:
    path = _artifact(env.registry, "1", "model_card.json")
    original = path.read_text()
    try:
        path.write_text(original.replace('"hidden": 8', '"hidden": 9'))
        with pytest.raises(CorruptModel, match="do not fit its architecture"):
            env.registry.load(PARENT_NAME, "1")
    finally:
        path.write_text(original)


def test_damaged_scaler_is_corrupt(env: Env) -> None:
    path = _artifact(env.registry, "1", "scaler.json")
    original = path.read_text()
    try:
        path.write_text(original.replace('"std": [', '"std": [0, '))
        with pytest.raises(CorruptModel, match="scaler"):
            env.registry.load(PARENT_NAME, "1")
    finally:
        path.write_text(original)


def test_the_version_history_reads_the_recorded_decision_or_else_the_cards(env: Env) -> None:
    """Each version carries its whole decision as a tag; a version registered before that tag existed is
    read from the decision inside its card, to the same answer."""
    reader = CardReader(env.registry.tracking_uri)
    tags = env.registry.client.get_model_version(PARENT_NAME, "2").tags
    record = json.loads(tags[RECORD_TAG])
    assert (record["promote"], record["against_version"]) == (True, "1")
    assert (record["dm"], record["skill"]) == (None, None)  # no evaluation: no test, no skill
    history = reader.versions(PARENT_NAME)
    assert history["champion_version"] == "2"
    assert [(v["version"], v["champion"], v["job_id"]) for v in history["versions"]] == [
        ("2", True, None),
        ("1", False, None),
    ]
    v2 = history["versions"][0]
    assert v2["decision"] == {
        "promoted": True,
        "provisional": True,
        "text": env.second["decision"],
        "dm": None,
    }
    assert "v2 replaces v1" in v2["decision"]["text"] and v2["skill"] is None
    env.registry.client.delete_model_version_tag(PARENT_NAME, "2", RECORD_TAG)
    try:
        assert reader.versions(PARENT_NAME) == history
    finally:
        env.registry.record_decision(PARENT_NAME, "2", record)
    assert [m["skill"] for m in reader.models()] == [None]  # no evaluation of the recipe yet
