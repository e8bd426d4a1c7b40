"""Inference core: champion model + one online window -> dated 7-day quantile forecasts of the close.

Every band is served calibrated: the card's CQR correction (fit on the walk-forward's out-of-sample
windows, ml.evaluation.calibration) is applied to the model's raw quantiles. A parent serving another ticker
than its own (no child yet) learnt ^GSPC's volatility: its band is rescaled around the median so that the
day-1 band is as wide as that ticker's own RiskMetrics 80 % band today (the parent's shape across horizons
kept), and the result says `fallback: parent`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ml.calendar import next_sessions
from ml.errors import InsufficientHistory, InvalidInput, ModelNotFound, StockqError
from ml.evaluation.calibration import apply_cqr
from ml.model.lstm import QUANTILES, predict_log_returns
from ml.registry.mlflow_registry import LoadedModel, ModelRegistry
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name, validate_ticker

if TYPE_CHECKING:
    from ml.features.store import FeatureStore, OnlineWindow

MODEL_CHOICES = ("auto", "child", "parent")
GetModel = Callable[[str], LoadedModel | None]


def forecast_from_returns(
    last_close: float, as_of: date, quantile_log_returns: np.ndarray
) -> list[dict[str, Any]]:
    """(horizon, 3) log-return quantiles from the last close -> one dated price band per trading day."""
    ordered = np.sort(np.asarray(quantile_log_returns, dtype=np.float64), axis=1)
    days = next_sessions(as_of, len(ordered))
    return [
        {
            "day": i + 1,
            "date": day.isoformat(),
            "p10": last_close * math.exp(q10),
            "p50": last_close * math.exp(q50),
            "p90": last_close * math.exp(q90),
            "log_return_p10": float(q10),
            "log_return_p50": float(q50),
            "log_return_p90": float(q90),
        }
        for i, (day, (q10, q50, q90)) in enumerate(zip(days, ordered.tolist(), strict=True))
    ]


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


def served_band(window: OnlineWindow, loaded: LoadedModel, raw: np.ndarray) -> tuple[np.ndarray, dict]:
    """(horizon, 3) raw quantiles -> the band users get, and how it was made."""
    calibration = loaded.card.get("calibration")
    q = apply_cqr(raw[None], calibration)[0] if calibration else np.asarray(raw, np.float64)
    info: dict[str, Any] = {"calibration": calibration["method"] if calibration else None}
    if loaded.kind == "parent" and window.ticker != INDEX_TICKER:
        from ml.evaluation.baselines import ewma_volatility  # statsmodels, for the parent fallback only

        daily = window.window[:, window.feature_names.index("log_ret_1d")]
        z = stats.norm.ppf(QUANTILES)
        wanted = (z[-1] - z[0]) * float(ewma_volatility(daily)[-1])
        width = float(q[0, -1] - q[0, 0])
        scale = wanted / width if width > 0 else 1.0
        q = q[:, 1:2] + (q - q[:, 1:2]) * scale
        info |= {"fallback": "parent", "volatility_scale": scale}
    return q, info


def _result(window: OnlineWindow, loaded: LoadedModel, raw: np.ndarray) -> dict[str, Any]:
    quantiles, band = served_band(window, loaded, raw)
    forecast = forecast_from_returns(window.last_close, window.as_of, quantiles)
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
        "seven_day": forecast[6],
    }


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
    quantiles = predict_log_returns(loaded.model, loaded.scaler, _input(window, loaded))
    return _result(window, loaded, quantiles[0])


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

    A ticker that fails (no features, stale, no model) gets `{"error": {code, message}}` instead of a
    forecast, so one bad ticker does not sink the batch.
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
            _input(window, loaded)  # reject a too-short window here, not in the middle of a batch
        except StockqError as exc:
            results[key] = {"error": exc.to_dict()}
            continue
        groups.setdefault((loaded.name, loaded.version), []).append((window, loaded))
    for members in groups.values():
        loaded = members[0][1]
        batch = np.concatenate([_input(w, loaded) for w, _ in members])
        quantiles = predict_log_returns(loaded.model, loaded.scaler, batch)
        for (window, _), q in zip(members, quantiles, strict=True):
            results[window.ticker] = _result(window, loaded, q)
    return results


def _input(window: OnlineWindow, loaded: LoadedModel) -> np.ndarray:
    """The online window cut to the model's length, as a batch of one."""
    need = loaded.model.spec.window
    if window.window.shape[0] < need:
        raise InsufficientHistory(
            f"{window.ticker}: the online window has {window.window.shape[0]} days, the model needs {need}"
        )
    return window.window[None, -need:, :]
