"""Feast object definitions, shared by `feature_repo/` (for `feast apply`) and `ml.features.store`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String

from ml.features.technical import FEATURE_COLUMNS

DAILY_VIEW = "daily_features"
WINDOW_VIEW = "model_window"
FEATURE_TTL = timedelta(days=10)

ticker_entity = Entity(name="ticker", join_keys=["ticker"], value_type=ValueType.STRING)


def offline_dirs(offline_root: Path) -> tuple[Path, Path]:
    return offline_root / DAILY_VIEW, offline_root / WINDOW_VIEW


def definitions(offline_root: Path) -> list[Entity | FeatureView]:
    """Entity and feature views over one parquet file per ticker (rewritten atomically per ingest)."""
    daily_dir, window_dir = offline_dirs(offline_root)
    daily_source = FileSource(
        name="daily_features_source",
        path=str(daily_dir / "*.parquet"),
        timestamp_field="event_timestamp",
    )
    window_source = FileSource(
        name="model_window_source",
        path=str(window_dir / "*.parquet"),
        timestamp_field="event_timestamp",
    )
    # The TTL bounds the point-in-time join: without it the ibis/duckdb store joins every entity row
    # with every earlier feature row (O(n^2): 22 s for one ticker's history, against under 1 s with it).
    # 10 days spans the longest market closure; training_frame checks that no requested row came back
    # empty, so the bound can never silently drop data. Serving staleness is enforced separately.
    daily = FeatureView(
        name=DAILY_VIEW,
        entities=[ticker_entity],
        ttl=FEATURE_TTL,
        schema=[Field(name=n, dtype=Float64) for n in FEATURE_COLUMNS],
        source=daily_source,
        online=True,
    )
    # `window` holds the last rows of ml.features.technical.WINDOW_COLUMNS flattened, named in order by
    # `feature_names` (comma-separated), so a reader selects its inputs by name.
    window = FeatureView(
        name=WINDOW_VIEW,
        entities=[ticker_entity],
        ttl=FEATURE_TTL,
        schema=[
            Field(name="window", dtype=Array(Float64)),
            Field(name="window_len", dtype=Int64),
            Field(name="n_features", dtype=Int64),
            Field(name="feature_names", dtype=String),
            Field(name="last_close", dtype=Float64),
            Field(name="as_of", dtype=String),
            Field(name="source", dtype=String),
        ],
        source=window_source,
        online=True,
    )
    return [ticker_entity, daily, window]
