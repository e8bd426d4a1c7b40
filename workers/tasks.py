"""Thin Celery tasks: parse arguments, call ml/agent, report progress, return JSON-safe results.

Every task takes the job id first; the job record in Redis is the source of truth for clients.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from ml.errors import Cancelled, FeaturesMissing, ModelNotFound, StockqError
from ml.tickers import INDEX_TICKER, validate_ticker
from workers.counters import JOB_DURATION_BUCKETS
from workers.runtime import Runtime, get_runtime
from workers.singleflight import SingleFlight

log = logging.getLogger(__name__)

# A task returns DEFERRED when another task will finish its job (auto-training, single-flight waiters).
DEFERRED = object()


def _runtime() -> Runtime:
    from workers import app

    return get_runtime(app.conf.stockq_settings)


def jsonable(value: Any) -> Any:
    """kombu and our records take plain JSON: numpy scalars, arrays and dates are converted."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (date, datetime)):
            return obj.isoformat()
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    return _finite(json.loads(json.dumps(value, default=default)))


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null (a diverged loss must not break the record)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@dataclass
class JobContext:
    rt: Runtime
    job_id: str
    lock: SingleFlight | None = None

    def stage(self, stage: str) -> None:
        self.rt.jobs.set_stage(self.job_id, stage)
        if self.lock is not None:
            self.lock.refresh(self.job_id)

    def should_stop(self) -> bool:
        return self.rt.jobs.cancel_requested(self.job_id)

    def on_epoch(self, epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
        progress = {"epoch": epoch, "epochs": epochs, "loss": train_loss, "val_loss": val_loss}
        self.rt.jobs.set_progress(self.job_id, jsonable(progress))
        if self.lock is not None:
            self.lock.refresh(self.job_id)


def run_job(job_id: str, work: Callable[[JobContext], Any], job_type: str) -> None:
    """Run `work` for a job and record how it ended. Nothing escapes: a job never stays `running`
    because a result would not serialise or an error was unexpected."""
    rt = _runtime()
    if not rt.jobs.start(job_id):
        log.info("job %s is not runnable (cancelled, finished or unknown); skipped", job_id)
        return
    ctx = JobContext(rt, job_id)
    started = time.monotonic()
    result: Any = None
    try:
        result = work(ctx)
        if result is not DEFERRED:
            finish_ok(rt, job_id, job_type, jsonable(result))
    except Cancelled:
        if rt.jobs.mark_cancelled(job_id):
            rt.counters.incr("stockq_jobs_finished_total", f"{job_type},cancelled")
    except StockqError as exc:
        finish_failed(rt, job_id, job_type, exc.code, exc.message)
    except SoftTimeLimitExceeded:
        finish_failed(rt, job_id, job_type, "timeout", "the job ran past its time limit")
    except Exception as exc:
        log.exception("job %s failed", job_id)
        finish_failed(rt, job_id, job_type, "internal_error", f"{type(exc).__name__}: {exc}")
    finally:
        if result is not DEFERRED:
            rt.counters.observe(
                "stockq_job_duration_seconds", job_type, time.monotonic() - started, JOB_DURATION_BUCKETS
            )


def finish_ok(rt: Runtime, job_id: str, job_type: str, result: Any) -> None:
    if rt.jobs.succeed(job_id, result):
        rt.counters.incr("stockq_jobs_finished_total", f"{job_type},succeeded")


def finish_failed(rt: Runtime, job_id: str, job_type: str, code: str, message: str) -> None:
    if rt.jobs.fail(job_id, code, message):
        rt.counters.incr("stockq_jobs_finished_total", f"{job_type},failed")


def _train_config(rt: Runtime, epochs: int | None) -> Any:
    from ml.train import TrainConfig

    s = rt.settings
    return TrainConfig(epochs=epochs or s.default_epochs, history_days=s.train_history_days, window=s.window)


def _ensure_parent(ctx: JobContext, epochs: int | None) -> None:
    from ml.tickers import PARENT_NAME
    from ml.train import train_parent

    if ctx.rt.registry.champion_version(PARENT_NAME) is None:
        ctx.stage("train_parent")
        train_parent(
            store=ctx.rt.store,
            registry=ctx.rt.registry,
            config=_train_config(ctx.rt, epochs),
            on_epoch=ctx.on_epoch,
            should_stop=ctx.should_stop,
        )


def _ingest_for(ctx: JobContext, ticker: str) -> None:
    ctx.stage("ingest")
    ctx.rt.ingest([INDEX_TICKER] if ticker == INDEX_TICKER else [INDEX_TICKER, ticker])


def _train(ctx: JobContext, ticker: str, strategy: str, epochs: int | None) -> dict[str, Any]:
    from ml.train import train_child, train_parent

    config = _train_config(ctx.rt, epochs)
    if ticker == INDEX_TICKER:
        ctx.stage("train_parent")
        summary = train_parent(
            store=ctx.rt.store,
            registry=ctx.rt.registry,
            config=config,
            on_epoch=ctx.on_epoch,
            should_stop=ctx.should_stop,
        )
    else:
        _ensure_parent(ctx, epochs)
        ctx.stage("train_child")
        summary = train_child(
            ticker,
            strategy,
            store=ctx.rt.store,
            registry=ctx.rt.registry,
            config=config,
            on_epoch=ctx.on_epoch,
            should_stop=ctx.should_stop,
        )
    ctx.rt.models.forget_alias(summary["name"])
    return summary


@shared_task(name="stockq.ping", acks_late=True, soft_time_limit=10, time_limit=20)
def ping(job_id: str) -> None:
    run_job(job_id, lambda ctx: {"pong": True}, "ping")


@shared_task(name="stockq.ingest", acks_late=True, soft_time_limit=600, time_limit=660)
def ingest(job_id: str, tickers: list[str]) -> None:
    def work(ctx: JobContext) -> Any:
        done: list[str] = []

        def on_ticker(ticker: str, _: dict[str, Any]) -> None:
            done.append(ticker)
            ctx.rt.jobs.set_progress(job_id, {"done": len(done), "total": len(tickers), "last": ticker})

        return ctx.rt.ingest(tickers, on_ticker=on_ticker)

    run_job(job_id, work, "ingest")


def _train_limits() -> tuple[int, int]:
    from workers import app

    limit = app.conf.stockq_settings.train_time_limit_s
    return limit, limit + 60


TRAIN_SOFT_LIMIT, TRAIN_HARD_LIMIT = _train_limits()


@shared_task(
    name="stockq.train", acks_late=True, soft_time_limit=TRAIN_SOFT_LIMIT, time_limit=TRAIN_HARD_LIMIT
)
def train(job_id: str, ticker: str, strategy: str = "fine_tune", epochs: int | None = None) -> None:
    def work(ctx: JobContext) -> Any:
        valid = validate_ticker(ticker)
        _ingest_for(ctx, valid)
        return _train(ctx, valid, strategy, epochs)

    run_job(job_id, work, "train")


def _single_flight(rt: Runtime, ticker: str) -> SingleFlight:
    return SingleFlight(rt.redis, f"train:{ticker}", rt.settings.singleflight_ttl_s)


@shared_task(name="stockq.predict", acks_late=True, soft_time_limit=60, time_limit=90)
def predict(job_id: str, ticker: str, model: str = "auto") -> None:
    def work(ctx: JobContext) -> Any:
        try:
            return ctx.rt.forecast(ticker, model)
        except (ModelNotFound, FeaturesMissing):
            if model != "auto":
                raise
        # No model yet: exactly one auto-training per ticker, however many requests arrive.
        flight = _single_flight(ctx.rt, ticker)
        if flight.acquire(job_id):
            ctx.stage("training_queued")
            auto_train.apply_async((job_id, ticker))
            return DEFERRED
        if flight.wait(job_id):
            _recheck_later(ctx.rt, flight, job_id, ticker)
            return DEFERRED
        return ctx.rt.forecast(ticker, model)

    run_job(job_id, work, "predict")


def _recheck_later(rt: Runtime, flight: SingleFlight, job_id: str, ticker: str) -> None:
    """A waiter looks again just after the lock would expire: if its holder died (and so stopped
    refreshing it), the waiter takes over the training instead of waiting for the dead task."""
    rt.jobs.set_stage(job_id, "waiting_for_training")
    predict.apply_async((job_id, ticker, "auto"), countdown=flight.remaining_s() + 1.0)


@shared_task(
    name="stockq.auto_train",
    acks_late=True,
    soft_time_limit=TRAIN_SOFT_LIMIT,
    time_limit=TRAIN_HARD_LIMIT,
)
def auto_train(job_id: str, ticker: str) -> None:
    """ingest -> (parent) -> child -> predict for `job_id`, then serve every job that waited on it."""
    rt = _runtime()
    flight = _single_flight(rt, ticker)
    # Redelivered after a crash while another request already took over: wait for that one.
    if not flight.acquire(job_id) and flight.wait(job_id):
        _recheck_later(rt, flight, job_id, ticker)
        return
    outcome: tuple[str, str] | None = None  # (code, message) of a failure shared by every waiter

    def work(ctx: JobContext) -> Any:
        nonlocal outcome
        ctx.lock = flight
        try:
            _ingest_for(ctx, ticker)
            # A redelivered job may find the model trained meanwhile by a request that took over.
            if not ctx.rt.has_model(ticker, "auto"):
                _train(ctx, ticker, "fine_tune", rt.settings.auto_train_epochs)
            ctx.stage("predict")
            return ctx.rt.forecast(ticker, "auto")
        except Cancelled:
            outcome = ("cancelled", "")
            raise
        except StockqError as exc:
            outcome = (exc.code, exc.message)
            raise

    try:
        run_job(job_id, work, "predict")
    finally:
        flight.release(job_id)
        _serve_waiters(rt, flight, ticker, outcome)


def _serve_waiters(rt: Runtime, flight: SingleFlight, ticker: str, failure: tuple[str, str] | None) -> None:
    waiters = flight.drain()
    if failure is not None and failure[0] == "cancelled":
        # Only the holder's own job was cancelled: the waiters still want a forecast, and the first
        # of them to run takes the lock and trains.
        for waiter in waiters:
            predict.apply_async((waiter, ticker, "auto"))
        return
    for waiter in waiters:
        if failure is not None:
            finish_failed(rt, waiter, "predict", *failure)
            continue
        try:
            finish_ok(rt, waiter, "predict", jsonable(rt.forecast(ticker, "auto")))
        except StockqError as exc:
            finish_failed(rt, waiter, "predict", exc.code, exc.message)


@shared_task(name="stockq.predict_batch", acks_late=True, soft_time_limit=120, time_limit=150)
def predict_batch(job_id: str, tickers: list[str], model: str = "auto") -> None:
    def work(ctx: JobContext) -> Any:
        from ml.predict import predict_many

        return predict_many(
            tickers, model, store=ctx.rt.store, registry=ctx.rt.registry, get_model=ctx.rt.models.get
        )

    run_job(job_id, work, "predict_batch")


@shared_task(name="stockq.chart", acks_late=True, soft_time_limit=60, time_limit=90)
def chart(job_id: str, ticker: str, fmt: str = "png") -> None:
    def work(ctx: JobContext) -> Any:
        from ml.chart import forecast_chart

        model = "auto" if ctx.rt.has_model(ticker, "auto") else "parent"
        forecast = ctx.rt.forecast(ticker, model)
        history = ctx.rt.store.stored_daily(forecast["ticker"])
        closes = history.set_index(history["event_timestamp"].dt.tz_convert(None))["close"]
        image = forecast_chart(closes, forecast, fmt)
        return {
            "mimetype": "image/png" if fmt == "png" else "image/svg+xml",
            "image_base64": base64.b64encode(image).decode(),
            "as_of": forecast["as_of"],
            "model": forecast["model"],
        }

    run_job(job_id, work, "chart")


@shared_task(name="stockq.analyze", acks_late=True, soft_time_limit=300, time_limit=330)
def analyze(job_id: str, ticker: str, question: str | None = None) -> None:
    run_job(job_id, lambda ctx: ctx.rt.analyst.analyze(ticker, question, on_stage=ctx.stage), "analyze")
