"""bench/capacity.py's arithmetic on a made-up job (no timing is measured here): a job taken apart and
rebuilt at its own settings gives back its wall time, and the bounds follow the early-stopping rule."""

from __future__ import annotations

import pytest

from bench import capacity

# A job of 2 origins (100 and 120 training rows, 3 epochs each) and a 3-epoch refit on 150 rows at
# 0.01 s per row-epoch; 0.5 s of checkpoint per refit epoch, 2 s per origin beyond its epochs, 1 s of
# comparison, 4 s fixed.
C, DELTA = 0.01, 0.5
ORIGINS = [{"n_train": n, "epochs_run": 3, "seconds": 3 * C * n + 2.0} for n in (100, 120)]
BACKTEST_S = sum(o["seconds"] for o in ORIGINS) + 1.0
REFIT = [{"epoch": e, "seconds": C * 150} for e in (1, 2, 3)]
WALL = 4.0 + BACKTEST_S + 3 * (C * 150 + DELTA)
RECORD = {
    "started_at": 1000.0,
    "finished_at": 1000.0 + WALL,
    "progress": {"epoch_seconds": C * 150 + DELTA},
    "result": {"history": REFIT, "backtest_seconds": BACKTEST_S},
}
CARD = {
    "refit": {"samples": 150},
    "backtest": {"origins": ORIGINS, "config": {"bootstrap_reps": 100, "origins": 2, "step": 21}},
}


def test_decompose_recovers_the_parts() -> None:
    cost = capacity.decompose(RECORD, CARD)
    assert cost.c == pytest.approx(C)
    assert cost.delta == pytest.approx(DELTA)
    assert cost.origin_overhead == pytest.approx(2.0)
    assert cost.compare == pytest.approx(1.0)
    assert cost.fixed == pytest.approx(4.0)


def test_rebuilt_at_its_own_settings_gives_its_wall() -> None:
    cost = capacity.decompose(RECORD, CARD)
    own = capacity.Target(epochs=3, backtest_epochs=3, patience=5, step=21, reps=100, rows=150,
                          origin_rows=[100, 120])  # fmt: skip
    assert capacity.job_seconds(cost, own, origin_epochs=3, refit_epochs=3) == pytest.approx(WALL)


def test_bounds_and_workers() -> None:
    cost = capacity.decompose(RECORD, CARD)
    target = capacity.Target(epochs=20, backtest_epochs=20, patience=5, step=21, reps=1000, rows=1000,
                             origin_rows=[800] * 8)  # fmt: skip
    b = capacity.bounds(cost, target)
    # fewest epochs: 6 per origin (best at 1, then patience 5) and a 1-epoch refit; most: 20 each.
    compare = 1.0 * 10 * (8 * 21 / 42)
    assert b["low_s"] == pytest.approx(4.0 + (C * 1000 + DELTA) + 8 * (6 * C * 800 + 2.0) + compare)
    assert b["high_s"] == pytest.approx(4.0 + 20 * (C * 1000 + DELTA) + 8 * (20 * C * 800 + 2.0) + compare)
    assert capacity.workers_for(100, 3600.0, 6) == 17  # 100 h of work in 6 h
    assert capacity.workers_for(6, 3600.0, 6) == 1
