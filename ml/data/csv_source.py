"""A directory of `TICKER.csv` files in yfinance's column layout (Date, Open, High, Low, Close, Volume)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from ml.data.base import clip, normalize_frame
from ml.errors import InvalidInput, UnknownTicker
from ml.tickers import validate_ticker


class CsvSource:
    name = "csv"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        path = self.directory / f"{ticker}.csv"
        if not path.is_file():
            raise UnknownTicker(f"no file {path.name} for {ticker} in csv source {self.directory}")
        try:
            raw = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise InvalidInput(f"csv source: {path.name} is not readable CSV ({exc})") from exc
        date_column = next((c for c in raw.columns if str(c).strip().lower() in {"date", "datetime"}), None)
        if date_column is None:
            raise InvalidInput(f"csv source: {path.name} lacks a Date column")
        raw = raw.set_index(date_column)
        if "Adj Close" in raw.columns and "Close" in raw.columns:
            raw = raw.drop(columns=["Adj Close"])
        frame = normalize_frame(raw, source=f"csv:{self.directory}", ticker=ticker)
        return clip(frame, start, end)
