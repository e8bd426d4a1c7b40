"""Yahoo Finance through yfinance: the real path. Offline it fails fast with `DataUnavailable`.

`Ticker.history` is used rather than `yf.download` because download swallows every error into a log line
and an empty frame, which cannot tell "offline" from "no such ticker" from "no trading days in range".
With `hide_exceptions` off (a process-wide yfinance setting), history raises instead: curl's network
errors (OSError subclasses), rate limits and "Yahoo is down" mean the source is unavailable; a missing
time zone or no prices at all mean the ticker is unknown. An empty frame that still slips through (what
`yf.download` returns offline) is treated as unavailable too.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ml.data.base import check_range, empty_frame, normalize_frame
from ml.errors import DataUnavailable, UnknownTicker
from ml.tickers import validate_ticker

_ACTION_COLUMNS = ("Dividends", "Stock Splits", "Capital Gains")


class YFinanceSource:
    name = "yfinance"

    def __init__(self, cache_dir: Path, *, timeout_s: float = 10.0) -> None:
        import yfinance as yf

        cache_dir.mkdir(parents=True, exist_ok=True)
        # yfinance keeps its time-zone and cookie databases under ~ by default; keep them in our var dir.
        yf.set_tz_cache_location(str(cache_dir))
        yf.config.debug.hide_exceptions = False
        self._yf = yf
        self.timeout_s = timeout_s

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """Adjusted daily bars; `attrs["adjustment_events"]` lists the dividend and split dates fetched.

        With auto_adjust every such event rescales all earlier prices, which the cache needs to know.
        """
        from yfinance.exceptions import YFException, YFPricesMissingError, YFTickerMissingError

        ticker = validate_ticker(ticker)
        check_range(start, end)
        kwargs: dict[str, object] = {"auto_adjust": True, "actions": True, "timeout": self.timeout_s}
        if start is None:
            kwargs["period"] = "max"
        else:
            kwargs["start"] = start.isoformat()
        if end is not None:
            kwargs["end"] = (end + timedelta(days=1)).isoformat()  # yfinance's end is exclusive
        try:
            raw = self._yf.Ticker(ticker).history(**kwargs)
        except YFPricesMissingError as exc:
            if start is not None:
                return empty_frame()  # a known ticker, no trading day in the range (weekend, holiday)
            raise UnknownTicker(f"yfinance: unknown ticker {ticker}", detail=str(exc)) from exc
        except YFTickerMissingError as exc:
            raise UnknownTicker(f"yfinance: unknown ticker {ticker}", detail=str(exc)) from exc
        except (OSError, YFException) as exc:  # network errors, rate limits, Yahoo down
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                raise UnknownTicker(f"yfinance: unknown ticker {ticker} (HTTP 404)") from exc
            # What curl or Yahoo said (addresses, proxies, response bodies) is for the log only.
            raise DataUnavailable(
                f"yfinance: cannot fetch {ticker} from Yahoo Finance (offline or unreachable)",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
        if raw is None or raw.empty:
            raise DataUnavailable(f"yfinance: no data for {ticker} (Yahoo Finance returned an empty frame)")
        present = [c for c in _ACTION_COLUMNS if c in raw.columns]
        events = raw.index[(raw[present].fillna(0) != 0).any(axis=1)] if present else raw.index[:0]
        out = normalize_frame(raw.drop(columns=present), source=self.name, ticker=ticker)
        out.attrs["adjustment_events"] = [d.date().isoformat() for d in pd.DatetimeIndex(events)]
        return out
