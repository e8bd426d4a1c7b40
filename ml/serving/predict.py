"""Inference core: champion model + one online window -> dated quantile forecasts of the close.

The model reads the window's volatility inputs (by name, through its scaler) and its ticker's embedding
row (a ticker outside its universe: the mean embedding), and predicts standardised quantiles z; the
served log-return quantile of day h is z * sigma_t * sqrt(h), sigma_t being the window's last sigma-hat.
When the latest evaluation of the model's recipe fit calibration shifts (per level and horizon, on the z
scale: ml.evaluation.quantile_calibration), they are applied first. A parent serving another ticker than
^GSPC (no child yet) says `fallback: parent`, as before the global model. A forecast carries the
`recent_closes` it follows (the last RECENT_CLOSES stored closes up to its as-of day), so a chart is drawn
from the stored result alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml.calendar import next_sessions
from ml.errors import InsufficientHistory, InvalidInput, ModelNotFound, StockqError
from ml.evaluation.quantile_calibration import apply_shifts
from ml.features.volatility import SIGMA_COLUMN
from ml.model.vol_lstm import horizon_scale, predict_z
from ml.registry.mlflow_registry import LoadedModel, ModelRegistry
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name, validate_ticker

if TYPE_CHECKING:
    from ml.features.store import FeatureStore, OnlineWindow

MODEL_CHOICES = ("auto", "child", "parent")
BAND_LEVELS = (0.1, 0.5, 0.9)  # p10 / p50 / p90: the served 80 % band and the median
GetModel = Callable[[str], LoadedModel | None]
RECENT_CLOSES = 60  # about three months of sessions before the forecast


def forecast_from_returns(
    last_close: float, as_of: date, quantile_log_returns: np.ndarray, levels: tuple[float, ...]
) -> list[dict[str, Any]]:
    """(horizon, levels) log-return quantiles from the last close -> one dated row per trading day: the
    p10 / p50 / p90 band (prices and log returns) and every level in `quantiles`."""
    q = np.sort(np.asarray(quantile_log_returns, dtype=np.float64), axis=1)
    at = [levels.index(level) for level in BAND_LEVELS]
    rows = []
    for i, day in enumerate(next_sessions(as_of, len(q))):
        lo, mid, hi = (float(q[i, j]) for j in at)
        rows.append(
            {
                "day": i + 1,
                "date": day.isoformat(),
                "p10": last_close * math.exp(lo),
                "p50": last_close * math.exp(mid),
                "p90": last_close * math.exp(hi),
                "log_return_p10": lo,
                "log_return_p50": mid,
                "log_return_p90": hi,
                "quantiles": [
                    {"level": level, "log_return": float(r), "price": last_close * math.exp(r)}
                    for level, r in zip(levels, q[i].tolist(), strict=True)
                ],
            }
        )
    return rows


def recent_closes(store: FeatureStore, ticker: str, as_of: date | None = None) -> list[dict[str, Any]]:
    """The last RECENT_CLOSES stored closes up to `as_of` (None: the latest), oldest first: what a chart
    draws before the forecast, stored with it so nobody asks the store again to draw it."""
    closes = store.stored_closes(ticker)
    if closes is None or closes.empty:
        return []
    closes.index = closes.index.normalize()
    if as_of is not None:
        closes = closes[closes.index <= pd.Timestamp(as_of)]
    tail = closes.dropna().iloc[-RECENT_CLOSES:]
    return [{"date": day.date().isoformat(), "close": float(f"{close:.6g}")} for day, close in tail.items()]


def registry_getter(registry: ModelRegistry) -> GetModel:
    """The default get_model: the registered champion, or None when the name has none."""

    def get(name: str) -> LoadedModel | None:
        try:
            return registry.load(name)
        except ModelNotFound:
            return None

    return get


def resolve_model(ticker: str, model: str, get_model: GetModel) -> LoadedModel:
    """`auto`: the ticker's child champion, else the parent; `child` / `parent`: exactly that one."""
    if model not in MODEL_CHOICES:
        raise InvalidInput(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if model != "parent":
        child = get_model(child_name(ticker))
        if child is not None:
            return child
        if model == "child":
            raise ModelNotFound(f"no child model for {ticker}: train one (train_child) or use model='auto'")
    parent = get_model(PARENT_NAME)
    if parent is None:
        raise ModelNotFound(f"no parent model ({PARENT_NAME} has no champion): train the parent first")
    return parent


def calibration_shifts(loaded: LoadedModel) -> tuple[np.ndarray | None, str | None]:
    """The (H, L) z shifts of the latest evaluation of the model's recipe, when they fit its levels."""
    evaluation = loaded.card.get("evaluation") or {}
    calibration = evaluation.get("calibration") or {}
    spec = loaded.model.spec
    shifts = np.asarray(calibration.get("shifts", []), dtype=np.float64)
    fits = shifts.shape == (spec.horizon, len(spec.levels))
    if not fits or [float(v) for v in calibration.get("levels", [])] != list(spec.levels):
        return None, None
    return shifts, str(evaluation.get("run_id"))


def _inputs(window: OnlineWindow, loaded: LoadedModel) -> tuple[np.ndarray, float]:
    """The window's last `spec.window` rows of the model's inputs, scaled, and the last sigma-hat."""
    spec = loaded.model.spec
    if window.window.shape[0] < spec.window:
        raise InsufficientHistory(
            f"{window.ticker}: the online window has {window.window.shape[0]} days, "
            f"the model needs {spec.window}"
        )
    raw = window.columns(spec.inputs)[-spec.window :]
    sigma = float(window.columns((SIGMA_COLUMN,))[-1, 0])
    if not np.isfinite(raw).all() or not sigma > 0:
        raise InsufficientHistory(f"{window.ticker}: the online window has undefined inputs: ingest it again")
    return loaded.scaler.transform(raw), sigma


def _result(window: OnlineWindow, loaded: LoadedModel, z: np.ndarray, sigma: float) -> dict[str, Any]:
    spec = loaded.model.spec
    shifts, calibrated_by = calibration_shifts(loaded)
    served = apply_shifts(z, shifts) if shifts is not None else np.sort(z, axis=-1)
    log_returns = served * horizon_scale(np.array([sigma]), spec.horizon)[0][:, None]
    forecast = forecast_from_returns(window.last_close, window.as_of, log_returns, tuple(spec.levels))
    known = window.ticker in spec.tickers
    band: dict[str, Any] = {
        "sigma": sigma,
        "levels": list(spec.levels),
        "embedding": "ticker" if known else "mean",
        "calibration": None if calibrated_by is None else f"evaluation {calibrated_by}",
    }
    if loaded.kind == "parent" and window.ticker != INDEX_TICKER:
        band["fallback"] = "parent"
    return {
        "ticker": window.ticker,
        "as_of": window.as_of.isoformat(),
        "last_close": window.last_close,
        "data_source": window.source,
        "model": {
            "name": loaded.name,
            "version": loaded.version,
            "kind": loaded.kind,
            "strategy": loaded.strategy,
        },
        "band": band,
        **({"fallback": band["fallback"]} if "fallback" in band else {}),
        "forecast": forecast,
        "next_day": forecast[0],
        "seven_day": forecast[min(6, len(forecast) - 1)],
    }


def _forward(loaded: LoadedModel, windows: list[OnlineWindow]) -> list[tuple[np.ndarray, float]]:
    """One forward pass over every window the model serves: (z (H, L), sigma) per window."""
    inputs = [_inputs(w, loaded) for w in windows]
    ids = loaded.model.spec.ticker_ids([w.ticker for w in windows])
    z = predict_z(loaded.model, np.stack([x for x, _ in inputs]), ids)
    return [(z[i], sigma) for i, (_, sigma) in enumerate(inputs)]


def predict(
    ticker: str,
    model: str = "auto",
    *,
    store: FeatureStore,
    registry: ModelRegistry,
    get_model: GetModel | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    ticker = validate_ticker(ticker)
    loaded = resolve_model(ticker, model, get_model or registry_getter(registry))
    window = store.online_window(ticker, now=now)
    ((z, sigma),) = _forward(loaded, [window])
    return {**_result(window, loaded, z, sigma), "recent_closes": recent_closes(store, ticker, window.as_of)}


def predict_many(
    tickers: list[str],
    model: str = "auto",
    *,
    store: FeatureStore,
    registry: ModelRegistry,
    get_model: GetModel | None = None,
    now: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """Like predict for each ticker, with one forward pass per distinct model.

    A ticker that fails (no features, stale, no model) gets `{"error": {code, message[, error_id]}}` (the
    client's view of the error) instead of a forecast, so one bad ticker does not sink the batch.
    """
    if model not in MODEL_CHOICES:
        raise InvalidInput(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    get = get_model or registry_getter(registry)
    results: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[str, str], list[tuple[OnlineWindow, LoadedModel]]] = {}
    for raw in tickers:
        key = raw if isinstance(raw, str) else repr(raw)
        try:
            ticker = validate_ticker(raw)
            loaded = resolve_model(ticker, model, get)
            window = store.online_window(ticker, now=now)
            _inputs(window, loaded)  # reject a too-short window here, not in the middle of a batch
        except StockqError as exc:
            results[key] = {"error": exc.to_dict()}
            continue
        groups.setdefault((loaded.name, loaded.version), []).append((window, loaded))
    for members in groups.values():
        loaded = members[0][1]
        windows = [w for w, _ in members]
        for window, (z, sigma) in zip(windows, _forward(loaded, windows), strict=True):
            results[window.ticker] = _result(window, loaded, z, sigma)
    return results
