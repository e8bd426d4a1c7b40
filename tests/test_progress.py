"""The job record's progress (contract C1): the builder in workers/progress.py, then one real Celery worker
training a child whose parent must be trained first, its record sampled while it runs (Redis DBs 10/11)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ml.config import EvaluationConfig, PanelModelConfig
from ml.evaluation.neural import GlobalRecipe
from ml.evaluation.walk_forward import walk_forward
from ml.registry.mlflow_registry import ModelRegistry
from ml.tickers import PARENT_NAME, child_name
from ml.training.panel import build_panel
from tests.conftest import fresh_settings
from tests.procs import FAST_TRAINING, Proc, start_worker, wait_until
from tests.synthetic_panel import garch_factor_panel
from workers.jobs import JobRegistry
from workers.progress import LOSSES_CAP, Progress, epoch_label, sig6

TRAINING = ["ingest", "select", "refit"]


def test_a_training_phase_counts_its_own_epochs_with_labels_that_say_where_they_come_from() -> None:
    p = Progress.carried_over(None, TRAINING)
    first = p.enter("ingest", "ingest 0/2 tickers", steps=2)
    assert {k: first[k] for k in ("phase", "step", "steps", "phase_index", "phases")} == {
        "phase": "ingest", "step": 0, "steps": 2, "phase_index": 1, "phases": 3,
    }  # fmt: skip
    assert p.advance(2, "ingest 2/2 tickers")["step"] == 2
    start = p.training_phase("select", 8)
    assert (start["phase"], start["step"], start["steps"], start["phase_index"]) == ("select", 0, 8, 2)
    value = p.epoch(3, 8, 0.123456789, 0.25, 1.5)
    assert value["label"] == "select epoch 3/8" and value["step"] == 3
    assert (value["epoch"], value["epochs"], value["loss"], value["val_loss"]) == (3, 8, 0.123457, 0.25)
    refit = p.training_phase("refit", 4)
    assert refit["label"] == "refit epoch 0/4 (epochs from the selection's early stop)"
    assert (refit["phase_index"], refit["phases"], refit["step"], refit["steps"]) == (3, 3, 0, 4)
    assert p.epoch(2, 4, 0.1, 0.2, 1.0)["label"] == "refit epoch 2/4 (epochs from the selection's early stop)"
    assert epoch_label("parent_select", 1, 3) == "parent: select epoch 1/3"
    # A refit of no epochs (the starting weights won the selection) is done as soon as it begins.
    none = Progress([]).training_phase("refit", 0)
    assert (none["step"], none["steps"]) == (1, 1) and "no epochs" in none["label"]


def test_a_parent_trained_first_joins_the_plan_before_the_childs_own_phases() -> None:
    p = Progress.carried_over(None, TRAINING)
    p.enter("ingest", "ingest 0/2 tickers", steps=2)
    p.expect("parent_select", "parent_refit")
    value = p.training_phase("parent_select", 3)
    assert (value["phase_index"], value["phases"]) == (2, 5)
    assert p.training_phase("parent_refit", 2)["label"].startswith("parent: refit epoch 0/2")
    assert p.planned == ["ingest", "parent_select", "parent_refit", "select", "refit"]
    waiting = Progress.carried_over(None, TRAINING)
    assert waiting.enter("waiting_for_parent", "waiting")["phase_index"] == 2
    assert waiting.planned == ["ingest", "waiting_for_parent", "select", "refit"]


def test_the_step_never_goes_back_within_a_phase_and_a_resumed_attempt_continues_its_curve() -> None:
    p = Progress.carried_over(None, TRAINING)
    p.training_phase("select", 5)
    for epoch in (1, 2, 3):
        p.epoch(epoch, 5, 1.0 / epoch, 2.0 / epoch, 0.1)
    assert p.advance(1, "a late report")["step"] == 3  # a stale step cannot pull the bar back
    record = p.epoch(3, 5, 0.3, 0.6, 0.1)  # the same epoch reported twice: one entry
    assert [r["epoch"] for r in record["losses"]] == [1, 2, 3]

    # The next attempt reads the record, resumes the checkpoint of epoch 2 and runs epoch 3 again.
    again = Progress.carried_over(record, TRAINING)
    steps = [again.training_phase("select", 5)["step"], again.resumed(2)["step"]]
    assert again.current["label"] == "select epoch 2/5 (resumed from a checkpoint)"
    for epoch in (3, 4):
        steps.append(again.epoch(epoch, 5, 0.5, 0.5, 0.1)["step"])
    assert steps[1:] == sorted(steps[1:]) == [2, 3, 4]
    losses = again.epoch(5, 5, 0.4, 0.4, 0.1)["losses"]
    assert [(r["phase"], r["epoch"]) for r in losses] == [("select", e) for e in (1, 2, 3, 4, 5)]
    assert losses[2]["loss"] == 0.5  # epoch 3 as the resumed attempt ran it


def test_the_losses_keep_the_newest_epochs_rounded_and_null_where_a_loss_diverged() -> None:
    p = Progress([])
    p.training_phase("select", 600)
    for epoch in range(1, 601):
        value = p.epoch(epoch, 600, float("nan") if epoch == 600 else 1 / 3, 2 / 3, 0.5)
    losses = value["losses"]
    assert len(losses) == LOSSES_CAP and losses[0]["epoch"] == 600 - LOSSES_CAP + 1
    assert losses[-1] == {"phase": "select", "epoch": 600, "loss": None, "val_loss": 0.666667}
    assert value["loss"] is None and sig6(1234567.891) == 1234570.0 and sig6(float("inf")) is None


def test_a_walk_forward_reports_each_origin_then_each_epoch_of_its_fit() -> None:
    panel = build_panel(garch_factor_panel(n_tickers=2, years=4, seed=3))
    model = PanelModelConfig(epochs=2, warm_epochs=1, hidden=8, stride=4, patience=5)
    config = EvaluationConfig(first_year=2003, model=model, bootstrap_reps=50)
    events: list[tuple[str, int, int]] = []
    recipe = GlobalRecipe("global", model, on_epoch=lambda e, n, *_: events.append(("epoch", e, n)))
    walk_forward(panel, [recipe], config, on_progress=lambda _, k, of: events.append(("origin", k, of)))
    # The burn-in origin trains from scratch (2 epochs), the next one warm (1 epoch).
    assert events == [("origin", 1, 2), ("epoch", 1, 2), ("epoch", 2, 2), ("origin", 2, 2), ("epoch", 1, 1)]


# -- end to end ----------------------------------------------------------------------------------------
FINAL = {"succeeded", "failed", "cancelled"}
CHILD_PHASES = ["ingest", "parent_select", "parent_refit", "select", "refit"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = fresh_settings(tmp_path_factory.mktemp("progress"), 10, 11, train_history_days=700)
    from webapp import create_app  # here: the builder's tests above need no web app

    worker: Proc | None = None
    try:
        worker = start_worker(settings, "training,inference", "progress", **FAST_TRAINING)
        yield {"settings": settings, "client": create_app(settings).test_client()}
    finally:
        if worker is not None:
            worker.stop()


def _sample(jobs: JobRegistry, job_id: str, seen: list[dict[str, Any]], stop: threading.Event) -> None:
    """Every distinct progress the record shows until the job ends (read straight from Redis)."""
    while not stop.is_set():
        job = jobs.get(job_id)
        if job is not None and job.progress and (not seen or job.progress != seen[-1]):
            seen.append(job.progress)
        stop.wait(0.02)


@pytest.mark.slow
def test_a_child_training_its_parent_first_shows_its_phases_in_order_then_its_forecast(live: dict) -> None:
    settings, client = live["settings"], live["client"]
    jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), settings.job_retention_s)
    r = client.post("/train", json={"ticker": "AAPL", "strategy": "fine_tune", "epochs": 2})
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["job_id"]
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(jobs, job_id, seen, stop), daemon=True)
    sampler.start()
    try:
        job = wait_until(lambda: (j := client.get(f"/status/{job_id}").get_json())["status"] in FINAL and j,
                         150, "the training to end")  # fmt: skip
    finally:
        stop.set()
        sampler.join(5)
    assert job["status"] == "succeeded", job
    seen.append(job["progress"])

    # Phases in the order planned, each entered once, its place among them and its bar never going back.
    order = [p["phase"] for i, p in enumerate(seen) if i == 0 or p["phase"] != seen[i - 1]["phase"]]
    assert len(order) == len(set(order)) and order == [c for c in CHILD_PHASES if c in order], order
    assert {"parent_select", "select"} <= set(order), order
    for p in seen:
        assert 0 <= p["step"] <= p["steps"] and p["steps"] >= 1 and isinstance(p["label"], str), p
        # The parent's phases join the plan once the job finds it must train the parent (after ingesting).
        planned = TRAINING if p["phase"] == "ingest" else CHILD_PHASES
        assert p["phase_index"] == planned.index(p["phase"]) + 1 and p["phases"] == len(planned), p
    for a, b in itertools.pairwise(seen):
        if a["phase"] == b["phase"]:
            assert b["step"] >= a["step"], (a, b)
    parent_labels = [p["label"] for p in seen if p["phase"].startswith("parent_")]
    assert parent_labels and all(label.startswith("parent: ") for label in parent_labels)
    for p in seen:
        if p["phase"].endswith("refit") and "epoch" in p:
            assert p["label"].endswith("(epochs from the selection's early stop)"), p

    # One loss per epoch run, per phase: the child's from its result, the parent's from its card.
    result, losses = job["result"], job["progress"]["losses"]
    epochs_of = {ph: [r["epoch"] for r in losses if r["phase"] == ph] for ph in CHILD_PHASES[1:]}
    for phase in ("select", "refit"):
        assert epochs_of[phase] == [r["epoch"] for r in result["history"] if r["phase"] == phase], losses
    card = ModelRegistry(settings.tracking_uri, settings.artifact_root).model_card(PARENT_NAME, "1")
    assert epochs_of["parent_select"] == list(range(1, card["selection"]["epochs_run"] + 1)), losses
    assert epochs_of["parent_refit"] == list(range(1, card["selection"]["best_epoch"] + 1)), losses
    assert all(isinstance(r["loss"], float) and isinstance(r["val_loss"], float) for r in losses)

    # Its own version's forecast, the closes the chart draws before it, and whether it is the champion.
    forecast = result["forecast"]
    used = forecast["model"]
    assert (used["name"], used["version"]) == (child_name("AAPL"), result["version"])
    assert len(forecast["forecast"]) == 7 and "recent_closes" not in forecast
    closes = result["recent_closes"]
    assert 0 < len(closes) <= 60 and closes[-1]["date"] == forecast["as_of"] == "2022-12-28"
    assert closes[-1]["close"] == pytest.approx(forecast["last_close"], rel=1e-5)
    assert result["champion"] is True  # the first child is promoted provisionally

    # The serving path forecasts with the same version on the same day: the same numbers, the same closes.
    r = client.post("/predict-child?wait=10", json={"ticker": "AAPL"})
    assert r.status_code == 200 and r.get_json()["status"] == "succeeded", r.get_json()
    served = r.get_json()["result"]
    assert served["model"] == forecast["model"] and served["recent_closes"] == closes
    assert [d["p50"] for d in served["forecast"]] == pytest.approx([d["p50"] for d in forecast["forecast"]])
