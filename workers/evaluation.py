"""The `evaluate` job: the served recipe's walk-forward evaluation over the stored panel
(ml.evaluation.run.evaluate_panel), on the training queue like a training, under its own time limit.

It stops between origins when cancelled and reports each origin, and each epoch of its fit, as progress
(walk_forward, then baselines). The evaluation it records in MLflow (summary, per-window losses) is what
cards quote and promotion reads; the job's result is its headline. Once recorded, every worker's warm
models are dropped (workers/model_cache.py), so forecasts apply the new calibration and cards quote the
new verdict.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from stockq.settings import Settings
from workers.execution import run_job
from workers.job_context import JobContext
from workers.progress import sig6

# Stay in the MLflow run and on the cards: the job record carries the headline only.
LEFT_ON_THE_CARD = ("per_ticker", "calibration")


def evaluation_config(
    s: Settings, universe: str | None, first_year: int | None, refit_months: int | None
) -> Any:
    """What the request left out comes from the worker's settings (as a training's epochs do)."""
    from ml.config import EvaluationConfig, PanelModelConfig

    chosen = {"epochs": s.evaluate_epochs, "warm_epochs": s.evaluate_warm_epochs, "stride": s.evaluate_stride}
    model = PanelModelConfig(**{k: v for k, v in chosen.items() if v is not None})
    return EvaluationConfig(
        first_year=first_year or s.evaluate_first_year, refit_months=refit_months or s.evaluate_refit_months,
        universe=universe or s.parent_universe, model=model, bootstrap_reps=s.evaluate_bootstrap_reps,
    )  # fmt: skip


def _origin_label(k: int, of: int) -> str:
    return f"walk-forward origin {k}/{of}"


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in LEFT_ON_THE_CARD}


def _limits() -> tuple[int, int]:
    from workers import settings

    limit = settings.evaluate_time_limit_s
    return limit, limit + 60


SOFT_LIMIT, HARD_LIMIT = _limits()


@shared_task(name="stockq.evaluate", acks_late=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def evaluate(
    job_id: str,
    tickers: list[str] | None = None,
    universe: str | None = None,
    first_year: int | None = None,
    refit_months: int | None = None,
    attempt: int = 1,
) -> None:
    def work(ctx: JobContext) -> Any:
        from ml.evaluation.run import evaluate_panel

        config = evaluation_config(ctx.rt.settings, universe, first_year, refit_months)
        ctx.stage("evaluate")
        ctx.plan("walk_forward", "baselines")
        origin: list[int] = [0, 1]  # the origin running (1-based) and their count

        def on_progress(text: str, k: int, of: int) -> None:
            # `text` names the step ("origin 2021-01-04 · global", then "baselines"); k of `of` is running.
            if text == "baselines":
                ctx.begin("baselines", "baselines on the same decisions")
                return
            origin[:] = [k, of]
            if ctx.current_phase == "walk_forward":
                ctx.advance(k - 1, _origin_label(k, of), detail=text)
            else:
                ctx.begin("walk_forward", _origin_label(k, of), steps=of, step=k - 1, detail=text)

        def on_epoch(epoch: int, epochs: int, loss: float, val_loss: float) -> None:
            k, of = origin
            ctx.advance(k - 1, f"{_origin_label(k, of)} · epoch {epoch}", epoch=epoch, epochs=epochs,
                        loss=sig6(loss), val_loss=sig6(val_loss))  # fmt: skip

        summary = evaluate_panel(
            ctx.rt.store, ctx.rt.registry, config, tickers=tickers, should_stop=ctx.should_stop,
            on_progress=on_progress, on_epoch=on_epoch,
        )  # fmt: skip
        ctx.rt.evaluated(summary["run_id"])  # the warm models of every worker quote it from now on
        return headline(summary)

    run_job(job_id, attempt, "evaluate", work)
