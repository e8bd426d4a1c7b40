"""`auto`: the real source first, the bundled history when the network is not there."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd

from ml.data.base import DataSource
from ml.errors import DataUnavailable

log = logging.getLogger(__name__)


class AutoSource:
    name = "auto"

    def __init__(self, online: DataSource, offline: DataSource) -> None:
        self.online = online
        self.offline = offline
        self._offline_mode = False

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        if not self._offline_mode:
            try:
                return self.online.fetch(ticker, start, end)
            except DataUnavailable as exc:
                # Remember it so one offline process does not pay the failed round trip per ticker.
                self._offline_mode = True
                log.warning("%s; falling back to the %s source", exc.message, self.offline.name)
        return self.offline.fetch(ticker, start, end)
