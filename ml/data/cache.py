"""Raw history cached as parquet per ticker, refreshed incrementally (only missing dates are fetched)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ml.data.base import DataSource, check_range, clip
from ml.tickers import ticker_filename, validate_ticker


def _atomic_write(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class CachedSource:
    """Wraps a source. Stored rows are never rewritten by a refresh: new dates are appended."""

    def __init__(self, inner: DataSource, directory: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fetches: list[tuple[str, date | None, date | None]] = []

    def _paths(self, ticker: str) -> tuple[Path, Path]:
        stem = ticker_filename(ticker)
        return self.directory / f"{stem}.parquet", self.directory / f"{stem}.json"

    def _load(self, ticker: str) -> tuple[pd.DataFrame | None, dict]:
        data_path, meta_path = self._paths(ticker)
        if not data_path.exists() or not meta_path.exists():
            return None, {}
        meta = json.loads(meta_path.read_text())
        if meta.get("source") != self.inner.name:
            return None, {}
        frame = pd.read_parquet(data_path)
        frame.attrs = meta.get("attrs", {})
        return frame, meta

    def _fetch(self, ticker: str, start: date | None, end: date | None) -> pd.DataFrame:
        self.fetches.append((ticker, start, end))
        return self.inner.fetch(ticker, start, end)

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        ticker = validate_ticker(ticker)
        check_range(start, end)
        today = date.today()
        cached, meta = self._load(ticker)
        if cached is None:
            frame = self._fetch(ticker, start, None)
            covered_from = start.isoformat() if start else None
        else:
            frame = cached
            covered_from = meta.get("covered_from")
            pieces = [cached]
            if start is not None and covered_from is not None and start < date.fromisoformat(covered_from):
                pieces.append(self._fetch(ticker, start, date.fromisoformat(covered_from) - timedelta(days=1)))
                covered_from = start.isoformat()
            elif start is None and covered_from is not None:
                pieces.append(self._fetch(ticker, None, date.fromisoformat(covered_from) - timedelta(days=1)))
                covered_from = None
            checked = date.fromisoformat(meta["checked_through"])
            if checked < min(end or today, today):
                pieces.append(self._fetch(ticker, checked + timedelta(days=1), None))
            new = [p for p in pieces[1:] if len(p)]
            if new:
                merged = pd.concat([cached, *new])
                frame = merged[~merged.index.duplicated(keep="first")].sort_index()
                frame.attrs = cached.attrs
        if cached is None or frame is not cached or meta.get("checked_through") != today.isoformat():
            self._store(ticker, frame, covered_from, today)
        return clip(frame, start, end)

    def _store(self, ticker: str, frame: pd.DataFrame, covered_from: str | None, checked: date) -> None:
        data_path, meta_path = self._paths(ticker)
        attrs = dict(frame.attrs)
        _atomic_write(data_path, lambda tmp: frame.to_parquet(tmp))
        meta = {
            "source": self.inner.name,
            "covered_from": covered_from,
            "checked_through": checked.isoformat(),
            "attrs": attrs,
        }
        _atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
