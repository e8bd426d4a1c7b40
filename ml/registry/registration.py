"""After the loop: the model card, registration (once per run) and the champion decision under the lock.

The card says what the served model is (architecture, inputs, universe, device), how it was trained (the
selection phase's early stopping, then the refit on every sample for that many epochs) and which
evaluation recipe it belongs to; the evaluation itself is attached when a card is read
(ml.registry.cards), so a card always shows the latest one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml.evaluation.promotion import card_verdict, decide
from ml.registry.cards import dm_of, skill_of
from ml.training.recipes import recipe_of

if TYPE_CHECKING:
    from ml.config import TrainHooks
    from ml.model.scaler import Scaler
    from ml.model.vol_lstm import VolQuantileLSTM
    from ml.registry.mlflow_registry import ModelRegistry, TrainingRun
    from ml.training.dataprep import Plan
    from ml.training.job import TrainingJob
    from ml.training.loop import FitResult

TRAINED_UNTIL_TAG = "trained_until"


def _refit_text(job: TrainingJob, n: int, epochs: int, seed: int) -> str:
    start = (
        f"from {job.parent.name} v{job.parent.version}'s weights"
        if job.parent is not None
        else f"from random weights (seed {seed})"
    )
    return (
        f"refit on all {n} samples for {epochs} epochs (the best epoch count of early stopping on the last "
        f"validation days), {start}"
    )


def model_card(
    job: TrainingJob, plan: Plan, model: VolQuantileLSTM, scaler: Scaler, selection: dict[str, Any],
    refit: FitResult, device: str, seed: int,
) -> dict[str, Any]:  # fmt: skip
    spec, panel, samples = model.spec, plan.panel, plan.samples
    ranges = samples.ranges(panel)
    return {
        "name": job.name,
        "kind": job.kind,
        "strategy": job.strategy,
        "ticker": job.ticker,
        "recipe": recipe_of(job.strategy),
        "universe": plan.universe,
        "parent_version": job.parent.version if job.parent else None,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device,
        "window": spec.window,
        "horizon": spec.horizon,
        "levels": list(spec.levels),
        "inputs": list(spec.inputs),
        "tickers": list(spec.tickers),
        "architecture": spec.to_dict(),
        "learning_rate": plan.lr,
        "selection": {
            "train": ranges["train"],
            "val": ranges["val"],
            "samples": [len(samples.train), len(samples.val)],
            "epochs_run": selection["epochs_run"],
            "best_epoch": selection["best_epoch"],
            "best_val_loss": selection["best_val_loss"],
        },
        "refit": {
            "decisions": ranges["all"],
            "samples": len(samples.all),
            "epochs": refit.epochs_run,
            "text": _refit_text(job, len(samples.all), refit.epochs_run, seed),
        },
        "epochs_run": refit.epochs_run,
        "best_val_loss": selection["best_val_loss"],
        # The last close any target reached: how recent the model's knowledge is.
        "trained_until": panel.dates[-1].date().isoformat(),
        "last_decision_day": ranges["all"][1],
        "scaler_fit": [scaler.fit_start, scaler.fit_end],
    }


def finish(
    job: TrainingJob, run: TrainingRun, plan: Plan, model: VolQuantileLSTM, scaler: Scaler,
    selection: dict[str, Any], refit: FitResult, registry: ModelRegistry, hooks: TrainHooks, device: str,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Card, registration, then the champion decision; the training's summary."""
    card = model_card(job, plan, model, scaler, selection, refit, device, seed)
    run.log_metrics({"best_val_loss": selection["best_val_loss"], "best_epoch": selection["best_epoch"],
                     "refit_epochs": refit.epochs_run})  # fmt: skip
    version_tags = {
        "kind": job.kind,
        "strategy": str(job.strategy),
        "ticker": job.ticker,
        "recipe": card["recipe"],
        "universe": card["universe"],
        TRAINED_UNTIL_TAG: card["trained_until"],
    }
    version = run.register(job.name, model, scaler, card, version_tags)
    evaluation = registry.latest_evaluation(card["recipe"], card["universe"])
    records: list[dict[str, Any]] = []

    def decide_now(current: str | None) -> tuple[bool, str]:
        # What the version history shows (ml.registry.versions): the champion the decision looked at and
        # the evaluation figures it rests on, as they were then (a later evaluation changes the cards).
        figures = {"against_version": current, "dm": dm_of(evaluation), "skill": skill_of(evaluation)}
        records.append({**decide(job.name, version, current, evaluation), **figures})
        return records[-1]["promote"], records[-1]["text"]

    lock = hooks.champion_lock(job.name) if hooks.champion_lock is not None else None
    promote, decision = registry.promote(job.name, version, decide_now, lock)
    if records:
        registry.record_decision(job.name, version, records[-1])
    record = records[-1] if records else {"promote": promote, "text": decision}  # a retry: as recorded
    run.log_card({**card, "version": version, "champion_decision": decision, "decision": record})
    run.set_tags({"stockq.champion": str(promote).lower(), "stockq.decision": decision})
    return {
        "name": job.name,
        "version": version,
        "run_id": run.run_id,
        "kind": job.kind,
        "strategy": job.strategy,
        "ticker": job.ticker,
        "recipe": card["recipe"],
        "universe": card["universe"],
        "parent_version": card["parent_version"],
        "device": device,
        "epochs_run": refit.epochs_run,
        "best_epoch": selection["best_epoch"],
        "best_val_loss": selection["best_val_loss"],
        "trained_until": card["trained_until"],
        "champion": promote,
        "decision": decision,
        "decision_record": record,
        "verdict": card_verdict(evaluation),
    }
