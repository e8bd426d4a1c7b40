"""Builds the source that `STOCKQ_DATA_SOURCE` names: `auto` | `yfinance` | `bundled` | `csv:<dir>`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ml.data.auto import AutoSource
from ml.data.base import DataSource
from ml.data.bundled import BundledSource
from ml.data.cache import CachedSource
from ml.data.csv_source import CsvSource
from ml.data.yfinance_source import YFinanceSource
from ml.errors import InvalidInput


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

    spec = spec.strip()
    if spec == "bundled":
        return wrap(BundledSource())
    if spec == "yfinance":
        return wrap(YFinanceSource(var_dir / "yfinance"))
    if spec == "auto":
        return AutoSource(wrap(YFinanceSource(var_dir / "yfinance")), wrap(BundledSource()))
    if spec.startswith("csv:") and len(spec) > 4:
        source = CsvSource(Path(spec[4:]))
        return wrap(source, f"csv:{source.directory}")
    raise InvalidInput(f"unknown data source {spec!r}: use auto, yfinance, bundled or csv:<dir>")
