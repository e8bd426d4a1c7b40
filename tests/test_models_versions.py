"""A model's version history over the API (`GET /models/<name>/versions`), any version's card, and the
champion's skill in `GET /models`, on versions registered by the real training path.

Two parent versions on one sqlite registry: v1 trained by a job before any evaluation (promoted
provisionally as the first champion), then an evaluation of the recipe that shows no measurable skill
(its report computed by ml.evaluation.panel_report from forecasts too wide to beat zero+EWMA), then v2
trained outside a job, which the champion rule keeps out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from scipy import stats

from ml.config import PanelModelConfig, TrainHooks
from ml.evaluation.panel_report import compare_panel, verdict
from ml.evaluation.promotion import NO_SKILL
from ml.registry.mlflow_registry import ModelRegistry
from ml.tickers import PARENT_NAME
from ml.training.train import TrainConfig, train_parent
from tests.conftest import make_settings
from tests.test_model_train import synthetic_store
from webapp import create_app

pytestmark = pytest.mark.slow  # trains two models
DB, FEAST_DB = 4, 5  # the model tests' Redis DBs
CONFIG = TrainConfig(model=PanelModelConfig(epochs=1, hidden=8, stride=8, seed=3, device="cpu"), val_days=100)
JOB = "0123456789abcdef0123456789abcdef"  # the job id that trains v1
LEVELS = np.array([0.1, 0.5, 0.9])


def unmeasurable_evaluation(recipe: str, universe: str) -> dict[str, Any]:
    """An evaluation summary whose report compares a forecaster 50 % too wide with the zero+EWMA
    reference on the same normal outcomes: its skill interval lies below zero."""
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2022-01-03", periods=250)
    tickers = ("S00", "S01")
    y = rng.normal(0.0, 0.01, (len(dates), len(tickers), 2))
    reference = np.broadcast_to(stats.norm.ppf(LEVELS) * 0.01, (*y.shape, len(LEVELS))).copy()
    forecasts = {"global": reference * 1.5, "zero_ewma": reference}
    report = compare_panel(dates, tickers, y, forecasts, LEVELS, model="global", reps=100)
    return {
        "evaluated_at": "2026-01-05T06:00:00+00:00",
        "recipe": recipe,
        "universe": universe,
        "reference": "zero_ewma",
        "pooled": report["pooled"],
        "verdict": verdict(report),
    }


@dataclass
class Env:
    client: FlaskClient
    registry: ModelRegistry
    first: dict[str, Any]
    second: dict[str, Any]
    evaluation: dict[str, Any]
    models_before_evaluation: dict[str, Any]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    tmp = tmp_path_factory.mktemp("models_versions")
    store = synthetic_store(tmp / "var", DB, FEAST_DB)
    uri = f"sqlite:///{tmp}/mlflow.db"
    registry = ModelRegistry(uri, (tmp / "art").as_uri())
    client = create_app(make_settings(tmp, DB, FEAST_DB, mlflow_tracking_uri=uri)).test_client()
    first = train_parent(store=store, registry=registry, config=CONFIG, hooks=TrainHooks(job_key=JOB))
    before = client.get("/models")
    assert before.status_code == 200, before.get_data(as_text=True)
    summary = unmeasurable_evaluation(str(first["recipe"]), str(first["universe"]))
    run_id = registry.record_evaluation(summary, {})
    second = train_parent(store=store, registry=registry, config=CONFIG)
    return Env(client, registry, first, second, {**summary, "run_id": run_id}, before.get_json())


def test_versions_are_listed_newest_first_with_their_decisions(env: Env) -> None:
    assert (env.first["champion"], env.second["champion"]) == (True, False)
    r = env.client.get(f"/models/{PARENT_NAME}/versions")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert (body["name"], body["champion_version"]) == (PARENT_NAME, "1")
    v2, v1 = body["versions"]
    assert [v2["version"], v1["version"]] == ["2", "1"]
    assert (v2["champion"], v1["champion"]) == (False, True)
    assert v2["created_at"] >= v1["created_at"] and v1["created_at"].endswith("+00:00")
    assert v1["trained_until"] == env.first["trained_until"] == v2["trained_until"]
    assert (v1["run_id"], v2["run_id"]) == (env.first["run_id"], env.second["run_id"])
    assert (v1["job_id"], v2["job_id"]) == (JOB, None)

    # v1: no evaluation existed, so no test and no skill; the first champion is served provisionally.
    assert v1["decision"] == {
        "promoted": True,
        "provisional": True,
        "text": env.first["decision"],
        "dm": None,
    }
    assert v1["skill"] is None
    assert env.first["decision"].startswith(f"promoted provisionally (first champion of {PARENT_NAME})")

    # v2: kept out by the evaluation, whose DM test and skill interval it quotes, against champion v1.
    pooled = env.evaluation["pooled"]["skill"]["zero_ewma"]
    measured = env.evaluation["verdict"]
    assert measured["measurable"] is False and measured["hi"] < 0
    assert v2["decision"] == {
        "promoted": False,
        "provisional": False,
        "text": env.second["decision"],
        "dm": {
            "statistic": pytest.approx(pooled["dm_statistic"]),
            "p_value": pytest.approx(pooled["dm_p_value"]),
            "reference": "zero_ewma",
            "against_version": "1",
        },
    }
    assert v2["decision"]["text"].startswith("kept champion v1: the evaluation of recipe")
    assert NO_SKILL in v2["decision"]["text"]
    assert pooled["dm_statistic"] > 0 and pooled["dm_p_value"] > 0.5  # the wider forecaster's loss is higher
    assert v2["skill"] == _skill_of(measured)


def _skill_of(measured: dict) -> dict:
    """The skill the API shows for the evaluation whose verdict is `measured`."""
    keys = ("skill", "lo", "hi")
    return {**{k: pytest.approx(measured[k]) for k in keys}, "evaluated_at": "2026-01-05T06:00:00+00:00"}


def test_any_versions_card_says_whether_it_is_the_champion(env: Env) -> None:
    r = env.client.get(f"/models/{PARENT_NAME}?version=2")
    assert r.status_code == 200, r.get_data(as_text=True)
    card = r.get_json()
    assert (card["name"], card["version"], card["champion"]) == (PARENT_NAME, "2", False)
    assert card["decision"]["promote"] is False and card["decision"]["against_version"] == "1"
    assert card["champion_decision"] == env.second["decision"]
    champion = env.client.get(f"/models/{PARENT_NAME}").get_json()
    assert (champion["version"], champion["champion"]) == ("1", True)
    assert env.client.get(f"/models/{PARENT_NAME}?version=1").get_json()["champion"] is True
    missing = env.client.get(f"/models/{PARENT_NAME}?version=9")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "model_not_found"


def test_models_show_the_champions_skill_or_null(env: Env) -> None:
    (before,) = env.models_before_evaluation["models"]
    assert (before["champion_version"], before["skill"]) == ("1", None)
    (now,) = env.client.get("/models").get_json()["models"]
    measured = env.evaluation["verdict"]
    assert (now["name"], now["champion_version"], now["kind"]) == (PARENT_NAME, "1", "parent")
    assert now["skill"] == _skill_of(measured)


def test_versions_of_an_unknown_model_are_404(env: Env) -> None:
    r = env.client.get("/models/stockq-child-NOPE/versions")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "model_not_found"
    bad = env.client.get("/models/bad%20name/versions")
    assert bad.status_code == 422, bad.get_data(as_text=True)


def test_the_versions_route_is_published(env: Env) -> None:
    doc = env.client.get("/openapi.json").get_json()
    op = doc["paths"]["/models/{name}/versions"]["get"]
    assert {"200", "404"} <= set(op["responses"])
    row = doc["components"]["schemas"]["ModelVersionRow"]["properties"]
    assert {"version", "created_at", "champion", "decision", "skill", "job_id", "run_id"} <= set(row)
