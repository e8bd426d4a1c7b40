"""Tasks whose results are bytes kept on the evicting cache Redis, not in the job record: charts and batch
forecasts (workers/jobs/specs.py `result_on_cache`; workers/results.py keeps the bytes and the budget)."""

from __future__ import annotations

import json
from typing import Any

from celery import shared_task

from workers.execution import run_job
from workers.job_context import JobContext, jsonable
from workers.jobs import keys
from workers.results import JSON, ResultStore, rendered_chart_key


def _results(ctx: JobContext) -> ResultStore:
    return ResultStore.from_settings(ctx.rt.settings, ctx.rt.cache_redis)


@shared_task(name="stockq.predict_batch", acks_late=True, soft_time_limit=120, time_limit=150)
def predict_batch(job_id: str, tickers: list[str], model: str = "auto", attempt: int = 1) -> None:
    def work(ctx: JobContext) -> Any:
        from ml.serving.predict import predict_many

        ctx.stage("forecast")
        forecasts = predict_many(
            tickers, model, store=ctx.rt.store, registry=ctx.rt.registry, get_model=ctx.rt.models.get
        )
        data = json.dumps(jsonable(forecasts), separators=(",", ":")).encode()
        key = keys.result_bytes(ctx.job_id)
        return _results(ctx).put(ctx.owner, key, data, JSON, tickers=len(forecasts))

    run_job(job_id, attempt, "predict_batch", work)


@shared_task(name="stockq.chart", acks_late=True, soft_time_limit=60, time_limit=90)
def chart(job_id: str, ticker: str, fmt: str = "png", attempt: int = 1) -> None:
    def work(ctx: JobContext) -> Any:
        from ml.serving.chart import forecast_chart

        ctx.stage("forecast")
        model = "auto" if ctx.rt.has_model(ticker, "auto") else "parent"
        forecast = ctx.rt.forecast(ticker, model)
        results = _results(ctx)
        rendered = rendered_chart_key(forecast, fmt)
        image = results.read(rendered)
        reused = image is not None
        if image is None:
            ctx.stage("render")
            image = forecast_chart(ctx.rt.store.stored_closes(forecast["ticker"]), forecast, fmt)
            results.keep_rendered(rendered, image)
        # The job's own copy, charged to its owner (what the budget counts is what each tenant asked to
        # keep); the shared rendering may be evicted or replaced meanwhile.
        return results.put(
            ctx.owner, keys.chart(ctx.job_id), image, "image/png" if fmt == "png" else "image/svg+xml",
            as_of=forecast["as_of"], model=forecast["model"], reused=reused,
        )  # fmt: skip

    run_job(job_id, attempt, "chart", work)
