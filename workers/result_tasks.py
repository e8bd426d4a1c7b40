"""Tasks whose results are bytes kept on the evicting cache Redis, not in the job record: charts and batch
forecasts (workers/jobs/specs.py `result_on_cache`)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from workers.execution import JobContext, run_job
from workers.jobs import keys


@shared_task(name="stockq.predict_batch", acks_late=True, soft_time_limit=120, time_limit=150)
def predict_batch(job_id: str, tickers: list[str], model: str = "auto", attempt: int = 1) -> None:
    def work(ctx: JobContext) -> Any:
        from ml.serving.predict import predict_many

        ctx.stage("forecast")
        return predict_many(
            tickers, model, store=ctx.rt.store, registry=ctx.rt.registry, get_model=ctx.rt.models.get
        )

    run_job(job_id, attempt, "predict_batch", work)


@shared_task(name="stockq.chart", acks_late=True, soft_time_limit=60, time_limit=90)
def chart(job_id: str, ticker: str, fmt: str = "png", attempt: int = 1) -> None:
    def work(ctx: JobContext) -> Any:
        from ml.serving.chart import forecast_chart

        ctx.stage("forecast")
        model = "auto" if ctx.rt.has_model(ticker, "auto") else "parent"
        forecast = ctx.rt.forecast(ticker, model)
        history = ctx.rt.store.stored_daily(forecast["ticker"])
        closes = history.set_index(history["event_timestamp"].dt.tz_convert(None))["close"]
        ctx.stage("render")
        image = forecast_chart(closes, forecast, fmt)
        # The bytes live beside the record for as long as a chart job does, never inside it.
        ctx.rt.redis.set(keys.chart(ctx.job_id), image, ex=ctx.rt.settings.short_job_retention_s)
        return {
            "mimetype": "image/png" if fmt == "png" else "image/svg+xml",
            "bytes": len(image),
            "as_of": forecast["as_of"],
            "model": forecast["model"],
        }

    run_job(job_id, attempt, "chart", work)
