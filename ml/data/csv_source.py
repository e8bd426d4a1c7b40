"""A directory of `TICKER.csv` files in yfinance's column layout (Date, Open, High, Low, Close, Volume).

Both shapes yfinance writes are read: the flat one (`multi_level_index=False`, or `Ticker.history`) and
the default `yf.download(...).to_csv()` one, whose second and third lines are `Ticker,...` and `Date,,,`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from ml.data.base import check_range, clip, normalize_frame
from ml.errors import InvalidInput, UnknownTicker
from ml.tickers import validate_ticker


def _read(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path)
        if len(raw) >= 2 and str(raw.columns[0]) == "Price" and str(raw.iloc[0, 0]) == "Ticker":
            raw = pd.read_csv(path, skiprows=[1, 2]).rename(columns={"Price": "Date"})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InvalidInput(f"csv source: {path.name} is not readable CSV", detail=str(exc)) from exc
    return raw


class CsvSource:
    name = "csv"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise InvalidInput("csv source: its path is not a directory", detail=str(self.directory))

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        check_range(start, end)
        path = self.directory / f"{ticker}.csv"
        if not path.is_file():
            # The directory is the server's business: the client learns which file is missing.
            raise UnknownTicker(f"no file {path.name} for {ticker} in the csv source")
        raw = _read(path)
        date_column = next((c for c in raw.columns if str(c).strip().lower() in {"date", "datetime"}), None)
        if date_column is None:
            raise InvalidInput(f"csv source: {path.name} lacks a Date column")
        raw = raw.set_index(date_column)
        if "Adj Close" in raw.columns and "Close" in raw.columns:
            raw = raw.drop(columns=["Adj Close"])
        frame = normalize_frame(raw, source=f"csv:{self.directory}", ticker=ticker)
        return clip(frame, start, end)
