"""`auto`: the real source first, a local history when the network is not there.

Offline, a ticker whose yfinance history is already cached is served from that cache, stale as it may be:
its rows keep their `yfinance` origin, so the feature store's staleness check still reports the age. Only a
ticker never fetched online falls back to the bundled (frozen, 1990-2022) history. Replacing real recent
rows with the bundled ones would pass them off as fresh.
"""

from __future__ import annotations

import logging
import time
from datetime import date

import pandas as pd

from ml.data.base import DataSource, check_range
from ml.data.cache import CachedSource
from ml.errors import DataUnavailable
from ml.tickers import validate_ticker

log = logging.getLogger(__name__)


class AutoSource:
    name = "auto"

    def __init__(self, online: DataSource, offline: DataSource, *, retry_after_s: float = 300.0) -> None:
        self.online = online
        self.offline = offline
        self.retry_after_s = retry_after_s
        self._offline_since: float | None = None

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        check_range(start, end)
        # One offline process must not pay the failed round trip per ticker, nor stay offline forever.
        if self._offline_since is None or time.monotonic() - self._offline_since >= self.retry_after_s:
            try:
                frame = self.online.fetch(ticker, start, end)
            except DataUnavailable as exc:
                self._offline_since = time.monotonic()
                log.warning(
                    "%s; falling back to cached or %s history for %.0f s",
                    exc.message,
                    self.offline.name,
                    self.retry_after_s,
                )
            else:
                self._offline_since = None
                return frame
        if isinstance(self.online, CachedSource):
            stale = self.online.stored(ticker, start, end)
            if stale is not None and len(stale):
                log.info(
                    "%s: offline, using cached %s history through %s",
                    ticker,
                    self.online.name,
                    stale.index[-1].date(),
                )
                return stale
        log.info("%s: offline, using the %s source", ticker, self.offline.name)
        return self.offline.fetch(ticker, start, end)
