"""Real daily history shipped inside PyPI packages, for machines without network access.

skfolio ships closes (1990-01-02..2022-12-28) for ^GSPC and 20 large caps; arch ships ^GSPC OHLCV for
1999-2018. Where only closes exist the other columns stay NaN and `attrs["close_only"]` says so.

The history is frozen (it ends 2022-12-28 and never grows), so the feature store exempts it from the
staleness check: its rows are as fresh as they will ever be.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import pandas as pd

from ml.data.base import check_range, clip, normalize_frame
from ml.data.listing import bundled_tickers
from ml.errors import UnknownTicker
from ml.tickers import INDEX_TICKER, validate_ticker


@cache
def _closes() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    stocks = load_sp500_dataset()
    index = load_sp500_index().rename(columns={"SP500": INDEX_TICKER})
    return stocks.join(index, how="outer").astype("float64")


@cache
def _gspc_ohlcv() -> pd.DataFrame:
    import arch.data.sp500

    return arch.data.sp500.load().drop(columns=["Adj Close"])


class BundledSource:
    name = "bundled"

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        check_range(start, end)
        closes = _closes()
        if ticker not in closes.columns:
            raise UnknownTicker(
                f"{ticker} is not in the bundled data set (offline history exists for: "
                f"{', '.join(bundled_tickers())})"
            )
        frame = pd.DataFrame({"close": closes[ticker]})
        is_index = ticker == INDEX_TICKER
        if is_index:
            # arch's OHLCV covers 1999-2018 only; its closes equal skfolio's to 1e-4 on shared dates.
            ohlcv = _gspc_ohlcv().rename(columns=str.lower)[["open", "high", "low", "volume"]]
            frame = frame.join(ohlcv, how="left")
        out = normalize_frame(frame, source=self.name, ticker=ticker, close_only=not is_index)
        if is_index:
            out.attrs["ohlcv_range"] = "1999-01-04..2018-12-31"
        return clip(out, start, end)
