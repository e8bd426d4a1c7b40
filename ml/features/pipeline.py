"""Ingest entry point: fetch -> features -> offline write -> materialize (idempotent).

Every ticker's volatility inputs read the market (^GSPC), so its history is fetched from the same source
with any batch (once; from the batch itself when ^GSPC is in it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ml.data.base import DataSource
from ml.features.store import FeatureStore, PreparedWrite
from ml.features.technical import compute_features
from ml.tickers import INDEX_TICKER, validate_ticker

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
    # The market first: every other ticker's features need it.
    order = sorted(valid, key=lambda t: t != INDEX_TICKER)
    market = None if INDEX_TICKER in valid or not valid else source.fetch(INDEX_TICKER)["close"]
    for ticker in order:
        history = source.fetch(ticker)
        if ticker == INDEX_TICKER:
            market = history["close"]
        origin = str(history.attrs.get("source", source.name))
        features = compute_features(history, None if ticker == INDEX_TICKER else market)
        prepared = store.prepare(ticker, features, source=origin)
        batch.append(prepared)
        info[ticker] = {
            "rows": len(prepared.daily),
            "as_of": prepared.as_of.isoformat(),
            "source": origin,
            "close_only": bool(history.attrs.get("close_only")),
        }
        if on_ticker:
            on_ticker(ticker, info[ticker])
    committed = store.commit(batch)
    results = {ticker: {**info[ticker], **committed[ticker]} for ticker in valid}
    store.materialize(valid)
    log.info("ingested %s", {t: (r["rows"], r["as_of"]) for t, r in results.items()})
    return results
