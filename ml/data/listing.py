"""Which tickers a data source can serve, without building the source or reading any history.

The API checks every submitted ticker against this list and offers it as you type, so it must be cheap and
must not pull pandas or yfinance into the API process: the bundled list is read from the header lines of
the files skfolio ships, a csv source's from its directory. A source that cannot list what it serves
(yfinance answers for any ticker Yahoo knows) says so with `complete=False`: nothing is refused then.
"""

from __future__ import annotations

import difflib
import gzip
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ml.errors import InvalidInput, InvalidTicker
from ml.tickers import INDEX_TICKER, validate_ticker

SOURCE_KINDS = ("auto", "yfinance", "bundled", "csv")
MAX_SUGGESTIONS = 5


@dataclass(frozen=True)
class Listing:
    source: str  # the source's kind (never a csv source's server path)
    tickers: tuple[str, ...]  # sorted, validated (upper-case) tickers
    complete: bool  # every ticker the source can serve is listed

    def unknown(self, tickers: list[str]) -> list[str]:
        """The validated `tickers` this source cannot serve (none when it cannot list)."""
        if not self.complete:
            return []
        known = set(self.tickers)
        return [t for t in tickers if t not in known]

    def suggestions(self, ticker: str, n: int = MAX_SUGGESTIONS) -> list[str]:
        """Close matches of `ticker` among the listed ones, best first (difflib's ratio, upper-cased)."""
        return difflib.get_close_matches(ticker.upper(), self.tickers, n=n)


def parse_spec(spec: str) -> tuple[str, str]:
    """STOCKQ_DATA_SOURCE as (kind, argument): `csv:<dir>` -> ("csv", dir); the others have no argument."""
    spec = spec.strip()
    kind, sep, argument = spec.partition(":")
    if (kind == "csv" and sep and argument) or (spec in SOURCE_KINDS and spec != "csv"):
        return kind, argument
    raise InvalidInput(f"unknown data source {spec!r}: use auto, yfinance, bundled or csv:<dir>")


def _skfolio_header(filename: str) -> list[str]:
    # find_spec locates the package without importing it (skfolio's import pulls scikit-learn).
    spec = importlib.util.find_spec("skfolio")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("bundled source: the skfolio package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / filename
    with gzip.open(path, "rt") as fh:
        return fh.readline().strip().split(",")[1:]  # the first column is the date


@cache
def bundled_tickers() -> tuple[str, ...]:
    """The bundled history's tickers: skfolio's large caps and the index (ml/data/bundled.py)."""
    return tuple(sorted({*_skfolio_header("sp500_dataset.csv.gz"), INDEX_TICKER}))


def csv_tickers(directory: Path) -> tuple[str, ...]:
    """`TICKER.csv` files present, as CsvSource looks them up (a file it would never open is left out)."""
    found = []
    for path in directory.glob("*.csv"):
        try:
            ticker = validate_ticker(path.stem)
        except InvalidTicker:
            continue
        if ticker == path.stem:
            found.append(ticker)
    return tuple(sorted(found))


def listing(spec: str) -> Listing:
    """What the source STOCKQ_DATA_SOURCE names can serve. `auto` serves yfinance's tickers, or offline the
    bundled ones: it lists the bundled ones and cannot be complete."""
    kind, argument = parse_spec(spec)
    if kind == "bundled":
        return Listing(kind, bundled_tickers(), complete=True)
    if kind == "auto":
        return Listing(kind, bundled_tickers(), complete=False)
    if kind == "csv":
        directory = Path(argument).expanduser()
        if not directory.is_dir():  # the workers report it (CsvSource): no list to check against
            return Listing(kind, (), complete=False)
        return Listing(kind, csv_tickers(directory), complete=True)
    return Listing(kind, (), complete=False)
