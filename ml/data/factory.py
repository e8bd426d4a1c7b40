"""Builds the source that `STOCKQ_DATA_SOURCE` names: `auto` | `yfinance` | `bundled` | `csv:<dir>`."""

from __future__ import annotations

from pathlib import Path

from ml.data.auto import AutoSource
from ml.data.base import DataSource
from ml.data.bundled import BundledSource
from ml.data.cache import CachedSource
from ml.data.csv_source import CsvSource
from ml.data.yfinance_source import YFinanceSource
from ml.errors import InvalidInput


def make_source(spec: str, var_dir: Path, *, cached: bool = True) -> DataSource:
    """Each concrete source gets its own parquet cache, so `auto` never mixes two sources' rows."""

    def wrap(source: DataSource) -> DataSource:
        return CachedSource(source, var_dir / "raw" / source.name) if cached else source

    spec = spec.strip()
    if spec == "bundled":
        return wrap(BundledSource())
    if spec == "yfinance":
        return wrap(YFinanceSource(var_dir / "yfinance"))
    if spec == "auto":
        return AutoSource(wrap(YFinanceSource(var_dir / "yfinance")), wrap(BundledSource()))
    if spec.startswith("csv:") and len(spec) > 4:
        return wrap(CsvSource(Path(spec[4:])))
    raise InvalidInput(f"unknown data source {spec!r}: use auto, yfinance, bundled or csv:<dir>")
