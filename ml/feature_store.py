"""Adapter over Feast: parquet offline store (duckdb engine), Redis online store.

The offline store holds one parquet file per ticker and view, each rewritten atomically, so a failed or
concurrent ingest never leaves a half-written file and other tickers' rows are never touched.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from ml.errors import FeaturesMissing, InvalidInput, StaleFeatures
from ml.feature_defs import DAILY_VIEW, WINDOW_VIEW, definitions, offline_dirs
from ml.features import FEATURE_COLUMNS, MODEL_FEATURES, build_window, model_rows
from ml.tickers import ticker_filename, validate_ticker

# Sources whose history is frozen (shipped in a package): their rows are as fresh as they will ever be.
FROZEN_SOURCES = frozenset({"bundled"})
_WINDOW_FIELDS = ["window", "window_len", "n_features", "feature_names", "last_close", "as_of", "source"]


@dataclass(frozen=True)
class OnlineWindow:
    ticker: str
    as_of: date
    window: np.ndarray  # (window_len, n_features), float64
    feature_names: list[str]
    last_close: float
    source: str


def _utc_midnight(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(index).tz_localize(timezone.utc)


def _write_if_changed(frame: pd.DataFrame, path: Path) -> bool:
    """Atomic replace, skipped when the bytes would be identical (parquet output is deterministic)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet.part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
            online_store={"type": "redis", "connection_string": connection_string},
            entity_key_serialization_version=3,
            repo_path=str(feast_dir),
        )
        self._lock = FileLock(str(feast_dir / "apply.lock"))
        self.store = FeastStore(config=config)
        self._applied = False

    # -- setup ---------------------------------------------------------------------------------
    def apply(self) -> None:
        """Register entity and views (idempotent; serialised across processes)."""
        if self._applied:
            return
        with self._lock:
            objects = definitions(self.offline_root)
            names = {fv.name for fv in self.store.list_feature_views()}
            if names != {DAILY_VIEW, WINDOW_VIEW} or self._sources_moved():
                self.store.apply(objects)
        self._applied = True

    def _sources_moved(self) -> bool:
        view = self.store.get_feature_view(DAILY_VIEW)
        return view.batch_source.path != str(offline_dirs(self.offline_root)[0] / "*.parquet")

    # -- offline -------------------------------------------------------------------------------
    def _daily_path(self, ticker: str) -> Path:
        return offline_dirs(self.offline_root)[0] / f"{ticker_filename(ticker)}.parquet"

    def _window_path(self, ticker: str) -> Path:
        return offline_dirs(self.offline_root)[1] / f"{ticker_filename(ticker)}.parquet"

    def stored_daily(self, ticker: str) -> pd.DataFrame | None:
        path = self._daily_path(ticker)
        return pd.read_parquet(path) if path.exists() else None

    def write(self, ticker: str, features: pd.DataFrame, *, source: str) -> dict[str, object]:
        """Store a ticker's feature rows and its latest model window. Returns what was stored.

        Validates everything before touching disk; existing dates absent from `features` are kept.
        Writing the same frame twice leaves the files byte-for-byte unchanged.
        """
        ticker = validate_ticker(ticker)
        rows = model_rows(features)
        window = build_window(features, self.window)  # raises InsufficientHistory with the minimum
        daily = rows[FEATURE_COLUMNS].copy()
        daily.insert(0, "ticker", ticker)
        daily.insert(1, "event_timestamp", _utc_midnight(daily.index))
        daily = daily.reset_index(drop=True)
        stored = self.stored_daily(ticker)
        if stored is not None:
            kept = stored[~stored["event_timestamp"].isin(daily["event_timestamp"])]
            if len(kept):
                daily = pd.concat([kept, daily]).sort_values("event_timestamp").reset_index(drop=True)
        as_of = rows.index[-1]
        window_row = pd.DataFrame(
            {
                "ticker": [ticker],
                "event_timestamp": _utc_midnight(pd.DatetimeIndex([as_of])),
                "window": [window.reshape(-1).tolist()],
                "window_len": [window.shape[0]],
                "n_features": [window.shape[1]],
                "feature_names": [",".join(MODEL_FEATURES)],
                "last_close": [float(rows["close"].iloc[-1])],
                "as_of": [as_of.date().isoformat()],
                "source": [source],
            }
        )
        changed = _write_if_changed(daily, self._daily_path(ticker))
        changed |= _write_if_changed(window_row, self._window_path(ticker))
        return {"rows": len(daily), "as_of": as_of.date().isoformat(), "changed": changed}

    def training_frame(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """Point-in-time features for each stored trading day in [start, end], indexed by date."""
        ticker = validate_ticker(ticker)
        if start is not None and end is not None and pd.Timestamp(start) > pd.Timestamp(end):
            raise InvalidInput(f"inverted date range: start {start} is after end {end}")
        stored = self.stored_daily(ticker)
        if stored is None:
            raise FeaturesMissing(f"no features stored for {ticker}: ingest it first")
        stamps = pd.DatetimeIndex(stored["event_timestamp"])
        lo = pd.Timestamp(start, tz=timezone.utc) if start else stamps.min()
        hi = pd.Timestamp(end, tz=timezone.utc) if end else stamps.max()
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
        empty = frame[MODEL_FEATURES].isna().any(axis=1)
        if empty.any():
            raise FeaturesMissing(
                f"point-in-time join for {ticker} returned {int(empty.sum())} incomplete row(s), first "
                f"{frame.index[empty][0].date()}: ingest it again"
            )
        return frame

    # -- online --------------------------------------------------------------------------------
    def materialize(self, tickers: list[str]) -> None:
        """Push the latest offline rows of these tickers' as-of dates into Redis."""
        self.apply()
        as_ofs = []
        for ticker in tickers:
            path = self._window_path(validate_ticker(ticker))
            if not path.exists():
                raise FeaturesMissing(f"no features stored for {ticker}: ingest it first")
            as_ofs.append(pd.Timestamp(pd.read_parquet(path, columns=["as_of"])["as_of"].iloc[0], tz="UTC"))
        if not as_ofs:
            return
        self.store.materialize(
            start_date=(min(as_ofs) - timedelta(days=1)).to_pydatetime(),
            end_date=(max(as_ofs) + timedelta(days=1)).to_pydatetime(),
            feature_views=[DAILY_VIEW, WINDOW_VIEW],
        )

    def online_window(self, ticker: str, *, now: datetime | None = None) -> OnlineWindow:
        """The model input for a ticker in one online read, refusing rows older than max_age_days."""
        ticker = validate_ticker(ticker)
        self.apply()
        row = self.store.get_online_features(
            features=[f"{WINDOW_VIEW}:{f}" for f in _WINDOW_FIELDS], entity_rows=[{"ticker": ticker}]
        ).to_dict()
        if row["window"][0] is None:
            raise FeaturesMissing(f"no online features for {ticker}: ingest and materialize it first")
        as_of = date.fromisoformat(row["as_of"][0])
        source = row["source"][0] or "unknown"
        if source not in FROZEN_SOURCES:
            today = (now or datetime.now(timezone.utc)).date()
            age = (today - as_of).days
            if age > self.max_age_days:
                raise StaleFeatures(
                    f"online features for {ticker} are from {as_of} ({age} days old, limit "
                    f"{self.max_age_days}): ingest it again"
                )
        names = row["feature_names"][0].split(",")
        shape = (int(row["window_len"][0]), int(row["n_features"][0]))
        if names != MODEL_FEATURES:
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

