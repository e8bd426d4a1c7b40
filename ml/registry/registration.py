"""After the loop: the model card, registration (once per run) and the champion decision under the lock.

Two evaluations lead here. `holdout`: test metrics on the chronological split's test windows (a plain
library training). `walk_forward`: the backtest ran first, the model was then refit on every sample with a
known target, and its card inherits the backtest (baselines, skill, calibration, per-window losses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml.evaluation.evaluate import evaluate
from ml.evaluation.promotion import holdout_decision, walk_forward_decision
from ml.features.technical import MODEL_FEATURES
from ml.model.lstm import QuantileLSTM, predict_log_returns

if TYPE_CHECKING:
    from ml.config import TrainHooks
    from ml.registry.mlflow_registry import ModelRegistry, TrainingRun
    from ml.training.dataprep import Prepared
    from ml.training.job import TrainingJob
    from ml.training.loop import FitResult

ROLE_TAG = "role"  # "served" or "backtest_parent" (registered, never promoted)
TRAINED_UNTIL_TAG = "trained_until"
DATA_UNTIL_TAG = "data_until"


def _common_card(job: TrainingJob, prep: Prepared, model: QuantileLSTM, fitted: FitResult) -> dict[str, Any]:
    return {
        "name": job.name,
        "kind": job.kind,
        "strategy": job.strategy,
        "ticker": job.ticker,
        "parent_version": job.parent.version if job.parent else None,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "window": model.spec.window,
        "horizon": model.spec.horizon,
        "features": list(MODEL_FEATURES),
        "epochs_run": fitted.epochs_run,
        "best_val_loss": fitted.best_val_loss,
        "architecture": model.spec.to_dict(),
        "scaler_fit": [prep.scaler.fit_start, prep.scaler.fit_end],
    }


def finish(
    job: TrainingJob,
    run: TrainingRun,
    prep: Prepared,
    model: QuantileLSTM,
    fitted: FitResult,
    registry: ModelRegistry,
    hooks: TrainHooks,
    backtest: dict[str, Any] | None,
) -> dict[str, Any]:
    """Card, registration, then (for served models) the champion decision; the training's summary."""
    card = _common_card(job, prep, model, fitted)
    run.log_metrics({"best_val_loss": fitted.best_val_loss, "epochs_run": fitted.epochs_run})
    if backtest is None:
        x_test, y_test = prep.data.windows[prep.split.test], prep.data.targets[prep.split.test]
        drift = float(prep.data.targets[prep.split.train, 0].mean())
        test = evaluate(y_test, predict_log_returns(model, prep.scaler, x_test), drift_per_day=drift)
        _log_test(run, test)
        last_target = prep.split.train.stop - 1 + prep.data.window - 1 + prep.data.targets.shape[1]
        card |= {
            "evaluation": "holdout",
            "split": prep.split.ranges(prep.data),
            "test": test,
            "trained_until": prep.data.dates[last_target].date().isoformat(),
        }
    else:
        card |= _walk_forward_card(job, prep, backtest)
        run.log_metrics(_backtest_metrics(backtest))
    role = "backtest_parent" if job.backtest_parent else "served"
    version_tags = {
        "kind": job.kind,
        "strategy": str(job.strategy),
        "ticker": job.ticker,
        ROLE_TAG: role,
        TRAINED_UNTIL_TAG: card["trained_until"],
        # The last day its training could see (validation rows included): how recent its knowledge is. A
        # holdout training stops learning well before it (`trained_until`).
        DATA_UNTIL_TAG: prep.data.dates[-1].date().isoformat(),
        "arch": arch_key(model.spec.to_dict()),
    }
    version = run.register(job.name, model, prep.scaler, card, version_tags)
    if job.backtest_parent:
        promote, decision = False, f"registered as a backtest parent trained until {card['trained_until']}"
        record: dict[str, Any] = {"promote": False, "text": decision}
    else:
        records: list[dict[str, Any]] = []

        def decide(current: str | None) -> tuple[bool, str]:
            if backtest is None:
                found = holdout_decision(registry, job.name, current, card["test"], x_test, y_test, drift)
                records.append({"promote": found[0], "text": found[1]})
            else:
                champion = None if current is None else registry.model_card(job.name, current)
                records.append(walk_forward_decision(job.name, current, backtest, champion))
            return records[-1]["promote"], records[-1]["text"]

        lock = hooks.champion_lock(job.name) if hooks.champion_lock is not None else None
        promote, decision = registry.promote(job.name, version, decide, lock)
        record = records[-1] if records else {"promote": promote, "text": decision}  # a retry: as recorded
    run.log_card({**card, "version": version, "champion_decision": decision, "decision": record})
    run.set_tags({"stockq.champion": str(promote).lower(), "stockq.decision": decision})
    summary = {
        "name": job.name,
        "version": version,
        "run_id": run.run_id,
        "kind": job.kind,
        "strategy": job.strategy,
        "ticker": job.ticker,
        "parent_version": card["parent_version"],
        "epochs_run": fitted.epochs_run,
        "best_val_loss": fitted.best_val_loss,
        "trained_until": card["trained_until"],
        "champion": promote,
        "decision": decision,
        "decision_record": record,
    }
    if backtest is None:
        return {**summary, "test": card["test"]}
    return {**summary, "verdict": backtest["verdict"], "coverage": backtest["coverage"]}


def arch_key(arch: dict[str, Any]) -> str:
    return "-".join(f"{k}{arch[k]}" for k in ("hidden", "layers", "window", "horizon"))


def _walk_forward_card(job: TrainingJob, prep: Prepared, backtest: dict[str, Any]) -> dict[str, Any]:
    data = prep.data
    n = len(data.targets)
    metrics = backtest["metrics"]
    return {
        "evaluation": "walk_forward",
        # The date of the last target the refit learned from (the last row), and the decision day of
        # that sample: the last day with a known 7-day target.
        "trained_until": data.dates[-1].date().isoformat(),
        "last_decision_day": data.sample_date(n - 1),
        "refit": {
            "samples": n,
            "first_decision_day": data.sample_date(0),
            "epochs": int(backtest["refit_epochs"]),
        },
        "parents": None
        if job.parent is None
        else {
            "served": f"{job.parent.name} v{job.parent.version}",
            "backtest": (backtest.get("parent") or {}).get("label"),
            "backtest_trained_until": (backtest.get("parent") or {}).get("trained_until"),
        },
        "backtest": backtest,
        "baselines": {k: v for k, v in metrics.items() if k not in ("model", "model_cqr")},
        "skill": backtest["skill"]["model_cqr"],
        "verdict": backtest["verdict"],
        "calibration": backtest["serving_calibration"],
        "coverage": backtest["coverage"],
    }


def _log_test(run: TrainingRun, test: dict[str, Any]) -> None:
    run.log_metrics(
        {f"test_{k}": v for k, v in test.items() if k != "per_horizon"}
        | {
            f"test_h{r['horizon']}_{k}": v
            for r in test["per_horizon"]
            for k, v in r.items()
            if k != "horizon"
        }
    )


def _backtest_metrics(backtest: dict[str, Any]) -> dict[str, float]:
    m = backtest["metrics"]["model_cqr"]
    v = backtest["verdict"]
    return {
        "backtest_pinball": m["pinball"],
        "backtest_coverage_80": m["coverage_80"],
        "backtest_skill": v["skill"],
        "backtest_skill_lo": v["lo"],
        "backtest_skill_hi": v["hi"],
        "backtest_seconds": backtest["seconds"],
    }
