"""Market data sources behind one interface: `fetch(ticker, start, end) -> DataFrame`."""

from ml.data.base import COLUMNS, DataSource, empty_frame, normalize_frame
from ml.data.factory import make_source

__all__ = ["COLUMNS", "DataSource", "empty_frame", "make_source", "normalize_frame"]
