"""Raw history cached as parquet per ticker, refreshed incrementally (only missing dates are fetched).

A ticker's cache holds the source's rows for [covered_from, checked_through] (covered_from None: from the
source's first date). A refresh asks the source only for dates before covered_from or after the last
cached row; the latter also re-asks for days the source had not published when last checked. Two rules
keep the cache true to the source, since stored rows are never rewritten one by one:

- Only final bars are cached: checked_through never passes yesterday (UTC), because today's bar may still
  be forming and would otherwise stay frozen mid-session. Every exchange's day D is over by D+1 00:00 UTC.
- A dividend or split among the new dates (`attrs["adjustment_events"]`, from yfinance with auto_adjust)
  rescales every earlier adjusted price, so the whole span is fetched again rather than appending new
  bars to a history on the old basis (a split would otherwise look like a crash).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from ml.data.atomic import atomic_write
from ml.data.base import DataSource, check_range, clip, empty_frame
from ml.tickers import ticker_filename, validate_ticker

_DAY = timedelta(days=1)


def last_final_day() -> date:
    return datetime.now(UTC).date() - _DAY


class CachedSource:
    """Wraps a source; `fetches` records every (ticker, start, end) actually asked of it."""

    def __init__(self, inner: DataSource, directory: Path, *, identity: str | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        # What the stored rows came from; a cache written by another source is ignored, not mixed in.
        self.identity = identity or inner.name
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fetches: list[tuple[str, date | None, date | None]] = []

    def _paths(self, ticker: str) -> tuple[Path, Path]:
        stem = ticker_filename(ticker)
        return self.directory / f"{stem}.parquet", self.directory / f"{stem}.json"

    def _load(self, ticker: str) -> tuple[pd.DataFrame | None, dict[str, Any]]:
        data_path, meta_path = self._paths(ticker)
        if not data_path.exists() or not meta_path.exists():
            return None, {}
        meta = json.loads(meta_path.read_text())
        if meta.get("source") != self.identity:
            return None, {}
        frame = pd.read_parquet(data_path)
        frame.attrs = meta.get("attrs", {})
        return frame, meta

    def _fetch(self, ticker: str, start: date | None, end: date) -> pd.DataFrame:
        self.fetches.append((ticker, start, end))
        # Clipped so that a source returning more than asked cannot put rows outside the covered span.
        return clip(self.inner.fetch(ticker, start, end), start, end)

    def stored(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame | None:
        """The cached rows in [start, end] without asking the source (None when nothing is cached)."""
        ticker = validate_ticker(ticker)
        check_range(start, end)
        cached, _ = self._load(ticker)
        return None if cached is None else clip(cached, start, end)

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        check_range(start, end)
        upto = min(end, last_final_day()) if end else last_final_day()
        if start is not None and start > upto:
            return empty_frame()  # no final bar in the range yet
        with FileLock(str(self.directory / f".{ticker_filename(ticker)}.lock")):
            cached, meta = self._load(ticker)
            if cached is None:
                frame = self._fetch(ticker, start, upto)
                self._store(ticker, frame, start, upto, rows_changed=True)
                return clip(frame, start, end)
            covered_from = date.fromisoformat(meta["covered_from"]) if meta["covered_from"] else None
            checked = date.fromisoformat(meta["checked_through"])
            back = covered_from is not None and (start is None or start < covered_from)
            if checked >= upto and not back:
                return clip(cached, start, end)
            span_from = start if back else covered_from
            pieces = [cached]
            if checked < upto:
                resume = cached.index[-1].date() + _DAY if len(cached) else covered_from
                recent = self._fetch(ticker, resume, upto)
                if recent.attrs.get("adjustment_events"):
                    pieces, back = [self._fetch(ticker, span_from, upto)], False
                else:
                    pieces.append(recent)
            if back and covered_from is not None:
                pieces.insert(0, self._fetch(ticker, start, covered_from - _DAY))
            pieces = [p for p in pieces if len(p)] or [cached]
            frame = pd.concat(pieces).sort_index() if len(pieces) > 1 else pieces[0]
            frame.attrs = cached.attrs
            self._store(ticker, frame, span_from, max(checked, upto), rows_changed=frame is not cached)
        return clip(frame, start, end)

    def _store(
        self,
        ticker: str,
        frame: pd.DataFrame,
        covered_from: date | None,
        checked: date,
        *,
        rows_changed: bool,
    ) -> None:
        data_path, meta_path = self._paths(ticker)
        attrs = {k: v for k, v in frame.attrs.items() if k != "adjustment_events"}
        if rows_changed:
            buffer = io.BytesIO()
            frame.to_parquet(buffer)
            atomic_write(data_path, buffer.getvalue())
        meta = {
            "source": self.identity,
            "covered_from": covered_from.isoformat() if covered_from else None,
            "checked_through": checked.isoformat(),
            "attrs": attrs,
        }
        atomic_write(meta_path, json.dumps(meta).encode())
