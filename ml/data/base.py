"""The data-source contract and the normalisation every source's output goes through."""

from __future__ import annotations

from datetime import date
from typing import Protocol

import numpy as np
import pandas as pd

from ml.errors import InvalidInput

COLUMNS = ["open", "high", "low", "close", "volume"]


class DataSource(Protocol):
    name: str

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """Daily history for [start, end] inclusive: indexed by trading date, COLUMNS as float64."""
        ...


def check_range(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and pd.Timestamp(start) > pd.Timestamp(end):
        raise InvalidInput(f"inverted date range: start {start} is after end {end}")


def empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    frame.index = pd.DatetimeIndex([], name="date")
    return frame


def _trading_dates(raw: pd.Index, where: str) -> pd.DatetimeIndex:
    try:
        index = pd.DatetimeIndex(pd.to_datetime(raw))
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{where} has unparseable date(s)", detail=str(exc)) from exc
    if index.tz is not None:
        # A bar's date is the exchange's local date: converting to UTC would move Asian sessions a day back.
        index = index.tz_localize(None)
    if index.hasnans:
        raise InvalidInput(f"{where} has rows without a date")
    # normalize() infers a freq; a history's index carries none (the parquet cache would not keep it).
    return pd.DatetimeIndex(index.normalize(), freq=None, name="date")


def normalize_frame(raw: pd.DataFrame, *, source: str, ticker: str, close_only: bool = False) -> pd.DataFrame:
    """Lower-case columns, float64, tz-naive midnight dates, sorted, one row per date.

    Duplicate dates are an error rather than silently resolved: which row is right is not ours to guess.
    Rows without a close (holidays in a joined calendar) are dropped; a close that is not a positive
    finite number is an error, since every feature divides by it or takes its log.
    """
    # The source's kind only: `csv:<directory>` names a server path, which is no client's business.
    where = f"{source.partition(':')[0]}: data for {ticker}"
    frame = raw.copy()
    frame.columns = [str(c).strip().lower().replace(" ", "_") for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns and not (close_only and c != "close")]
    if missing:
        raise InvalidInput(f"{where} lacks column(s) {', '.join(missing)}")
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    frame.index = _trading_dates(frame.index, where)
    try:
        frame = frame[COLUMNS].apply(pd.to_numeric).astype("float64")
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{where} has non-numeric values", detail=str(exc)) from exc
    dupes = frame.index[frame.index.duplicated()]
    if len(dupes):
        raise InvalidInput(f"{where} has duplicate date(s) {', '.join(str(d.date()) for d in dupes[:3])}")
    frame = frame.sort_index()
    frame = frame[frame["close"].notna()]
    bad = frame.index[~(np.isfinite(frame["close"]) & (frame["close"] > 0))]
    if len(bad):
        raise InvalidInput(f"{where} has a close that is not a positive number on {bad[0].date()}")
    frame.attrs = {"source": source, "ticker": ticker, "close_only": close_only}
    return frame


def clip(frame: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    attrs = dict(frame.attrs)
    out = frame.loc[pd.Timestamp(start) if start else None : pd.Timestamp(end) if end else None]
    out.attrs = attrs
    return out
