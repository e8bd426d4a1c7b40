"""Feature store and ingest against real Redis (DBs 2 and 3) and real Feast: skew, point-in-time, bad input,
staleness, idempotence, the market fetched with every ingest, `feast apply` from feature_repo/."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from ml.data import make_source
from ml.data.base import DataSource
from ml.data.bundled import BundledSource
from ml.errors import (
    FeaturesMissing,
    InsufficientHistory,
    InvalidInput,
    InvalidTicker,
    StaleFeatures,
    StockqError,
    UnknownTicker,
)
from ml.features.definitions import definitions
from ml.features.pipeline import ingest
from ml.features.store import FeatureStore
from ml.features.technical import (
    FEATURE_COLUMNS,
    WARMUP,
    WINDOW_COLUMNS,
    build_window,
    compute_features,
    model_rows,
)
from ml.tickers import INDEX_TICKER
from stockq.settings import Settings
from tests.conftest import BASE_TICKERS, fresh_settings, make_settings
from tests.test_data_sources import as_source_frame, offline_only, synthetic_ohlcv, write_csv

DB, FEAST_DB = 2, 3
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_dbs(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return fresh_settings(tmp_path_factory.mktemp("dbs"), DB, FEAST_DB)


@dataclass
class Env:
    settings: Settings
    store: FeatureStore


@pytest.fixture(scope="module")
def bundled(redis_dbs: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, dict]:
    settings = make_settings(tmp_path_factory.mktemp("bundled"), DB, FEAST_DB)
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    results = ingest(BASE_TICKERS, source=make_source("bundled", settings.var_path), store=store)
    return Env(settings, store), results


@dataclass
class CsvEnv(Env):
    csv_dir: Path
    source: DataSource  # uncached, so a rewritten CSV is what the next ingest sees

    def run(self, tickers: list[str]) -> dict[str, dict[str, object]]:
        return ingest(tickers, source=self.source, store=self.store)


@pytest.fixture
def csv_env(redis_dbs: Settings, tmp_path: Path) -> CsvEnv:
    """Each test ingests its own tickers: the online DB is shared with the `bundled` fixture."""
    settings = make_settings(tmp_path / "var", DB, FEAST_DB)
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    # The market every ticker's volatility inputs read: ingested from the same source with any batch.
    write_csv(tmp_path / "csv", INDEX_TICKER, synthetic_ohlcv(400, seed=99))
    source = make_source(f"csv:{tmp_path / 'csv'}", settings.var_path, cached=False)
    return CsvEnv(settings, store, tmp_path / "csv", source)


def stored_bytes(var: Path) -> dict[str, bytes]:
    return {str(p.relative_to(var)): p.read_bytes() for p in sorted(var.rglob("*.parquet"))}


def online_dump(settings: Settings) -> dict[Any, Any]:
    client = redis.Redis.from_url(settings.feast_redis_url)
    return {key: client.hgetall(key) for key in client.scan_iter()}


def assert_no_skew(store: FeatureStore, ticker: str, now: datetime) -> None:
    """The served window equals the one built from the training frame for the same as-of date."""
    online = store.online_window(ticker, now=now)
    training = store.training_frame(ticker, end=online.as_of)
    assert training.index[-1].date() == online.as_of
    np.testing.assert_array_equal(online.window, build_window(training, store.window))
    assert online.last_close == training["close"].iloc[-1]
    assert online.feature_names == WINDOW_COLUMNS


# -- bundled: the offline path of the whole pipeline ----------------------------------------------------
def test_ingest_bundled(bundled: tuple[Env, dict]) -> None:
    env, results = bundled
    rows = len(BundledSource().fetch("AAPL")) - (WARMUP - 1)
    assert rows == 8264
    common = {"rows": rows, "as_of": "2022-12-28", "source": "bundled", "changed": True}
    assert results == {t: {**common, "close_only": t != "^GSPC"} for t in BASE_TICKERS}
    daily = env.store.stored_daily("^GSPC")
    assert daily is not None and len(daily) == rows
    assert list(daily.columns) == ["ticker", "event_timestamp", *FEATURE_COLUMNS]


def test_ingest_twice_changes_nothing(bundled: tuple[Env, dict]) -> None:
    env, first = bundled
    files, online = stored_bytes(env.settings.var_path), online_dump(env.settings)
    source = make_source("bundled", env.settings.var_path)
    again = ingest(BASE_TICKERS, source=source, store=env.store)
    assert source.fetches == []  # type: ignore[attr-defined]  # the raw cache answered
    assert {t: {**r, "changed": True} for t, r in again.items()} == first
    assert not any(r["changed"] for r in again.values())
    assert stored_bytes(env.settings.var_path) == files
    assert online_dump(env.settings) == online


def test_no_training_serving_skew(bundled: tuple[Env, dict]) -> None:
    env, _ = bundled
    far_future = datetime(2100, 1, 1, tzinfo=UTC)  # bundled history is frozen: never stale
    for ticker in BASE_TICKERS:
        assert_no_skew(env.store, ticker, far_future)
        snapshot = pd.Series(env.store.online_features(ticker), dtype="float64")  # None (no volume) -> NaN
        last = env.store.training_frame(ticker, start=date(2022, 12, 28)).iloc[-1]
        pd.testing.assert_series_equal(snapshot, last, check_names=False, check_exact=True)


def test_training_frame_is_point_in_time(bundled: tuple[Env, dict]) -> None:
    """Each row equals the features computed from the history cut at that row's date."""
    env, _ = bundled
    frame = env.store.training_frame("AAPL", date(2010, 1, 1), date(2010, 12, 31))
    assert frame.index[0] == pd.Timestamp("2010-01-04") and frame.index[-1] == pd.Timestamp("2010-12-31")
    assert len(frame) == 252 and list(frame.columns) == FEATURE_COLUMNS
    for day in frame.index[[0, 100, 251]]:
        market = BundledSource().fetch(INDEX_TICKER, end=day.date())["close"]
        cut = compute_features(BundledSource().fetch("AAPL", end=day.date()), market)
        pd.testing.assert_series_equal(frame.loc[day], cut.iloc[-1], check_exact=True)


def test_training_frame_and_online_bad_requests(bundled: tuple[Env, dict]) -> None:
    store = bundled[0].store
    with pytest.raises(InvalidInput, match="inverted date range"):
        store.training_frame("AAPL", date(2020, 2, 1), date(2020, 1, 1))
    with pytest.raises(FeaturesMissing, match="no features stored for KO: ingest it first"):
        store.training_frame("KO")
    with pytest.raises(FeaturesMissing, match="no features for AAPL between 2030-01-01"):
        store.training_frame("AAPL", date(2030, 1, 1))
    with pytest.raises(InvalidTicker):
        store.training_frame("../etc")
    with pytest.raises(FeaturesMissing, match="no online features for KO"):
        store.online_window("KO")
    with pytest.raises(FeaturesMissing, match="no features stored for KO"):
        store.materialize(["KO"])


@offline_only
@pytest.mark.timeout(60)
def test_ingest_auto_offline_falls_back(
    bundled: tuple[Env, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, DB, DB)  # its own online DB: DB 3 holds the `bundled` rows
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    with caplog.at_level(logging.WARNING, logger="ml.data.auto"):
        results = ingest(BASE_TICKERS, source=make_source("auto", settings.var_path), store=store)
    assert {t: r["source"] for t, r in results.items()} == dict.fromkeys(BASE_TICKERS, "bundled")
    assert any(r.name == "ml.data.auto" and "yfinance" in r.getMessage() for r in caplog.records)
    for ticker in BASE_TICKERS:
        np.testing.assert_array_equal(
            store.online_window(ticker).window, bundled[0].store.online_window(ticker).window
        )


# -- csv: histories we can grow, revise and break -------------------------------------------------------
def test_point_in_time_across_a_growing_history(csv_env: CsvEnv) -> None:
    data = synthetic_ohlcv(300, seed=1)
    d1, d2 = data.index[199].date(), data.index[-1].date()
    write_csv(csv_env.csv_dir, "PITA", data.iloc[:200])
    assert csv_env.run(["PITA"])["PITA"]["rows"] == 151
    short = csv_env.store.training_frame("PITA")
    short_window = csv_env.store.online_window("PITA", now=datetime(d1.year, d1.month, d1.day, tzinfo=UTC))

    write_csv(csv_env.csv_dir, "PITA", data)
    source = f"csv:{csv_env.csv_dir.resolve()}"
    assert csv_env.run(["PITA"])["PITA"] == {
        "rows": 251, "as_of": d2.isoformat(), "source": source, "close_only": False, "changed": True
    }  # fmt: skip
    full = csv_env.store.training_frame("PITA")
    pd.testing.assert_frame_equal(full.loc[: str(d1)], short, check_exact=True)  # later data changed nothing
    np.testing.assert_array_equal(build_window(full.loc[: str(d1)], 60), short_window.window)
    assert_no_skew(csv_env.store, "PITA", datetime(d2.year, d2.month, d2.day, tzinfo=UTC))


def test_every_ingest_reads_the_market_from_the_same_source(csv_env: CsvEnv) -> None:
    data = synthetic_ohlcv(250, seed=5)
    write_csv(csv_env.csv_dir, "MKTS", data)
    assert list(csv_env.run(["MKTS"])) == ["MKTS"]  # the market was read, not stored
    assert csv_env.store.tickers() == ["MKTS"]
    market = as_source_frame(synthetic_ohlcv(400, seed=99))["close"]
    expected = model_rows(compute_features(as_source_frame(data), market))
    stored = csv_env.store.training_frame("MKTS")
    assert list(stored.index) == list(expected.index)
    np.testing.assert_allclose(stored.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True)
    csv_env.run([INDEX_TICKER, "MKTS"])
    assert csv_env.store.tickers() == ["MKTS", INDEX_TICKER]


def test_revised_or_shorter_history_replaces_online_rows(csv_env: CsvEnv) -> None:
    data = synthetic_ohlcv(300, seed=2)
    now = datetime.combine(data.index[-1].date(), datetime.min.time(), UTC)
    write_csv(csv_env.csv_dir, "REVS", data)
    csv_env.run(["REVS"])
    before = csv_env.store.online_window("REVS", now=now)

    # Same dates, prices re-adjusted (a 2:1 split): the as-of date does not move, yet online must follow.
    revised = data.copy()
    revised.iloc[:150, :4] /= 2
    write_csv(csv_env.csv_dir, "REVS", revised)
    assert csv_env.run(["REVS"])["REVS"]["changed"] is True
    after = csv_env.store.online_window("REVS", now=now)
    assert after.as_of == before.as_of and not np.array_equal(after.window, before.window)
    assert_no_skew(csv_env.store, "REVS", now)

    write_csv(csv_env.csv_dir, "REVS", revised.iloc[:220])  # the source now ends earlier
    csv_env.run(["REVS"])
    end = revised.index[219]
    assert csv_env.store.training_frame("REVS").index[-1] == end
    assert csv_env.store.online_window("REVS", now=end.to_pydatetime()).as_of == end.date()
    assert_no_skew(csv_env.store, "REVS", end.to_pydatetime())


@pytest.mark.parametrize(
    ("bad", "content", "error", "message"),
    [
        ("DUPE", lambda d: pd.concat([d, d.iloc[[10]]]), InvalidInput, r"DUPE has duplicate date\(s\) 2019-"),
        ("COLS", lambda d: d.drop(columns=["Volume"]), InvalidInput, r"COLS lacks column\(s\) volume"),
        ("SHRT", lambda d: d.iloc[:100], InsufficientHistory, r"need at least 60 days .* have 0"),
        ("NOFILE", None, UnknownTicker, r"no file NOFILE.csv for NOFILE"),
        ("../etc", None, InvalidTicker, r"invalid ticker '../etc'"),
        ("AAPL;DEL", None, InvalidTicker, r"invalid ticker 'AAPL;DEL'"),
        ("", None, InvalidTicker, r"invalid ticker ''"),
        ("Q" * 200, None, InvalidTicker, r"invalid ticker 'QQQQ"),
    ],
)  # fmt: skip
def test_failed_ingest_leaves_everything_stored(
    csv_env: CsvEnv,
    bad: str,
    content: Callable[[pd.DataFrame], pd.DataFrame] | None,
    error: type[StockqError],
    message: str,
) -> None:
    data = synthetic_ohlcv(250, seed=3)
    write_csv(csv_env.csv_dir, "GOOD", data.iloc[:200])
    csv_env.run(["GOOD"])
    files, online = stored_bytes(csv_env.settings.var_path), online_dump(csv_env.settings)

    write_csv(csv_env.csv_dir, "GOOD", data)  # GOOD has news, but the batch fails: nothing is written
    if content is not None:
        write_csv(csv_env.csv_dir, bad, content(data))
    with pytest.raises(error, match=message) as err:
        csv_env.run(["GOOD", bad])
    assert isinstance(err.value, StockqError) and err.value.code
    assert stored_bytes(csv_env.settings.var_path) == files
    assert online_dump(csv_env.settings) == online
    assert csv_env.store.training_frame("GOOD").index[-1] == data.index[199]


def test_online_window_refuses_stale_rows(csv_env: CsvEnv) -> None:
    write_csv(csv_env.csv_dir, "STAL", synthetic_ohlcv(250, seed=4))
    as_of = date.fromisoformat(str(csv_env.run(["STAL"])["STAL"]["as_of"]))
    at = datetime.combine(as_of, datetime.min.time(), UTC)
    assert csv_env.store.online_window("STAL", now=at + timedelta(days=7)).as_of == as_of  # the limit itself
    with pytest.raises(StaleFeatures, match=rf"STAL are from {as_of} \(8 days old, limit 7\)") as err:
        csv_env.store.online_window("STAL", now=at + timedelta(days=8))
    assert err.value.code == "stale_features"
    with pytest.raises(StaleFeatures):
        csv_env.store.online_window("STAL", now=datetime(2100, 1, 1, tzinfo=UTC))
    with pytest.raises(StaleFeatures):
        csv_env.store.online_window("STAL")  # today: the synthetic history ends in 2019
    lenient = FeatureStore(
        csv_env.settings.var_path, csv_env.settings.feast_connection_string, max_age_days=30
    )
    assert lenient.online_window("STAL", now=at + timedelta(days=30)).as_of == as_of


# -- feature_repo: `feast apply` as a user runs it ------------------------------------------------------
def _feast_apply(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    feast = Path(sys.executable).parent / "feast"
    return subprocess.run(
        [str(feast), "apply"], cwd=REPO / "feature_repo", env=env, capture_output=True, text=True, timeout=120
    )


def test_feast_apply_from_feature_repo(redis_dbs: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STOCKQ_VAR_DIR"} | {"FEAST_USAGE": "False"}
    refused = _feast_apply(env)
    assert refused.returncode != 0 and "STOCKQ_VAR_DIR is not set" in refused.stderr
    assert not any(p.name.startswith("$") for p in (REPO / "feature_repo").iterdir())

    done = _feast_apply(env | {"STOCKQ_VAR_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "feast" / "registry.db").is_file()
    # The services' store reads the CLI's registry and finds it current: same views, same parquet paths.
    store = FeatureStore(tmp_path, redis_dbs.feast_connection_string)
    assert store._registered(definitions(tmp_path / "features"))
    assert {v.name for v in store.store.list_feature_views()} == {"daily_features", "model_window"}


def test_feature_repo_yaml_agrees_with_settings_defaults() -> None:
    import yaml

    config = yaml.safe_load((REPO / "feature_repo" / "feature_store.yaml").read_text())
    defaults = Settings.model_construct()  # the declared defaults, no environment
    assert config["online_store"]["connection_string"] == defaults.feast_connection_string
    assert defaults.feast_connection_string.endswith(",db=1")
    assert defaults.redis_url.endswith("/0")  # Celery's DB, which Feast stays off
    assert config["registry"]["path"] == "${STOCKQ_VAR_DIR}/feast/registry.db"
    assert (config["provider"], config["offline_store"]["type"]) == ("local", "duckdb")
