"""Model listings read every page of MLflow's searches (ml/registry/paging.py), not the first 100.

One real sqlite registry with more registered models than MLflow's default page: `GET /models`, the
nightly planners (workers/scheduled.py) and the exporter's model ages (workers/exporter_sources.py) each
see all of them. AAPL and MSFT sort last, past the first page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.registry.paging import every_page
from ml.tickers import CHILD_PREFIX, INDEX_TICKER
from stockq.settings import Settings
from tests.conftest import make_settings
from tests.procs import free_port, start_redis
from webapp import create_app
from workers.celery_app import create_celery
from workers.exporter_sources import ModelAges
from workers.runtime import Runtime
from workers.scheduled import OWNER, champions, schedule_ingests, schedule_retrains

PAGE = 100  # MLflow's default page of search_registered_models
FILLERS = [f"A{i:03d}" for i in range(PAGE + 18)]  # "A000" < "AAPL": these fill the first page
TICKERS = [*FILLERS, "AAPL", "MSFT"]
NAMES = [CHILD_PREFIX + t for t in TICKERS]
STALE = "2000-01-03"  # before any stored data: AAPL is retrained
CURRENT = "2999-12-31"  # after any stored data: the others are not


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registry of len(TICKERS) children, each with a champion carrying the tags registration writes."""
    from mlflow import MlflowClient

    from ml.registry.mlflow_store import ensure_tracking_store

    tmp = tmp_path_factory.mktemp("model_paging")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    ensure_tracking_store(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for ticker, name in zip(TICKERS, NAMES, strict=True):
        client.create_registered_model(name)
        until = STALE if ticker == "AAPL" else CURRENT
        tags = {"kind": "child", "ticker": ticker, "trained_until": until}
        version = client.create_model_version(name, source=str(tmp), tags=tags)
        client.set_registered_model_alias(name, "champion", version.version)
    first = client.search_registered_models()
    assert len(first) == PAGE and first.token  # one unpaged search would miss the rest
    return uri


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("paging_redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


@pytest.mark.parametrize("page", [7, 10])  # 10: the last page is full, its token leads to an empty one
def test_every_page_follows_the_token(tracking_uri: str, page: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = [m.name for m in every_page(client.search_registered_models, max_results=page)]
    assert found == sorted(NAMES)


def test_get_models_lists_every_model(tmp_path: Path, tracking_uri: str, private_redis: str) -> None:
    settings = make_settings(tmp_path, 0, 1, redis_url=private_redis, mlflow_tracking_uri=tracking_uri)
    r = create_app(settings).test_client().get("/models")
    assert r.status_code == 200, r.get_data(as_text=True)
    models = {m["name"]: m for m in r.get_json()["models"]}
    assert sorted(models) == sorted(NAMES)
    assert models[CHILD_PREFIX + "MSFT"] == {
        "name": CHILD_PREFIX + "MSFT",
        "champion_version": "1",
        "trained_until": CURRENT,
        "kind": "child",
        "ticker": "MSFT",
        "skill": None,  # no evaluation of its recipe in this registry
    }


def test_exporter_ages_every_champion(tracking_uri: str) -> None:
    ages = ModelAges(tracking_uri)
    ages.refresh()
    assert sorted(ages.ages()) == sorted(NAMES)


def test_nightly_planners_see_every_champion(
    tracking_uri: str, private_redis: str, feature_env: tuple[Settings, Any]
) -> None:
    """Against the ingested feature store (AAPL, MSFT): AAPL, past the first page, is the one retrain;
    the daily ingest covers every child."""
    base, _ = feature_env
    settings = base.model_copy(update={
        "redis_url": private_redis, "cache_redis_url": base.redis_url, "mlflow_tracking_uri": tracking_uri,
    })  # fmt: skip
    rt, celery = Runtime(settings), create_celery(settings)

    (retrain,) = schedule_retrains(rt, celery)
    job = rt.jobs.get(retrain)
    assert job is not None and job.owner == OWNER
    assert job.params == {"ticker": "AAPL", "strategy": "fine_tune", "epochs": None}

    ingested = [rt.jobs.get(job_id) for job_id in schedule_ingests(rt, celery)]
    tickers = [t for job in ingested if job is not None for t in job.params["tickers"]]
    assert sorted(tickers) == sorted([INDEX_TICKER, *TICKERS])
    assert champions(rt) == {t: STALE if t == "AAPL" else CURRENT for t in TICKERS}
