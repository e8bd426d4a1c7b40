"""Forecast charts rendered to PNG or SVG bytes.

Built on `matplotlib.figure.Figure` and never on pyplot: pyplot keeps a global "current figure" that
threads of the gunicorn gthread API would share, and it may try to open a display. A bare Figure renders
through the Agg/SVG canvas chosen at save time, touches no global state and needs no backend switch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from ml.errors import InvalidInput

FORMATS = ("png", "svg")
HISTORY_POINTS = 120
WIDTH_PX, HEIGHT_PX, DPI = 1000, 500, 100

_CLOSE_COLOUR = "#1f4e79"
_MEDIAN_COLOUR = "#d62728"
_BAND_COLOUR = "#ff7f0e"


def _number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"forecast chart: {what} is not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise InvalidInput(f"forecast chart: {what} is not finite: {value!r}")
    return number


def _timestamp(value: object, what: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"forecast chart: {what} is not a date: {value!r}") from exc
    if pd.isna(stamp):
        raise InvalidInput(f"forecast chart: {what} is missing")
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def chart_title(forecast: Mapping[str, Any]) -> str:
    """The title drawn on the chart (and stored as the image's Title metadata)."""
    model = forecast.get("model")
    if not isinstance(model, Mapping) or "version" not in model:
        raise InvalidInput("forecast chart: forecast['model'] must name the model and its version")
    as_of = _timestamp(forecast.get("as_of"), "as_of")
    days = len(forecast.get("forecast") or [])
    details = ", ".join(str(model[k]) for k in ("kind", "strategy") if model.get(k))
    title = (
        f"{forecast.get('ticker', '?')} · {days}-day forecast as of {as_of:%Y-%m-%d}"
        f" · model {model.get('name', '?')} v{model['version']}"
    )
    return f"{title} ({details})" if details else title


def _forecast_path(
    points: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(points, Sequence) or isinstance(points, str | bytes) or not points:
        raise InvalidInput("forecast chart: forecast['forecast'] must be a non-empty list of days")
    rows = []
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise InvalidInput(f"forecast chart: forecast day {i + 1} is not an object")
        rows.append(
            (
                _timestamp(point.get("date"), f"day {i + 1} date"),
                *(_number(point.get(q), f"day {i + 1} {q}") for q in ("p10", "p50", "p90")),
            )
        )
    rows.sort(key=lambda row: row[0])
    dates = pd.DatetimeIndex([r[0] for r in rows]).to_numpy()
    p10, p50, p90 = (np.array([r[k] for r in rows]) for k in (1, 2, 3))
    # Quantiles from independent heads can cross; draw the band between whichever edge is lower/higher
    # rather than refusing to chart a forecast the API has already served.
    return dates, np.minimum(p10, p90), p50, np.maximum(p10, p90)


def _closes(history: pd.Series, as_of: pd.Timestamp) -> pd.Series:
    if not isinstance(history, pd.Series):
        raise InvalidInput("forecast chart: history must be a pandas Series of closes indexed by date")
    closes = pd.to_numeric(history, errors="coerce")
    index = pd.DatetimeIndex(pd.to_datetime(closes.index))
    closes.index = index.tz_localize(None) if index.tz is not None else index
    closes = closes[np.isfinite(closes.to_numpy(dtype="float64", na_value=np.nan))].sort_index()
    # Closes after as_of were unknown when the forecast was made; showing them would blend a backtest
    # into what is presented as the forecast's own view.
    closes = closes[closes.index <= as_of].tail(HISTORY_POINTS)
    if closes.empty:
        raise InvalidInput(f"forecast chart: no closes on or before as_of {as_of:%Y-%m-%d}")
    return closes


def forecast_chart(history: pd.Series, forecast: Mapping[str, Any], fmt: str = "png") -> bytes:
    """The last ~120 closes, the median forecast path and its 80 % (p10-p90) band, as PNG or SVG bytes.

    The image is always WIDTH_PX x HEIGHT_PX at DPI, so clients can lay it out before it loads.
    """
    kind = fmt.lower() if isinstance(fmt, str) else fmt
    if kind not in FORMATS:
        raise InvalidInput(f"unsupported chart format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not isinstance(forecast, Mapping):
        raise InvalidInput("forecast chart: forecast must be an object")

    title = chart_title(forecast)
    as_of = _timestamp(forecast.get("as_of"), "as_of")
    closes = _closes(history, as_of)
    dates, low, median, high = _forecast_path(forecast.get("forecast"))  # type: ignore[arg-type]
    last_close = forecast.get("last_close")
    anchor = _number(last_close, "last_close") if last_close is not None else float(closes.iloc[-1])

    # The forecast path starts at the as-of close, so the band visibly fans out from the last known price.
    path_dates = np.concatenate([[as_of.to_datetime64()], dates])
    low, median, high = (np.concatenate([[anchor], q]) for q in (low, median, high))

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(
        closes.index.to_numpy(),
        closes.to_numpy(),
        color=_CLOSE_COLOUR,
        linewidth=1.6,
        label=f"close (last {len(closes)} sessions)",
    )
    ax.fill_between(
        path_dates, low, high, color=_BAND_COLOUR, alpha=0.3, linewidth=0, label="80 % band (p10-p90)"
    )
    ax.plot(
        path_dates,
        median,
        color=_MEDIAN_COLOUR,
        linewidth=2.0,
        marker="o",
        markersize=3,
        label="median path (p50)",
    )
    ax.axvline(as_of.to_datetime64(), color="grey", linestyle="--", linewidth=1)
    ax.annotate(
        f"{median[-1]:.2f}",
        xy=(path_dates[-1], median[-1]),
        xytext=(5, 0),
        textcoords="offset points",
        va="center",
        fontsize=9,
        color=_MEDIAN_COLOUR,
    )
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel("close")
    ax.grid(alpha=0.3)
    ax.margins(x=0.02)
    ax.legend(loc="best", fontsize=9)

    # The title also goes into the file's metadata (PNG tEXt, SVG dc:title): in SVG the drawn title is
    # glyph paths, so this is where a client or a test can read it as text.
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind, dpi=DPI, metadata={"Title": title})
    return buffer.getvalue()
