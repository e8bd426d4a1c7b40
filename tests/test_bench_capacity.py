"""bench/capacity.py's arithmetic on a made-up job (no timing is measured here): a job taken apart and
rebuilt at its own settings gives back its wall time, and the bounds follow the early-stopping rule."""

from __future__ import annotations

import pytest

from bench import capacity

# A job whose selection trained on 1,000 samples and validated 200 for 5 epochs (best at 3, patience 2),
# then refit on all 1,300 samples for 3 epochs: 0.01 s per trained and 0.002 s per evaluated sample, 0.5 s
# of checkpoint per epoch, 4 s fixed.
C, V, DELTA, FIXED = 0.01, 0.002, 0.5, 4.0
N_TRAIN, N_VAL, N_ALL = 1000, 200, 1300
SELECT_S = C * N_TRAIN + V * N_VAL  # 10.4
REFIT_S = (C + V) * N_ALL  # 15.6
HISTORY = [{"epoch": e, "seconds": SELECT_S, "phase": "select"} for e in range(1, 6)] + [
    {"epoch": e, "seconds": REFIT_S, "phase": "refit"} for e in range(1, 4)
]
WALL = FIXED + 5 * (SELECT_S + DELTA) + 3 * (REFIT_S + DELTA)  # 106.8
RECORD = {
    "started_at": 1000.0,
    "finished_at": 1000.0 + WALL,
    "progress": {"epoch_seconds": REFIT_S + DELTA},
    "result": {"history": HISTORY},
}
CARD = {"selection": {"samples": [N_TRAIN, N_VAL]}, "refit": {"samples": N_ALL}}


def test_decompose_recovers_the_parts() -> None:
    cost = capacity.decompose(RECORD, CARD)
    assert cost.wall == pytest.approx(106.8)
    assert cost.c == pytest.approx(C)
    assert cost.v == pytest.approx(V)
    assert cost.delta == pytest.approx(DELTA)
    assert cost.fixed == pytest.approx(FIXED)
    assert (cost.select_epochs, cost.refit_epochs) == (5, 3)
    assert (cost.select_epoch_s, cost.refit_epoch_s) == (pytest.approx(10.4), pytest.approx(15.6))


def test_rebuilt_at_its_own_settings_gives_its_wall() -> None:
    cost = capacity.decompose(RECORD, CARD)
    own = capacity.Target(epochs=12, patience=2, n_train=N_TRAIN, n_val=N_VAL, n_all=N_ALL)
    assert capacity.job_seconds(cost, own, best_epoch=3) == pytest.approx(WALL)
    # The budget cuts the selection short: best at 11 of 12 runs 12 selection epochs, not 13.
    cut = FIXED + 12 * (SELECT_S + DELTA) + 11 * (REFIT_S + DELTA)
    assert capacity.job_seconds(cost, own, best_epoch=11) == pytest.approx(cut)


def test_one_epoch_refit_has_no_delta() -> None:
    """A one-epoch refit's progress spans the change of phase: no delta is read from it."""
    history = [*HISTORY[:3], {**HISTORY[5]}]
    wall = FIXED + 3 * SELECT_S + REFIT_S
    record = {**RECORD, "finished_at": 1000.0 + wall, "result": {"history": history},
              "progress": {"epoch_seconds": 99.0}}  # fmt: skip
    cost = capacity.decompose(record, CARD)
    assert cost.delta == 0.0
    assert cost.progress_epoch_s is None
    assert cost.fixed == pytest.approx(FIXED)


def test_noise_falls_back_to_one_rate() -> None:
    """A refit epoch quicker than its samples allow (noise) would make v negative: one rate for both."""
    history = [{**h, "seconds": 10.0 if h["phase"] == "select" else 8.0} for h in HISTORY]
    cost = capacity.decompose({**RECORD, "result": {"history": history}}, CARD)
    touched = 5 * (N_TRAIN + N_VAL) + 3 * 2 * N_ALL  # 13,800 sample-epochs in 74 s
    assert cost.c == cost.v == pytest.approx(74.0 / touched)


def test_bounds_and_workers() -> None:
    cost = capacity.decompose(RECORD, CARD)
    target = capacity.Target(epochs=20, patience=2, n_train=8000, n_val=500, n_all=8600)
    b = capacity.bounds(cost, target)
    select = C * 8000 + V * 500 + DELTA  # 81.5 s
    refit = (C + V) * 8600 + DELTA  # 103.7 s
    # fewest: the starting weights win, so 2 selection epochs and no refit; most: 20 of each.
    assert b["low_s"] == pytest.approx(FIXED + 2 * select)
    assert b["low_s"] == pytest.approx(167.0)
    assert b["high_s"] == pytest.approx(FIXED + 20 * (select + refit))
    assert b["high_s"] == pytest.approx(3708.0)
    assert capacity.per_hour(b["high_s"]) == pytest.approx(3600 / 3708)
    assert capacity.workers_for(100, 3600.0, 6) == 17  # 100 h of work in 6 h
    assert capacity.workers_for(6, 3600.0, 6) == 1


def test_mean_cost_rounds_counts() -> None:
    one = capacity.decompose(RECORD, CARD)
    two = capacity.decompose({**RECORD, "finished_at": RECORD["finished_at"] + 2.0}, CARD)
    mean = capacity.mean_cost([one, two])
    assert mean.fixed == pytest.approx(FIXED + 1.0)
    assert mean.wall == pytest.approx(WALL + 1.0)
    assert mean.n_all == N_ALL and mean.select_epochs == 5


def test_a_job_whose_selection_kept_the_starting_weights_has_no_refit() -> None:
    """Best epoch 0 (the parent's weights won): `patience` selection epochs, no refit epoch; one rate."""
    history = HISTORY[:2]
    wall = FIXED + 2 * SELECT_S
    record = {**RECORD, "finished_at": 1000.0 + wall, "result": {"history": history},
              "progress": {"epoch_seconds": 99.0}}  # fmt: skip
    cost = capacity.decompose(record, CARD)
    assert cost.refit_epochs == 0 and cost.refit_epoch_s is None and cost.delta == 0.0
    assert cost.c == cost.v == pytest.approx(SELECT_S / (N_TRAIN + N_VAL))
    assert cost.fixed == pytest.approx(FIXED)
    own = capacity.Target(epochs=12, patience=2, n_train=N_TRAIN, n_val=N_VAL, n_all=N_ALL)
    assert capacity.job_seconds(cost, own, best_epoch=0) == pytest.approx(wall)
    assert capacity.bounds(cost, own)["low_s"] == pytest.approx(wall)
