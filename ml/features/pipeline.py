"""Ingest entry point: fetch -> features -> offline write -> materialize (idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ml.data.base import DataSource
from ml.features.store import FeatureStore, PreparedWrite
from ml.features.technical import compute_features
from ml.tickers import validate_ticker

log = logging.getLogger(__name__)


def ingest(
    tickers: list[str],
    *,
    source: DataSource,
    store: FeatureStore,
    on_ticker: Callable[[str, dict[str, object]], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Returns per ticker: rows stored, as-of date, data source and whether anything changed.

    All or nothing: every ticker is fetched and validated before the first write, so one bad ticker in a
    batch leaves every stored feature file as it was. Running it twice changes nothing. `on_ticker` sees
    each ticker as soon as it is fetched and validated (progress), without the final `changed` flag.
    """
    valid = list(dict.fromkeys(validate_ticker(t) for t in tickers))
    batch: list[PreparedWrite] = []
    info: dict[str, dict[str, object]] = {}
    for ticker in valid:
        history = source.fetch(ticker)
        origin = str(history.attrs.get("source", source.name))
        prepared = store.prepare(ticker, compute_features(history), source=origin)
        batch.append(prepared)
        info[ticker] = {
            "rows": len(prepared.daily),
            "as_of": prepared.as_of.isoformat(),
            "source": origin,
            "close_only": bool(history.attrs.get("close_only")),
        }
        if on_ticker:
            on_ticker(ticker, info[ticker])
    results = {ticker: {**info[ticker], **stored} for ticker, stored in store.commit(batch).items()}
    store.materialize(valid)
    log.info("ingested %s", {t: (r["rows"], r["as_of"]) for t, r in results.items()})
    return results
