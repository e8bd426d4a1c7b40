"""Adapter over Feast: parquet offline store (duckdb engine), Redis online store.

The offline store holds one parquet file per ticker and view, each rewritten atomically, so a failed or
concurrent ingest never leaves a half-written file and other tickers' rows are never touched. A ticker's
files always hold the features of one whole history (the source's, as last ingested), never a splice of
two: a re-ingest replaces them.

The online store gets exactly the offline rows of the tickers just written (see `materialize`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from feast import Entity, FeatureView
from filelock import FileLock

from ml.data.atomic import atomic_write
from ml.data.base import check_range
from ml.errors import FeaturesMissing, StaleFeatures
from ml.features.definitions import DAILY_VIEW, WINDOW_VIEW, definitions, offline_dirs
from ml.features.technical import (
    FEATURE_COLUMNS,
    TECHNICAL_FEATURES,
    WINDOW_COLUMNS,
    build_window,
    model_rows,
)
from ml.tickers import ticker_filename, validate_ticker

# Sources whose history is frozen (shipped in a package): their rows are as fresh as they will ever be.
FROZEN_SOURCES = frozenset({"bundled"})
WINDOW_FIELDS = ["window", "window_len", "n_features", "feature_names", "last_close", "as_of", "source"]


@dataclass(frozen=True)
class OnlineWindow:
    ticker: str
    as_of: date
    window: np.ndarray  # (window_len, n_features), float64
    feature_names: list[str]  # the window's columns (WINDOW_COLUMNS when ingested by this version)
    last_close: float
    source: str

    def columns(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """(window_len, len(names)): the window's columns picked by name."""
        missing = [n for n in names if n not in self.feature_names]
        if missing:
            raise FeaturesMissing(
                f"online window for {self.ticker} lacks {', '.join(missing)}: ingest it again"
            )
        return self.window[:, [self.feature_names.index(n) for n in names]]


@dataclass(frozen=True)
class PreparedWrite:
    """One ticker's validated offline rows, not yet on disk (see FeatureStore.prepare)."""

    ticker: str
    daily: pd.DataFrame
    window_row: pd.DataFrame
    as_of: date


def _utc_midnight(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(index).tz_localize(UTC)


def _view_key(view: FeatureView) -> tuple[object, ...]:
    """What must match for a registered view to be current. Not `==`: the registry's copy also carries
    inferred entity columns and materialisation history."""
    return view.features, view.batch_source, view.ttl


def _write_if_changed(frame: pd.DataFrame, path: Path) -> bool:
    """Atomic replace, skipped when the bytes would be identical (parquet output is deterministic)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    if path.exists() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True


class FeatureStore:
    def __init__(
        self,
        var_dir: Path,
        connection_string: str,
        *,
        window: int = 60,
        max_age_days: int = 7,
    ) -> None:
        from feast import FeatureStore as FeastStore
        from feast.repo_config import RepoConfig

        self.var_dir = Path(var_dir)
        self.offline_root = self.var_dir / "features"
        self.window = window
        self.max_age_days = max_age_days
        feast_dir = self.var_dir / "feast"
        feast_dir.mkdir(parents=True, exist_ok=True)
        for d in offline_dirs(self.offline_root):
            d.mkdir(parents=True, exist_ok=True)
        config = RepoConfig(
            project="stockq",
            provider="local",
            registry={"path": str(feast_dir / "registry.db"), "cache_ttl_seconds": 60},
            offline_store={"type": "duckdb"},
            # Feast skips an online write whose event time is not newer than the stored one. An ingest
            # that re-adjusts a history (or moves back to an earlier as-of) must still replace the row,
            # or online and offline would disagree. `materialize` writes only the tickers it is given,
            # so no other ticker's row can be replaced by an older one.
            online_store={"type": "redis", "connection_string": connection_string, "skip_dedup": True},
            entity_key_serialization_version=3,
            repo_path=str(feast_dir),
        )
        self._lock = FileLock(str(feast_dir / "apply.lock"))
        self.store = FeastStore(config=config)
        self._applied = False

    # -- setup ---------------------------------------------------------------------------------
    def apply(self) -> None:
        """Register entity and views when the registry lacks them or holds other definitions.

        Idempotent and serialised across processes.
        """
        if self._applied:
            return
        with self._lock:
            objects = definitions(self.offline_root)
            if not self._registered(objects):
                self.store.apply(objects)
        self._applied = True

    def _registered(self, objects: list[Entity | FeatureView]) -> bool:
        views = {v.name: v for v in self.store.list_feature_views()}
        return all(
            obj.name in views and _view_key(views[obj.name]) == _view_key(obj)
            for obj in objects
            if isinstance(obj, FeatureView)
        )

    # -- offline -------------------------------------------------------------------------------
    def _daily_path(self, ticker: str) -> Path:
        return offline_dirs(self.offline_root)[0] / f"{ticker_filename(ticker)}.parquet"

    def _window_path(self, ticker: str) -> Path:
        return offline_dirs(self.offline_root)[1] / f"{ticker_filename(ticker)}.parquet"

    def tickers(self) -> list[str]:
        """Every ticker with stored daily features, sorted."""
        found = [pd.read_parquet(p, columns=["ticker"])["ticker"].iloc[0]
                 for p in offline_dirs(self.offline_root)[0].glob("*.parquet")]  # fmt: skip
        return sorted(str(t) for t in found)

    def stored_daily(self, ticker: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        path = self._daily_path(ticker)
        return pd.read_parquet(path, columns=columns) if path.exists() else None

    def stored_closes(self, ticker: str) -> pd.Series | None:
        """The stored daily closes indexed by their (naive) day, oldest first: the two columns only, since
        every uncached forecast reads them for its chart."""
        daily = self.stored_daily(ticker, columns=["event_timestamp", "close"])
        if daily is None:
            return None
        days = pd.DatetimeIndex(daily["event_timestamp"]).tz_convert(None)
        return pd.Series(daily["close"].to_numpy(dtype="float64"), index=days, name="close").sort_index()

    def prepare(self, ticker: str, features: pd.DataFrame, *, source: str) -> PreparedWrite:
        """Both files' contents for one ticker, validated; nothing touches disk here."""
        ticker = validate_ticker(ticker)
        rows = model_rows(features)
        window = build_window(features, self.window)  # raises InsufficientHistory with the minimum
        daily = rows[FEATURE_COLUMNS].copy()
        daily.insert(0, "ticker", ticker)
        daily.insert(1, "event_timestamp", _utc_midnight(daily.index))
        as_of = rows.index[-1]
        window_row = pd.DataFrame(
            {
                "ticker": [ticker],
                "event_timestamp": _utc_midnight(pd.DatetimeIndex([as_of])),
                "window": [window.reshape(-1).tolist()],
                "window_len": [window.shape[0]],
                "n_features": [window.shape[1]],
                "feature_names": [",".join(WINDOW_COLUMNS)],
                "last_close": [float(rows["close"].iloc[-1])],
                "as_of": [as_of.date().isoformat()],
                "source": [source],
            }
        )
        return PreparedWrite(ticker, daily.reset_index(drop=True), window_row, as_of.date())

    def commit(self, batch: list[PreparedWrite]) -> dict[str, dict[str, object]]:
        """Write prepared tickers, each replacing what it had. Returns rows, as-of and whether a file changed.

        Writing the same rows twice leaves the files byte-for-byte unchanged.
        """
        results: dict[str, dict[str, object]] = {}
        for item in batch:
            changed = _write_if_changed(item.daily, self._daily_path(item.ticker))
            changed |= _write_if_changed(item.window_row, self._window_path(item.ticker))
            results[item.ticker] = {
                "rows": len(item.daily),
                "as_of": item.as_of.isoformat(),
                "changed": changed,
            }
        return results

    def write(self, ticker: str, features: pd.DataFrame, *, source: str) -> dict[str, object]:
        """Store a ticker's feature rows and latest model window (validated before touching disk)."""
        prepared = self.prepare(ticker, features, source=source)
        return self.commit([prepared])[prepared.ticker]

    def training_frame(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """Point-in-time features for each stored trading day in [start, end], indexed by date."""
        ticker = validate_ticker(ticker)
        check_range(start, end)
        stored = self.stored_daily(ticker)
        if stored is None:
            raise FeaturesMissing(f"no features stored for {ticker}: ingest it first")
        stamps = pd.DatetimeIndex(stored["event_timestamp"])
        lo = pd.Timestamp(start, tz=UTC) if start else stamps.min()
        hi = pd.Timestamp(end, tz=UTC) if end else stamps.max()
        stamps = stamps[(stamps >= lo) & (stamps <= hi)]
        if not len(stamps):
            raise FeaturesMissing(f"no features for {ticker} between {start} and {end}")
        self.apply()
        entity_df = pd.DataFrame({"ticker": ticker, "event_timestamp": stamps})
        frame = self.store.get_historical_features(
            entity_df=entity_df, features=[f"{DAILY_VIEW}:{c}" for c in FEATURE_COLUMNS]
        ).to_df()
        frame = frame.sort_values("event_timestamp")
        frame.index = pd.DatetimeIndex(frame["event_timestamp"]).tz_convert(None).rename("date")
        frame = frame[FEATURE_COLUMNS].astype("float64")
        # Every stored row has its close and technical features; only the volatility inputs may be NaN
        # (still warming up), so a missing one of these means the join lost the row.
        empty = frame[["close", *TECHNICAL_FEATURES]].isna().any(axis=1)
        if empty.any():
            raise FeaturesMissing(
                f"point-in-time join for {ticker} returned {int(empty.sum())} incomplete row(s), first "
                f"{frame.index[empty][0].date()}: ingest it again"
            )
        return frame

    # -- online --------------------------------------------------------------------------------
    def materialize(self, tickers: list[str]) -> None:
        """Push these tickers' latest offline rows (daily features and model window) into Redis.

        Written with `write_to_online_store` rather than `FeatureStore.materialize`: Feast's materialize
        scans every ticker's files over a date range and would write other tickers' older rows too, and
        it cannot replace a row whose event time did not advance. These rows are read from the same
        parquet files the offline store serves, so online and offline cannot diverge.
        """
        self.apply()
        valid = [validate_ticker(t) for t in tickers]
        daily, windows = [], []
        for ticker in valid:
            if not self._window_path(ticker).exists() or not self._daily_path(ticker).exists():
                raise FeaturesMissing(f"no features stored for {ticker}: ingest it first")
            windows.append(pd.read_parquet(self._window_path(ticker)))
            daily.append(pd.read_parquet(self._daily_path(ticker)).iloc[[-1]])
        if valid:
            self.store.write_to_online_store(DAILY_VIEW, pd.concat(daily, ignore_index=True))
            self.store.write_to_online_store(WINDOW_VIEW, pd.concat(windows, ignore_index=True))

    def online_window(self, ticker: str, *, now: datetime | None = None) -> OnlineWindow:
        """The model input for a ticker in one online read, refusing rows older than max_age_days."""
        ticker = validate_ticker(ticker)
        self.apply()
        row = self.store.get_online_features(
            features=[f"{WINDOW_VIEW}:{f}" for f in WINDOW_FIELDS], entity_rows=[{"ticker": ticker}]
        ).to_dict()
        if row["window"][0] is None:
            raise FeaturesMissing(f"no online features for {ticker}: ingest and materialize it first")
        as_of = date.fromisoformat(row["as_of"][0])
        source = row["source"][0] or "unknown"
        if source not in FROZEN_SOURCES:
            today = (now or datetime.now(UTC)).date()
            age = (today - as_of).days
            if age > self.max_age_days:
                raise StaleFeatures(
                    f"online features for {ticker} are from {as_of} ({age} days old, limit "
                    f"{self.max_age_days}): ingest it again"
                )
        names = row["feature_names"][0].split(",")
        shape = (int(row["window_len"][0]), int(row["n_features"][0]))
        if not set(WINDOW_COLUMNS) <= set(names):
            raise FeaturesMissing(f"online window for {ticker} has another feature set; ingest it again")
        window = np.asarray(row["window"][0], dtype=np.float64).reshape(shape)
        return OnlineWindow(ticker, as_of, window, names, float(row["last_close"][0]), source)

    def online_features(self, ticker: str) -> dict[str, float | None]:
        """The latest daily feature row (the technical snapshot)."""
        ticker = validate_ticker(ticker)
        self.apply()
        row = self.store.get_online_features(
            features=[f"{DAILY_VIEW}:{c}" for c in FEATURE_COLUMNS], entity_rows=[{"ticker": ticker}]
        ).to_dict()
        return {c: row[c][0] for c in FEATURE_COLUMNS}
