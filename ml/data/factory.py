"""Builds the source that `STOCKQ_DATA_SOURCE` names: `auto` | `yfinance` | `bundled` | `csv:<dir>`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ml.data.auto import AutoSource
from ml.data.base import DataSource
from ml.data.bundled import BundledSource
from ml.data.cache import CachedSource
from ml.data.csv_source import CsvSource
from ml.data.listing import parse_spec
from ml.data.yfinance_source import YFinanceSource


def make_source(spec: str, var_dir: Path, *, cached: bool = True) -> DataSource:
    """Each concrete source gets its own parquet cache, so `auto` never mixes two sources' rows.

    A csv source's cache is keyed by its directory too: two directories hold two different histories.
    """
    var_dir = Path(var_dir)

    def wrap(source: DataSource, identity: str | None = None) -> DataSource:
        if not cached:
            return source
        folder = source.name
        if identity:
            folder += "-" + hashlib.sha256(identity.encode()).hexdigest()[:12]
        return CachedSource(source, var_dir / "raw" / folder, identity=identity)

    kind, argument = parse_spec(spec)
    if kind == "bundled":
        return wrap(BundledSource())
    if kind == "yfinance":
        return wrap(YFinanceSource(var_dir / "yfinance"))
    if kind == "auto":
        return AutoSource(wrap(YFinanceSource(var_dir / "yfinance")), wrap(BundledSource()))
    source = CsvSource(Path(argument))
    return wrap(source, f"csv:{source.directory}")
