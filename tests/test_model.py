"""Pieces that need no store or registry: config, scaler, the two phases' samples, calendar, forecast rows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch

from ml.calendar import next_sessions
from ml.config import PanelModelConfig
from ml.errors import InsufficientHistory, InvalidInput, InvalidTicker
from ml.model.scaler import CLIP, Scaler
from ml.model.vol_lstm import LEVELS
from ml.serving.predict import forecast_from_returns
from ml.tickers import child_name
from ml.training.dataprep import phase_samples
from ml.training.loop import resolve_device
from ml.training.panel import build_panel
from ml.training.recipes import new_spec
from ml.training.train import TrainConfig
from tests.synthetic_panel import riskmetrics_panel


def _scaler(n_features: int = 11, horizon: int = 7) -> Scaler:
    rng = np.random.default_rng(0)
    rows = rng.normal(3.0, 2.0, size=(200, n_features))
    return Scaler(
        feature_names=[f"f{i}" for i in range(n_features)],
        mean=rows.mean(axis=0).tolist(),
        std=rows.std(axis=0).tolist(),
        target_scale=[1.0] * horizon,
        fit_start="2020-01-02",
        fit_end="2020-10-01",
        n_rows=200,
    )


def test_scaler_round_trips_json_exactly_and_clips() -> None:
    scaler = _scaler()
    again = Scaler.from_json(scaler.to_json())
    assert again == scaler
    rows = np.full((4, 11), 1e6)
    assert np.all(scaler.transform(rows) == np.float32(CLIP))
    assert scaler.transform(rows).dtype == np.float32


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"feature_names": ["a"]}',
        _scaler().to_json().replace('"std": [', '"std": [-1,'),
    ],
)
def test_scaler_rejects_malformed_documents(text: str) -> None:
    with pytest.raises(ValueError):
        Scaler.from_json(text)


def test_phase_samples_purge_the_validation_days_and_the_refit_takes_all() -> None:
    panel = build_panel(riskmetrics_panel(n_tickers=2, years=3))
    spec = new_spec(PanelModelConfig(), panel.input_names, panel.tickers, 4)
    s = phase_samples(panel, spec, tickers=panel.tickers, stride=1, val_days=100)
    last = len(panel.dates) - 1 - spec.horizon
    assert s.val.rows.max() == last and s.val.rows.min() == last - 99
    assert s.train.rows.max() == last - 100 - spec.horizon  # no training target reaches the val days
    assert len(s.all) == len(s.train) + len(s.val) + spec.horizon * len(panel.tickers)
    recent = phase_samples(panel, spec, tickers=("S00",), stride=1, val_days=100, history_days=365)
    assert set(recent.all.cols) == {panel.column("S00")}
    assert panel.dates[recent.all.rows.min()] >= panel.dates[-1] - np.timedelta64(365, "D")
    with pytest.raises(InsufficientHistory, match="validation samples"):
        phase_samples(panel, spec, tickers=("S00",), stride=1, val_days=5)


@pytest.mark.parametrize("epochs", [0, 501, -3, 2.5, 99.0, True, "10"])
def test_epochs_out_of_range_is_invalid_input(epochs: object) -> None:
    with pytest.raises(InvalidInput, match=r"model epochs must be an integer in 1\.\.500"):
        PanelModelConfig(epochs=epochs)  # type: ignore[arg-type]


def test_train_config_fields_and_validation() -> None:
    config = TrainConfig(model=PanelModelConfig(epochs=3), universe="gspc", history_days=None)
    assert (config.val_days, config.until, config.model.epochs) == (252, None, 3)
    changed = config.with_(history_days=400)
    assert (changed.history_days, changed.universe, config.history_days) == (400, "gspc", None)
    with pytest.raises(InvalidInput, match=r"^universe must be one of panel, gspc, got 'all'$"):
        TrainConfig(universe="all")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^val_days must be an integer in 20\.\.2520, got 5$"):
        config.with_(val_days=5)
    with pytest.raises(InvalidInput, match="epochs: unknown field"):
        TrainConfig(epochs=3)  # type: ignore[call-arg]


def test_device_defaults_to_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(InvalidInput):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="CUDA is not available"):
            resolve_device("cuda")


def test_next_sessions_skip_weekends_and_nyse_holidays() -> None:
    # 2022-12-30 is a Friday; 2023-01-02 is the observed New Year holiday.
    assert next_sessions(date(2022, 12, 28), 4) == [
        date(2022, 12, 29),
        date(2022, 12, 30),
        date(2023, 1, 3),
        date(2023, 1, 4),
    ]
    # Thanksgiving 2023-11-23 is closed, the Friday after is a (short) session.
    assert next_sessions(date(2023, 11, 21), 3) == [
        date(2023, 11, 22),
        date(2023, 11, 24),
        date(2023, 11, 27),
    ]


def test_forecast_from_returns_dates_prices_and_order() -> None:
    q = np.tile(np.arange(-4, 5) / 100, (7, 1)) * np.sqrt(np.arange(1, 8))[:, None]
    q[0] = q[0][::-1]  # deliberately unordered: must come back sorted
    out = forecast_from_returns(100.0, date(2022, 12, 28), q, LEVELS)
    assert [r["day"] for r in out] == list(range(1, 8))
    assert out[2]["date"] == "2023-01-03"
    assert (out[0]["log_return_p10"], out[0]["log_return_p50"], out[0]["log_return_p90"]) == (
        -0.03,
        0.0,
        0.03,
    )
    assert [q["level"] for q in out[0]["quantiles"]] == list(LEVELS)
    assert out[0]["quantiles"][0] == {"level": 0.05, "log_return": -0.04, "price": 100.0 * np.exp(-0.04)}
    assert out[0]["p50"] == pytest.approx(100.0)
    assert out[6]["p90"] == pytest.approx(100.0 * np.exp(0.03 * np.sqrt(7)))
    assert all(r["p10"] <= r["p50"] <= r["p90"] for r in out)
    assert all(type(r["p50"]) is float for r in out)


def test_child_names_use_the_validated_ticker() -> None:
    assert child_name(" aapl ") == "stockq-child-AAPL"
    assert child_name("^dji") == "stockq-child-^DJI"
    assert child_name("BRK-B") == "stockq-child-BRK-B"
    with pytest.raises(InvalidTicker):
        child_name("../etc")
