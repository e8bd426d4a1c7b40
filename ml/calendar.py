"""NYSE trading days (exchange_calendars XNYS): forecasts are dated by session, skipping holidays."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar


@lru_cache(maxsize=8)
def _calendar(year: int) -> ExchangeCalendar:
    import exchange_calendars as xcals

    # One calendar per as-of year, spanning into the next year so a late-December forecast finds its days;
    # building one costs ~0.3 s, so serving reuses it.
    return xcals.get_calendar("XNYS", start=f"{year}-01-01", end=f"{year + 1}-12-31")


def next_sessions(as_of: date, n: int) -> list[date]:
    """The n NYSE sessions strictly after `as_of`."""
    calendar = _calendar(as_of.year)
    after = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    sessions = calendar.sessions_in_range(after, after + pd.Timedelta(days=7 * n + 14))
    return [ts.date() for ts in sessions[:n]]
