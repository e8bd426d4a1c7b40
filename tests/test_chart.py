"""ml.serving.chart renders real AAPL closes plus a 7-day forecast to PNG/SVG bytes of a fixed size."""

from __future__ import annotations

import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from ml.data.bundled import BundledSource
from ml.errors import InvalidInput
from ml.serving.chart import DPI, HEIGHT_PX, WIDTH_PX, chart_title, forecast_chart

SVG_NS = "{http://www.w3.org/2000/svg}"
DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"


@pytest.fixture(scope="module")
def closes() -> pd.Series:
    return BundledSource().fetch("AAPL")["close"]


@pytest.fixture(scope="module")
def forecast(closes: pd.Series) -> dict[str, Any]:
    last = float(closes.iloc[-1])
    dates = pd.bdate_range(closes.index[-1] + pd.Timedelta(days=1), periods=7)
    return {
        "ticker": "AAPL",
        "as_of": f"{closes.index[-1]:%Y-%m-%d}",
        "last_close": last,
        "model": {"name": "stockq-child-AAPL", "version": "3", "kind": "child", "strategy": "fine_tune"},
        "forecast": [
            {
                "day": day,
                "date": f"{date:%Y-%m-%d}",
                "p10": last * (1 - 0.012 * day),
                "p50": last * (1 + 0.002 * day),
                "p90": last * (1 + 0.014 * day),
            }
            for day, date in enumerate(dates, start=1)
        ],
    }


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def test_bundled_history_is_real_aapl(closes: pd.Series) -> None:
    assert f"{closes.index[-1]:%Y-%m-%d}" == "2022-12-28"
    assert closes.iloc[-1] == pytest.approx(125.67, abs=0.01)
    assert len(closes.dropna()) > 1000


def test_png_has_fixed_size_and_real_content(closes: pd.Series, forecast: dict[str, Any]) -> None:
    data = forecast_chart(closes, forecast)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = _png(data)
    assert image.size == (WIDTH_PX, HEIGHT_PX) == (1000, 500)
    assert DPI == 100
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    pixels = WIDTH_PX * HEIGHT_PX
    non_white = sum(count for count, rgb in colours if rgb != (255, 255, 255))
    assert 0.03 < non_white / pixels < 0.6
    # The median line's red and the band's orange are both drawn, not only the history.
    assert any(r > 180 and g < 80 and b < 80 for _, (r, g, b) in colours)
    assert any(r > 240 and 190 < g < 230 and b < 190 for _, (r, g, b) in colours)
    assert Image.open(io.BytesIO(data)).info.get("Title") == chart_title(forecast)


def test_svg_parses_and_carries_the_title(closes: pd.Series, forecast: dict[str, Any]) -> None:
    data = forecast_chart(closes, forecast, fmt="svg")
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("width") == "720pt" and root.get("height") == "360pt"  # 1000x500 px at 100 dpi
    title = chart_title(forecast)
    assert "as of 2022-12-28" in title and "v3" in title and "stockq-child-AAPL" in title
    assert title in [el.text for el in root.iter(DC_TITLE)]
    assert title.encode() in data  # also beside the glyph paths of the drawn title
    assert len(list(root.iter(f"{SVG_NS}path"))) > 20


def test_uses_only_closes_up_to_as_of(closes: pd.Series, forecast: dict[str, Any]) -> None:
    earlier = dict(forecast, as_of="2022-06-30")
    assert forecast_chart(closes, earlier) != forecast_chart(closes.loc[:"2022-06-30"], forecast)
    assert forecast_chart(closes, earlier) == forecast_chart(closes.loc[:"2022-06-30"], earlier)
    # A history given newest-first with NaNs charts the same as the clean one.
    messy = pd.concat([closes.tail(200), pd.Series([float("nan")], index=[pd.Timestamp("2022-12-01")])])
    assert forecast_chart(messy.iloc[::-1], forecast) == forecast_chart(closes.tail(200), forecast)


@pytest.mark.parametrize("fmt", ["jpeg", "pdf", "", "png "])
def test_bad_format_is_invalid_input(closes: pd.Series, forecast: dict[str, Any], fmt: str) -> None:
    with pytest.raises(InvalidInput, match="unsupported chart format"):
        forecast_chart(closes, forecast, fmt=fmt)


def test_format_is_case_insensitive(closes: pd.Series, forecast: dict[str, Any]) -> None:
    assert forecast_chart(closes, forecast, fmt="SVG").lstrip().startswith(b"<?xml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"forecast": []}, "non-empty list"),
        ({"model": {"name": "x"}}, "version"),
        ({"as_of": "not a date"}, "as_of"),
        ({"as_of": "1990-01-01"}, "no closes on or before"),
    ],
)
def test_malformed_forecast_is_invalid_input(
    closes: pd.Series, forecast: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        forecast_chart(closes, {**forecast, **change})


def test_non_numeric_quantile_is_invalid_input(closes: pd.Series, forecast: dict[str, Any]) -> None:
    days = [dict(d) for d in forecast["forecast"]]
    days[3]["p90"] = "n/a"
    with pytest.raises(InvalidInput, match="day 4 p90"):
        forecast_chart(closes, {**forecast, "forecast": days})


def test_concurrent_renders_do_not_interfere(closes: pd.Series, forecast: dict[str, Any]) -> None:
    # The API renders from several threads at once; shared pyplot state would mix figures up.
    other = {**forecast, "ticker": "MSFT", "last_close": 240.0}
    expected = {"AAPL": forecast_chart(closes, forecast), "MSFT": forecast_chart(closes, other)}
    jobs = [forecast, other] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda f: (f["ticker"], forecast_chart(closes, f)), jobs))
    assert all(data == expected[ticker] for ticker, data in results)
    assert expected["AAPL"] != expected["MSFT"]


def test_never_imports_pyplot() -> None:
    code = (
        "import sys, pandas as pd; from ml.serving.chart import forecast_chart; "
        "h = pd.Series([1.0, 2.0, 3.0], index=pd.bdate_range('2024-01-01', periods=3)); "
        "f = {'ticker': 'X', 'as_of': '2024-01-03', 'model': {'name': 'm', 'version': '1'}, "
        "'forecast': [{'day': 1, 'date': '2024-01-04', 'p10': 2.5, 'p50': 3.1, 'p90': 3.6}]}; "
        "assert forecast_chart(h, f)[:4] == b'\\x89PNG'; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
