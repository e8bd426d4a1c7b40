"""Shared fixtures: real Redis at 127.0.0.1:6379 (each suite on its own DB numbers), real Feast and MLflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
import redis

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

# Feast points PROMETHEUS_MULTIPROC_DIR at a temp dir of its own on import, and prometheus_client picks
# in-memory or file-backed values on its own import: importing Feast first keeps one consistent mode in a
# test process that holds Feast and an API app together (a real API process never imports Feast).
import feast.metrics  # noqa: F401

from stockq.settings import Settings

if TYPE_CHECKING:
    from tests.procs import Proc

REDIS_BASE = os.environ.get("STOCKQ_TEST_REDIS", "redis://127.0.0.1:6379")
# The Celery broker of the end-to-end suites: `redis` (Redis at REDIS_BASE) or `amqp` (RabbitMQ on this
# machine, one vhost per suite). `pytest --broker amqp` or STOCKQ_TEST_BROKER=amqp.
TEST_BROKER = os.environ.get("STOCKQ_TEST_BROKER", "redis")
BASE_TICKERS = ["^GSPC", "AAPL", "MSFT"]

# Redis DB numbers per suite, so suites never see each other's keys:
#   2/3 data & feature-store tests, 4/5 model tests, 6/7 agent tests, 8/9 compose & charts,
#   10/11 backbone (Celery broker / Feast online) tests, 12/13 serving tests, 14/15 session feature env.
# Under pytest-xdist (`pytest -n 2 --dist loadfile --no-loadscope-reorder`) each xdist worker starts a
# redis-server of its own on a free port and REDIS_BASE points there: two modules that share DB numbers
# never run on one Redis at once (and the RabbitMQ vhosts, named after the Redis port, are private too).
# Modules that xdist should start first: the slowest, so that neither worker idles at the end of a run.
SLOW_FIRST = (
    "test_faults_e2e.py",
    "test_outbox_e2e.py",
    "test_stockq_up.py",
    "test_serving_e2e.py",
    "test_alerts_live.py",
    "test_multihost.py",
    "test_evaluation.py",
    "test_backbone_e2e.py",
    "test_beat.py",
    "test_clock_skew.py",
    "test_redis_restart_e2e.py",
    "test_secrets_e2e.py",
    "test_cache_results.py",
    "test_console_browser.py",
    "test_cli_live.py",
    "test_job_events.py",
    "test_flower_states.py",
    "test_progress.py",
)
_private_redis: list[tuple[Proc, Path]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker", choices=("redis", "amqp"), help="Celery broker of the end-to-end suites")


def pytest_configure(config: pytest.Config) -> None:
    global TEST_BROKER, REDIS_BASE
    TEST_BROKER = config.getoption("--broker") or TEST_BROKER
    os.environ["STOCKQ_TEST_BROKER"] = TEST_BROKER  # for helpers that read it on their own
    if os.environ.get("PYTEST_XDIST_WORKER"):
        REDIS_BASE = _start_private_redis()
        # `from tests.conftest import ...` imports a second copy of this file: it reads the environment
        os.environ["STOCKQ_TEST_REDIS"] = REDIS_BASE


def _start_private_redis() -> str:
    """A redis-server for this xdist worker alone; its URL (no DB)."""
    from tests.procs import free_port, start_redis

    data_dir = Path(tempfile.mkdtemp(prefix=f"stockq-{os.environ['PYTEST_XDIST_WORKER']}-redis-"))
    for _ in range(5):
        port = free_port()
        proc = start_redis(port, data_dir)
        # Another worker may have taken the port between free_port and the bind: then its server answered.
        if proc.p.poll() is None and redis.Redis(port=port).info("server")["process_id"] == proc.p.pid:
            _private_redis.append((proc, data_dir))
            return f"redis://127.0.0.1:{port}"
        proc.stop()
    raise RuntimeError(f"no private redis-server started (log: {data_dir / 'redis.log'})")


def pytest_unconfigure(config: pytest.Config) -> None:
    for proc, data_dir in _private_redis:
        proc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        if TEST_BROKER == "amqp":  # the vhosts named after this worker's random port are never used again
            prefix = f"stockq-test-{urlparse(REDIS_BASE).port}-"
            listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts", "name"], capture_output=True,
                                    text=True, timeout=60)  # fmt: skip
            for vhost in (v for v in listed.stdout.split() if v.startswith(prefix)):
                subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist, the SLOW_FIRST modules first (in that order), the others as collected after them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest in order


def broker_url_for(db: int, fresh: bool) -> str | None:
    """None (Redis: the broker is `redis_url`) or the AMQP URL of this suite's vhost, emptied when `fresh`."""
    if TEST_BROKER != "amqp":
        return None
    from tests import rabbit

    vhost = f"stockq-test-{urlparse(REDIS_BASE).port or 6379}-{db}"
    return rabbit.fresh_vhost(vhost) if fresh else rabbit.url(vhost)


def make_settings(var_dir: Path, db: int, feast_db: int, *, fresh_broker: bool = False,
                  **overrides: object) -> Settings:  # fmt: skip
    values: dict[str, object] = {
        "redis_url": f"{REDIS_BASE}/{db}",
        "broker_url": broker_url_for(db, fresh_broker),
        "feast_redis_db": feast_db,
        "var_dir": var_dir,
        "data_source": "bundled",
        "mlflow_tracking_uri": f"sqlite:///{var_dir / 'mlflow.db'}",
        "openai_api_key": None,
        "openai_base_url": None,
        "qdrant_url": None,
        "api_keys": "",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def flush_db(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


def fresh_settings(var_dir: Path, db: int, feast_db: int, **overrides: object) -> Settings:
    """make_settings with both of its Redis DBs emptied: a suite starts from nothing."""
    settings = make_settings(var_dir, db, feast_db, fresh_broker=True, **overrides)
    flush_db(settings.redis_url)
    flush_db(settings.feast_redis_url)
    return settings


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny LSTMs on a shared 2-core machine run many times slower with two contending threads (the
    # workers use one thread per process too).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def feature_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, object]]:
    """A var dir with ^GSPC, AAPL and MSFT ingested from the bundled source (Redis DBs 14/15)."""
    from ml.data import make_source
    from ml.features.pipeline import ingest
    from ml.features.store import FeatureStore

    settings = make_settings(tmp_path_factory.mktemp("feature_env"), 14, 15)
    flush_db(settings.feast_redis_url)
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    ingest(BASE_TICKERS, source=make_source("bundled", settings.var_path), store=store)
    yield settings, store
