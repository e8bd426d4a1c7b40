"""Market data sources behind one interface: `fetch(ticker, start, end) -> DataFrame`.

The names below load on first use: a light module of this package (listing.py, which the API imports to
check tickers) must not pull pandas in with the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.data.base import COLUMNS, DataSource, empty_frame, normalize_frame
    from ml.data.factory import make_source

_HOMES = {"COLUMNS": "base", "DataSource": "base", "empty_frame": "base", "normalize_frame": "base",
          "make_source": "factory"}  # fmt: skip
__all__ = ["COLUMNS", "DataSource", "empty_frame", "make_source", "normalize_frame"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
