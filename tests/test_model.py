"""Model-layer pieces that need no store or registry: network, loss, scaler, metrics, split, calendar."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch

from ml.calendar import next_sessions
from ml.config import BacktestConfig
from ml.errors import InsufficientHistory, InvalidInput, InvalidTicker
from ml.evaluation.evaluate import evaluate, pinball
from ml.model.lstm import ModelSpec, QuantileLSTM, pinball_loss, predict_log_returns
from ml.model.scaler import CLIP, Scaler
from ml.serving.predict import forecast_from_returns
from ml.tickers import child_name
from ml.training.train import TrainConfig, chronological_split, min_rows, resolve_device


def _scaler(n_features: int = 11, horizon: int = 7) -> Scaler:
    rng = np.random.default_rng(0)
    return Scaler.fit(
        rng.normal(3.0, 2.0, size=(200, n_features)),
        rng.normal(0.0, 0.02, size=(150, horizon)),
        feature_names=[f"f{i}" for i in range(n_features)],
        fit_start="2020-01-02",
        fit_end="2020-10-01",
    )


def test_quantiles_are_ordered_for_any_input() -> None:
    torch.manual_seed(0)
    model = QuantileLSTM(ModelSpec(n_features=11, hidden=8, layers=2, window=20)).eval()
    out = model(torch.randn(32, 20, 11) * 50)
    assert out.shape == (32, 7, 3)
    assert bool((out[..., 0] <= out[..., 1]).all()) and bool((out[..., 1] <= out[..., 2]).all())


def test_pinball_loss_matches_numpy_definition() -> None:
    pred = np.array([[[-1.0, 0.0, 1.0]]])
    target = np.array([[2.0]])
    # Below every quantile's miss: q10 misses by 3 (0.1*3), q50 by 2 (0.5*2), q90 by 1 (0.9*1).
    expected = (0.3 + 1.0 + 0.9) / 3
    assert pinball(target, pred) == pytest.approx(expected)
    torch_value = pinball_loss(torch.tensor(pred), torch.tensor(target)).item()
    assert torch_value == pytest.approx(expected)


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


def test_evaluate_on_a_hand_computed_example() -> None:
    y = np.array([[0.01, 0.02], [-0.01, -0.03]])
    q = np.stack([y - 0.005, y, y + 0.005], axis=-1)  # perfect medians, 1 % wide bands
    metrics = evaluate(y, q, drift_per_day=0.0)
    first = metrics["per_horizon"][0]
    assert first == {
        "horizon": 1,
        "mae": 0.0,
        "rmse": 0.0,
        "mase_persistence": 0.0,
        "mase_drift": 0.0,
        "direction_accuracy": 1.0,
        "coverage_80": 1.0,
        "width_80": pytest.approx(0.01),
    }
    zero = np.zeros_like(q)
    persistence = evaluate(y, zero, drift_per_day=0.001)
    assert persistence["mase_persistence_mean"] == pytest.approx(1.0)
    # Drift forecast h*0.001 against targets: h1 |0.01-0.001|,|−0.01−0.001| -> 0.01; model MAE 0.01.
    assert persistence["per_horizon"][0]["mase_drift"] == pytest.approx(0.01 / 0.01)
    assert persistence["coverage_80_mean"] == 0.0 and persistence["n"] == 2


def test_split_is_chronological_with_purge_gaps() -> None:
    split = chronological_split(500, 7)
    assert split.train.start == 0
    assert split.val.start - split.train.stop == 7
    assert split.test.start - split.val.stop == 7
    assert split.test.stop == 500
    assert split.val.stop - split.val.start == split.test.stop - split.test.start == round(486 * 0.15)
    with pytest.raises(InsufficientHistory):
        chronological_split(40, 7)
    assert min_rows(60, 7) == 60 + 6 + 14 + 60


@pytest.mark.parametrize("epochs", [0, 501, -3, 2.5, 99.0, True, "10"])
def test_epochs_out_of_range_is_invalid_input(epochs: object) -> None:
    with pytest.raises(InvalidInput, match=r"epochs must be an integer in 1\.\.500"):
        TrainConfig(epochs=epochs)  # type: ignore[arg-type]


def test_config_bounds() -> None:
    assert TrainConfig(epochs=1).epochs == 1 and TrainConfig(epochs=500).epochs == 500
    for bad in ({"lr": 0}, {"window": 5}, {"horizon": 3}, {"history_days": 0}, {"dropout": 0.95}):
        with pytest.raises(InvalidInput):
            TrainConfig(**bad)  # type: ignore[arg-type]


def test_config_changes_are_validated_again() -> None:
    config = TrainConfig(epochs=3, backtest=BacktestConfig(origins=2))
    changed = config.with_(seed=4, history_days=None)
    assert (changed.seed, changed.epochs, changed.backtest) == (4, 3, BacktestConfig(origins=2))
    assert config.seed == 1337  # frozen: the original is untouched
    with pytest.raises(InvalidInput, match=r"^window must be an integer in 10\.\.250, got 9$"):
        config.with_(window=9)
    with pytest.raises(InvalidInput, match=r"^backtest bootstrap_reps must be an integer in 50\.\.100000"):
        BacktestConfig(bootstrap_reps=10)
    with pytest.raises(InvalidInput, match="backtest must be a BacktestConfig"):
        TrainConfig(backtest={"origins": 2})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="epoch: unknown field"):
        TrainConfig(epoch=3)  # type: ignore[call-arg]
    assert TrainConfig(lr=1).model_dump()["lr"] == 1.0


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
    q = np.tile([0.02, -0.01, 0.0], (7, 1))  # deliberately unordered: must come back sorted
    q[6] = [-0.05, 0.01, 0.06]
    out = forecast_from_returns(100.0, date(2022, 12, 28), q)
    assert [r["day"] for r in out] == list(range(1, 8))
    assert out[2]["date"] == "2023-01-03"
    assert out[0]["log_return_p10"] == -0.01 and out[0]["log_return_p90"] == 0.02
    assert out[0]["p50"] == pytest.approx(100.0)
    assert out[6]["p90"] == pytest.approx(100.0 * np.exp(0.06))
    assert all(r["p10"] <= r["p50"] <= r["p90"] for r in out)
    assert all(type(r["p50"]) is float for r in out)


def test_predict_log_returns_scales_back_and_checks_shape() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(n_features=11, hidden=8, layers=1, window=20)
    model = QuantileLSTM(spec).eval()
    scaler = _scaler()
    windows = np.random.default_rng(1).normal(size=(3, 30, 11))  # longer than the window: last 20 used
    out = predict_log_returns(model, scaler, windows)
    with torch.no_grad():
        raw = model(torch.from_numpy(scaler.transform(windows[:, -20:]))).numpy()
    np.testing.assert_allclose(out, raw * np.asarray(scaler.target_scale)[None, :, None], rtol=1e-6)
    with pytest.raises(ValueError, match="expected windows"):
        predict_log_returns(model, scaler, windows[:, :10])


def test_child_names_use_the_validated_ticker() -> None:
    assert child_name(" aapl ") == "stockq-child-AAPL"
    assert child_name("^dji") == "stockq-child-^DJI"
    assert child_name("BRK-B") == "stockq-child-BRK-B"
    with pytest.raises(InvalidTicker):
        child_name("../etc")
