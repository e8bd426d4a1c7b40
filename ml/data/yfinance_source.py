"""Yahoo Finance through yfinance: the real path. Offline it fails fast with `DataUnavailable`."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ml.data.base import empty_frame, normalize_frame
from ml.errors import DataUnavailable, UnknownTicker
from ml.tickers import validate_ticker

_NETWORK_MARKERS = ("dnserror", "resolve host", "connect", "timed out", "timeout", "curl", "network")
_UNKNOWN_MARKERS = ("delisted", "no timezone found", "no data found", "symbol may be", "invalid")


class YFinanceSource:
    name = "yfinance"

    def __init__(self, cache_dir: Path) -> None:
        import yfinance as yf
        import yfinance.shared

        cache_dir.mkdir(parents=True, exist_ok=True)
        # yfinance caches time zones and cookies under ~ by default; keep them in our var dir.
        yf.set_tz_cache_location(str(cache_dir))
        self._yf = yf
        self._errors = yfinance.shared._ERRORS

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        yf = self._yf
        kwargs: dict[str, object] = {"auto_adjust": True, "progress": False, "threads": False}
        if start is None:
            kwargs["period"] = "max"
        else:
            kwargs["start"] = pd.Timestamp(start).strftime("%Y-%m-%d")
            # yfinance's end is exclusive
            kwargs["end"] = (pd.Timestamp(end or date.today()) + timedelta(days=1)).strftime("%Y-%m-%d")
        try:
            raw = yf.download(ticker, multi_level_index=False, **kwargs)
        except OSError as exc:
            raise DataUnavailable(f"yfinance: cannot reach Yahoo Finance for {ticker} ({exc})") from exc
        if raw is None or raw.empty:
            error = str(self._errors.get(ticker, "")).lower()
            offline = any(m in error for m in _NETWORK_MARKERS)
            if not offline and any(m in error for m in _UNKNOWN_MARKERS):
                raise UnknownTicker(f"yfinance: unknown ticker {ticker} ({error[:120]})")
            if start is not None and not error:
                return empty_frame()
            raise DataUnavailable(
                f"yfinance: no data for {ticker} (offline or Yahoo Finance unreachable: {error[:160] or 'empty'})"
            )
        return normalize_frame(raw, source=self.name, ticker=ticker)
