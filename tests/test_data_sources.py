"""Data sources: ticker validation, bundled, csv, yfinance (really offline here), auto, the parquet cache."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.data import COLUMNS, make_source
from ml.data.auto import AutoSource
from ml.data.bundled import BundledSource, bundled_tickers
from ml.data.cache import CachedSource, last_final_day
from ml.data.csv_source import CsvSource
from ml.data.yfinance_source import YFinanceSource
from ml.errors import DataUnavailable, InvalidInput, InvalidTicker, StockqError, UnknownTicker
from ml.tickers import validate_ticker

BAD_TICKERS = ["../etc", "", "X" * 200, "AAPL;DEL", "A/B", ".", "..", "  ", "$AAPL", "AAPL DEL", "ÄPPL"]


# -- helpers shared with test_feature_store ---------------------------------------------------------------
def synthetic_ohlcv(n: int, *, seed: int = 0, price: float = 100.0) -> pd.DataFrame:
    """A business-day random walk from 2019-01-02 in the yfinance layout (Open, High, Low, Close, Volume)."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    return pd.DataFrame(
        {
            "Open": open_,
            "High": np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n)),
            "Low": np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n)),
            "Close": close,
            "Volume": rng.integers(1_000_000, 5_000_000, n).astype(float),
        },
        index=pd.bdate_range("2019-01-02", periods=n, name="Date"),
    )


def write_csv(directory: Path, ticker: str, frame: pd.DataFrame) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_csv(directory / f"{ticker}.csv", index_label="Date")


def as_source_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """What a source returns for `frame` (a yfinance-layout table): lower-case columns, float64."""
    out = frame.rename(columns=str.lower)[COLUMNS].astype("float64")
    out.index = pd.DatetimeIndex(frame.index, name="date", freq=None)
    return out


def assert_history_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date"
    assert frame.index.tz is None and (frame.index == frame.index.normalize()).all()
    assert frame.index.is_monotonic_increasing and frame.index.is_unique


def _online() -> bool:
    try:
        socket.getaddrinfo("query2.finance.yahoo.com", 443)
    except OSError:
        return False
    return True


offline_only = pytest.mark.skipif(_online(), reason="needs a machine without internet access")


# -- tickers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("aapl", "AAPL"), (" msft ", "MSFT"), ("^GSPC", "^GSPC"), ("BRK.B", "BRK.B"), ("EURUSD=X", "EURUSD=X"),
     ("BTC-USD", "BTC-USD"), ("A" * 12, "A" * 12)],
)  # fmt: skip
def test_validate_ticker_normalises(raw: str, expected: str) -> None:
    assert validate_ticker(raw) == expected


@pytest.mark.parametrize("raw", [*BAD_TICKERS, "A" * 13, None, 5, ["AAPL"]])
def test_validate_ticker_rejects(raw: object) -> None:
    with pytest.raises(InvalidTicker) as err:
        validate_ticker(raw)
    assert err.value.code == "invalid_ticker"
    if isinstance(raw, str):
        assert repr(raw[:20])[:-1] in err.value.message
    else:
        assert type(raw).__name__ in err.value.message


@pytest.mark.parametrize("spec", ["bundled", "csv", "auto"])
def test_every_source_rejects_bad_tickers_before_any_io(tmp_path: Path, spec: str) -> None:
    (tmp_path / "csv").mkdir()
    source = make_source(f"csv:{tmp_path / 'csv'}" if spec == "csv" else spec, tmp_path / "var")
    for raw in BAD_TICKERS:
        with pytest.raises(InvalidTicker):
            source.fetch(raw)
    cache_files = [p for p in (tmp_path / "var" / "raw").rglob("*") if p.is_file()]
    assert cache_files == []


# -- bundled ----------------------------------------------------------------------------------------------
def test_bundled_stock_is_close_only() -> None:
    frame = BundledSource().fetch("aapl")
    assert_history_contract(frame)
    assert frame.attrs == {"source": "bundled", "ticker": "AAPL", "close_only": True}
    assert frame[["open", "high", "low", "volume"]].isna().all().all()
    assert frame["close"].notna().all()
    assert frame.index[0] == pd.Timestamp("1990-01-02") and frame.index[-1] == pd.Timestamp("2022-12-28")
    assert frame.loc["2022-12-28", "close"] == pytest.approx(125.674)


def test_bundled_index_has_ohlcv_where_arch_has_it() -> None:
    frame = BundledSource().fetch("^GSPC", date(1998, 12, 1), date(2019, 1, 31))
    assert_history_contract(frame)
    assert frame.attrs["close_only"] is False and frame.attrs["ohlcv_range"] == "1999-01-04..2018-12-31"
    inside = frame.loc["1999-01-04":"2018-12-31"]
    assert inside.notna().all().all()
    assert (inside["high"] >= inside["low"]).all()
    assert inside.loc["1999-01-05", "volume"] == 775_000_000
    assert frame.loc[:"1998-12-31", "volume"].isna().all() and frame.loc["2019-01-02":, "open"].isna().all()
    assert frame.index[0] >= pd.Timestamp("1998-12-01") and frame.index[-1] <= pd.Timestamp("2019-01-31")


def test_bundled_tickers_unknown_and_inverted_range() -> None:
    assert len(bundled_tickers()) == 21 and {"^GSPC", "AAPL", "MSFT"} <= set(bundled_tickers())
    with pytest.raises(UnknownTicker, match=r"ZZZZ is not in the bundled data set"):
        BundledSource().fetch("ZZZZ")
    with pytest.raises(InvalidInput, match=r"inverted date range: start 2020-02-01 is after end 2020-01-01"):
        BundledSource().fetch("AAPL", date(2020, 2, 1), date(2020, 1, 1))


# -- csv --------------------------------------------------------------------------------------------------
def test_csv_reads_yfinance_layout_sorted(tmp_path: Path) -> None:
    data = synthetic_ohlcv(30)
    write_csv(tmp_path, "TST", data.iloc[::-1])  # unsorted on disk
    frame = CsvSource(tmp_path).fetch("tst", date(2019, 1, 10), date(2019, 1, 31))
    assert_history_contract(frame)
    pd.testing.assert_frame_equal(frame, as_source_frame(data).loc["2019-01-10":"2019-01-31"])
    assert frame.attrs["source"] == f"csv:{tmp_path.resolve()}" and frame.attrs["close_only"] is False


def test_csv_reads_yf_download_multi_level_layout(tmp_path: Path) -> None:
    data = synthetic_ohlcv(10)
    # What `yf.download("TST").to_csv(path)` writes: a Price/Ticker header pair and an empty Date line.
    wide = data.copy()
    wide.columns = pd.MultiIndex.from_product([data.columns, ["TST"]], names=["Price", "Ticker"])
    wide.to_csv(tmp_path / "TST.csv")
    assert (tmp_path / "TST.csv").read_text().splitlines()[1].startswith("Ticker,TST")
    frame = CsvSource(tmp_path).fetch("TST")
    np.testing.assert_allclose(frame.to_numpy(), as_source_frame(data).to_numpy(), rtol=1e-15)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda f: f.drop(columns=["Volume", "Low"]), InvalidInput, r"lacks column\(s\) low, volume"),
        (lambda f: pd.concat([f, f.iloc[[3]]]), InvalidInput, r"duplicate date\(s\) 2019-01-07"),
        (lambda f: f.assign(Close=f["Close"].where(f.index != f.index[5], -1.0)), InvalidInput,
         r"close that is not a positive number on 2019-01-09"),
        (lambda f: f.astype(object).assign(Open="abc"), InvalidInput, r"non-numeric values"),
        (lambda f: f.rename_axis("When"), InvalidInput, r"TST.csv lacks a Date column"),
    ],
)  # fmt: skip
def test_csv_bad_files_raise_naming_the_problem(
    tmp_path: Path, mutate: Callable[[pd.DataFrame], pd.DataFrame], error: type[StockqError], message: str
) -> None:
    data = mutate(synthetic_ohlcv(20))
    data.to_csv(tmp_path / "TST.csv", index_label=data.index.name or "Date")
    with pytest.raises(error, match=message) as err:
        CsvSource(tmp_path).fetch("TST")
    assert "TST" in err.value.message


def test_csv_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnknownTicker, match=r"no file NOPE.csv for NOPE"):
        CsvSource(tmp_path).fetch("NOPE")
    with pytest.raises(InvalidInput, match=r"is not a directory"):
        make_source(f"csv:{tmp_path / 'absent'}", tmp_path / "var")
    with pytest.raises(InvalidInput, match=r"unknown data source 'ftp'"):
        make_source("ftp", tmp_path / "var")


# -- cache ------------------------------------------------------------------------------------------------
def test_cache_fetches_only_missing_dates(tmp_path: Path) -> None:
    data = synthetic_ohlcv(120)
    d1, d2 = data.index[59].date(), data.index[-1].date()
    write_csv(tmp_path / "csv", "TST", data.iloc[:60])
    source = make_source(f"csv:{tmp_path / 'csv'}", tmp_path / "var")
    assert isinstance(source, CachedSource)

    first = source.fetch("TST", end=d1)
    assert source.fetches == [("TST", None, d1)]
    again = source.fetch("TST", end=d1)
    assert source.fetches == [("TST", None, d1)]  # nothing refetched
    pd.testing.assert_frame_equal(first, again)

    write_csv(tmp_path / "csv", "TST", data)  # the source gains 60 later days
    grown = source.fetch("TST", end=d2)
    assert source.fetches[1:] == [("TST", d1 + timedelta(days=1), d2)]
    pd.testing.assert_frame_equal(grown, as_source_frame(data))
    pd.testing.assert_frame_equal(source.fetch("TST", date(2019, 2, 1), d1), first.loc["2019-02-01":])
    assert len(source.fetches) == 2

    # A fresh process reads the parquet cache instead of the source.
    reopened = make_source(f"csv:{tmp_path / 'csv'}", tmp_path / "var")
    pd.testing.assert_frame_equal(reopened.fetch("TST", end=d2), grown)
    assert reopened.fetches == []  # type: ignore[attr-defined]


def test_cache_extends_backwards_and_never_stores_todays_bar(tmp_path: Path) -> None:
    today = last_final_day() + timedelta(days=1)
    data = synthetic_ohlcv(80)
    data.index = pd.date_range(end=today + timedelta(days=2), periods=80, name="Date")  # reaches past today
    write_csv(tmp_path / "csv", "TST", data)
    source = make_source(f"csv:{tmp_path / 'csv'}", tmp_path / "var")
    assert isinstance(source, CachedSource)
    late_start = data.index[40].date()

    tail = source.fetch("TST", start=late_start)
    whole = source.fetch("TST")
    assert source.fetches == [
        ("TST", late_start, today - timedelta(days=1)),
        ("TST", None, late_start - timedelta(days=1)),
    ]
    expected = as_source_frame(data)
    expected = expected[expected.index < pd.Timestamp(today)]  # today's bar may still be forming
    pd.testing.assert_frame_equal(whole, expected)
    pd.testing.assert_frame_equal(tail, expected.loc[str(late_start) :])
    assert source.fetch("TST", start=today).empty and len(source.fetches) == 2


def test_failed_refresh_keeps_the_cache_bytes(tmp_path: Path) -> None:
    data = synthetic_ohlcv(60)
    write_csv(tmp_path / "csv", "TST", data.iloc[:40])
    source = make_source(f"csv:{tmp_path / 'csv'}", tmp_path / "var")
    source.fetch("TST", end=data.index[39].date())
    cache = {p: p.read_bytes() for p in (tmp_path / "var" / "raw").rglob("TST.*")}
    assert len(cache) == 2

    write_csv(tmp_path / "csv", "TST", pd.concat([data, data.iloc[[45]]]))
    with pytest.raises(InvalidInput, match="duplicate date"):
        source.fetch("TST", end=data.index[-1].date())
    assert {p: p.read_bytes() for p in cache} == cache


def test_two_csv_directories_do_not_share_a_cache(tmp_path: Path) -> None:
    write_csv(tmp_path / "a", "TST", synthetic_ohlcv(10, price=10.0))
    write_csv(tmp_path / "b", "TST", synthetic_ohlcv(10, price=500.0))
    a = make_source(f"csv:{tmp_path / 'a'}", tmp_path / "var").fetch("TST")
    b = make_source(f"csv:{tmp_path / 'b'}", tmp_path / "var").fetch("TST")
    assert a["close"].iloc[0] < 20 and b["close"].iloc[0] > 400


class _AdjustingSource:
    """A source whose adjusted prices get rescaled by a 2:1 split on `split`, like yfinance's auto_adjust."""

    name = "adjusting"

    def __init__(self, data: pd.DataFrame, split: pd.Timestamp) -> None:
        self.data, self.split, self.visible_until = as_source_frame(data), split, split - pd.Timedelta(days=1)

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        frame = self.data.loc[: self.visible_until].copy()
        if self.visible_until >= self.split:
            frame.loc[: self.split - pd.Timedelta(days=1), ["open", "high", "low", "close"]] /= 2
        frame = frame.loc[pd.Timestamp(start) if start else None : pd.Timestamp(end) if end else None]
        frame.attrs = {
            "source": self.name,
            "adjustment_events": [str(self.split.date())] if self.split in frame.index else [],
        }
        return frame


def test_cache_refetches_everything_after_a_split(tmp_path: Path) -> None:
    data = synthetic_ohlcv(50)
    split = data.index[30]
    inner = _AdjustingSource(data, split)
    source = CachedSource(inner, tmp_path / "raw")
    last = data.index[-1].date()
    before = source.fetch("TST", end=(split - pd.Timedelta(days=1)).date())
    assert before.index[-1] == split - pd.offsets.BDay(1)

    inner.visible_until = data.index[-1]  # the split day and later are published
    after = source.fetch("TST", end=last)
    resume = (before.index[-1] + pd.Timedelta(days=1)).date()
    assert source.fetches[1:] == [("TST", resume, last), ("TST", None, last)]
    pd.testing.assert_frame_equal(after, inner.fetch("TST"))
    assert after.loc[split - pd.offsets.BDay(1), "close"] == pytest.approx(data["Close"].iloc[29] / 2)


# -- yfinance and auto, really offline --------------------------------------------------------------------
@offline_only
@pytest.mark.timeout(30)
def test_yfinance_offline_raises_data_unavailable(tmp_path: Path) -> None:
    import yfinance.cache

    # yfinance's caches hold the database they first opened: an earlier test in this process (the CLI's
    # data-source probe) would keep them on its own var dir. One process has one var dir in the stack.
    yfinance.cache._TzCacheManager._tz_cache = None
    yfinance.cache._CookieCacheManager._Cookie_cache = None
    source = YFinanceSource(tmp_path / "yf")
    for start, end in [(None, None), (date(2024, 1, 2), date(2024, 2, 1))]:
        with pytest.raises(DataUnavailable) as err:
            source.fetch("AAPL", start, end)
        assert "yfinance" in err.value.message and "AAPL" in err.value.message
        assert err.value.code == "data_unavailable"
    # yfinance's own time-zone and cookie databases live in our var dir, not under ~.
    assert yfinance.cache._TzDBManager.get_location() == str(tmp_path / "yf")
    assert yfinance.cache._CookieDBManager.get_location() == str(tmp_path / "yf")
    assert {p.name for p in (tmp_path / "yf").iterdir()} >= {"tkr-tz.db"}


@offline_only
@pytest.mark.timeout(30)
def test_auto_falls_back_to_bundled_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = make_source("auto", tmp_path)
    assert isinstance(source, AutoSource) and isinstance(source.online, CachedSource)
    with caplog.at_level(logging.INFO, logger="ml.data.auto"):
        msft = source.fetch("MSFT")
        aapl = source.fetch("AAPL")
    warnings = [r for r in caplog.records if r.name == "ml.data.auto" and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per offline spell, not per ticker
    assert "yfinance" in warnings[0].getMessage() and "MSFT" in warnings[0].getMessage()
    assert source.online.fetches == [("MSFT", None, last_final_day())]  # AAPL did not retry the network
    pd.testing.assert_frame_equal(msft, BundledSource().fetch("MSFT"))
    assert aapl.attrs["source"] == "bundled" and aapl.index[-1] == pd.Timestamp("2022-12-28")


class _FlakySource:
    name = "yfinance"

    def __init__(self, data: pd.DataFrame) -> None:
        self.data, self.online = as_source_frame(data), True

    def fetch(self, ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        if not self.online:
            raise DataUnavailable(f"yfinance: cannot fetch {ticker}")
        frame = self.data.loc[pd.Timestamp(start) if start else None : pd.Timestamp(end) if end else None]
        frame.attrs = {"source": "yfinance", "ticker": ticker}
        return frame


def test_auto_offline_prefers_the_cached_real_history(tmp_path: Path) -> None:
    data = synthetic_ohlcv(60)
    flaky = _FlakySource(data)
    source = AutoSource(CachedSource(flaky, tmp_path / "yf"), BundledSource())
    first = source.fetch("AAPL", end=data.index[-1].date())
    flaky.online = False
    stale = source.fetch("AAPL")  # the refresh fails: the cached yfinance rows, not bundled 1990-2022
    pd.testing.assert_frame_equal(stale, first)
    assert stale.attrs["source"] == "yfinance"
    assert source.fetch("MSFT").attrs["source"] == "bundled"  # nothing cached for MSFT
