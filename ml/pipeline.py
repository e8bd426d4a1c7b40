"""Ingest entry point: fetch -> features -> offline write -> materialize (idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ml.data.base import DataSource
from ml.feature_store import FeatureStore
from ml.features import compute_features
from ml.tickers import validate_ticker

log = logging.getLogger(__name__)


def ingest(
    tickers: list[str],
    *,
    source: DataSource,
    store: FeatureStore,
    on_ticker: Callable[[str, dict[str, object]], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Returns per ticker: rows stored, as-of date, data source and whether anything changed."""
    valid = list(dict.fromkeys(validate_ticker(t) for t in tickers))
    results: dict[str, dict[str, object]] = {}
    for ticker in valid:
        history = source.fetch(ticker)
        features = compute_features(history)
        origin = str(history.attrs.get("source", source.name))
        stored = store.write(ticker, features, source=origin)
        results[ticker] = {**stored, "source": origin, "close_only": bool(history.attrs.get("close_only"))}
        if on_ticker:
            on_ticker(ticker, results[ticker])
    store.materialize(valid)
    log.info("ingested %s", {t: r["rows"] for t, r in results.items()})
    return results
