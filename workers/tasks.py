"""Thin Celery tasks: parse arguments, call ml/agent, report progress, return JSON-safe results.

Every task takes the job id first and its delivery's `attempt` as a keyword (workers/dispatch.py); the
job record in Redis is the source of truth for clients, and workers/execution.py runs each delivery.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from ml.errors import Cancelled, FeaturesMissing, ModelNotFound, StockqError
from ml.tickers import INDEX_TICKER, validate_ticker
from workers.budgets import Budgets, configured
from workers.execution import finish_failed, finish_ok, run_job, runtime
from workers.job_context import JobContext, jsonable
from workers.jobs import JobStatus
from workers.progress import PARENT_PREFIX
from workers.runtime import Runtime
from workers.singleflight import SingleFlight

log = logging.getLogger(__name__)
PARENT_WAIT_POLL_S = 2.0


class TrainingBudgetExceeded(StockqError):
    code = "training_budget_exceeded"
    http_status = 429


def _train_config(rt: Runtime, epochs: int | None) -> Any:
    from ml.config import PanelModelConfig, TrainConfig

    s = rt.settings
    # The served model only: its evaluation is a job of its own (`evaluate`, workers/evaluation.py).
    model = PanelModelConfig(epochs=epochs or s.default_epochs)
    return TrainConfig(model=model, universe=s.parent_universe, history_days=s.train_history_days)


def _hooks(ctx: JobContext, phase_prefix: str = "") -> Any:
    """`phase_prefix`: "parent_" while a child's job trains the parent first (its phases are named so)."""
    from ml.config import TrainHooks

    return TrainHooks(
        on_epoch=ctx.on_epoch,
        on_phase=lambda phase, epochs: ctx.on_phase(phase_prefix + phase, epochs),
        should_stop=ctx.should_stop,
        should_pause=ctx.should_pause,
        on_resume=ctx.on_resume,
        job_key=ctx.job_id,
        attempt=ctx.delivery.attempt,
        checkpoint_every_s=ctx.rt.settings.checkpoint_s,
        champion_lock=ctx.champion_lock,
    )


def _single_flight(rt: Runtime, ticker: str) -> SingleFlight:
    return SingleFlight(rt.redis, f"train:{ticker}", rt.settings.singleflight_ttl_s)


def _ensure_parent(ctx: JobContext, epochs: int | None) -> None:
    """The parent a child needs, trained once however many child trainings ask at the same moment: the
    first takes the parent's single-flight lock and trains, the others wait for its champion."""
    from ml.tickers import PARENT_NAME
    from ml.training.train import train_parent

    flight = _single_flight(ctx.rt, INDEX_TICKER)
    waiting = False
    while ctx.rt.registry.champion_version(PARENT_NAME) is None:
        if flight.acquire(ctx.job_id):
            ctx.hold_lock(flight)
            try:
                ctx.stage("train_parent")
                ctx.expect(f"{PARENT_PREFIX}select", f"{PARENT_PREFIX}refit")
                train_parent(
                    store=ctx.rt.store, registry=ctx.rt.registry, config=_train_config(ctx.rt, epochs),
                    hooks=_hooks(ctx, PARENT_PREFIX),
                )  # fmt: skip
            finally:
                ctx.release_lock(flight)
            return
        ctx.stage("waiting_for_parent")
        if not waiting:
            ctx.begin("waiting_for_parent", "waiting for the parent model another job is training")
            waiting = True
        time.sleep(PARENT_WAIT_POLL_S)


def _ingest_label(done: int, total: int) -> str:
    return f"ingest {done}/{total} ticker{'s' if total > 1 else ''}"


def _ingest_for(ctx: JobContext, ticker: str) -> None:
    ctx.stage("ingest")
    tickers = [INDEX_TICKER] if ticker == INDEX_TICKER else [INDEX_TICKER, ticker]
    ctx.begin("ingest", _ingest_label(0, len(tickers)), steps=len(tickers))
    fetched: list[str] = []

    def on_ticker(name: str, _: dict[str, Any]) -> None:
        fetched.append(name)
        ctx.advance(len(fetched), _ingest_label(len(fetched), len(tickers)))

    ctx.rt.ingest(tickers, on_ticker=on_ticker)


def _train(ctx: JobContext, ticker: str, strategy: str, epochs: int | None) -> dict[str, Any]:
    from ml.training.train import train_child, train_parent

    config = _train_config(ctx.rt, epochs)
    if ticker == INDEX_TICKER:
        ctx.stage("train_parent")
        summary = train_parent(store=ctx.rt.store, registry=ctx.rt.registry, config=config, hooks=_hooks(ctx))
    else:
        if strategy != "scratch":  # scratch takes only the architecture, from the settings
            _ensure_parent(ctx, epochs)
        ctx.stage("train_child")
        summary = train_child(
            ticker, strategy, store=ctx.rt.store, registry=ctx.rt.registry, config=config, hooks=_hooks(ctx)
        )
    ctx.rt.models.forget_alias(summary["name"])
    return summary


@shared_task(name="stockq.ping", acks_late=True, soft_time_limit=10, time_limit=20)
def ping(job_id: str, attempt: int = 1) -> None:
    run_job(job_id, attempt, "ping", lambda ctx: {"pong": True})


@shared_task(name="stockq.ingest", acks_late=True, soft_time_limit=600, time_limit=660)
def ingest(job_id: str, tickers: list[str], attempt: int = 1) -> None:
    def work(ctx: JobContext) -> Any:
        done: list[str] = []
        ctx.plan("ingest")
        ctx.begin("ingest", _ingest_label(0, len(tickers)), steps=len(tickers))

        def on_ticker(ticker: str, _: dict[str, Any]) -> None:
            # Nothing is written before every ticker is fetched: a cancel here leaves the store as it was.
            if ctx.should_stop():
                raise Cancelled(f"ingest cancelled after fetching {ticker}; nothing written")
            done.append(ticker)
            ctx.advance(len(done), _ingest_label(len(done), len(tickers)), last=ticker)

        return ctx.rt.ingest(tickers, on_ticker=on_ticker)

    run_job(job_id, attempt, "ingest", work)


def _train_limits() -> tuple[int, int]:
    from workers import settings

    limit = settings.train_time_limit_s
    return limit, limit + 60


TRAIN_SOFT_LIMIT, TRAIN_HARD_LIMIT = _train_limits()


@shared_task(
    name="stockq.train", acks_late=True, soft_time_limit=TRAIN_SOFT_LIMIT, time_limit=TRAIN_HARD_LIMIT
)
def train(
    job_id: str, ticker: str, strategy: str = "fine_tune", epochs: int | None = None, attempt: int = 1
) -> None:
    def work(ctx: JobContext) -> Any:
        valid = validate_ticker(ticker)
        ctx.plan("ingest", "select", "refit")
        _ingest_for(ctx, valid)
        summary = _train(ctx, valid, strategy, epochs)
        # Its own version's forecast, promoted or not: what the job's detail draws (no job of its own).
        return {**summary, **ctx.rt.trained(valid, summary["name"], str(summary["version"]))}

    run_job(job_id, attempt, "train", work)


@shared_task(name="stockq.predict", acks_late=True, soft_time_limit=60, time_limit=90)
def predict(job_id: str, ticker: str, model: str = "auto", client: str = "", attempt: int = 1) -> None:
    """`client`: the submitter's rate-limit identity (webapp/submit.py), charged for an auto-training."""

    def work(ctx: JobContext) -> Any:
        ctx.stage("forecast")
        try:
            return ctx.rt.forecast(ticker, model)
        except (ModelNotFound, FeaturesMissing):
            if model != "auto":
                raise
        # No model yet: exactly one auto-training per ticker, however many requests arrive.
        flight = _single_flight(ctx.rt, ticker)
        if flight.acquire(ctx.job_id):
            _charge_training(ctx, flight, ticker, client)
            # The same job (same id) goes on as the training: it keeps its place in the in-flight set.
            return ctx.hand_off("stockq.auto_train", stage="training_queued",
                                kwargs={"ticker": ticker, "client": client})  # fmt: skip
        if flight.wait(ctx.job_id):
            return _wait_for_training(ctx, flight, ticker, client)
        return ctx.rt.forecast(ticker, model)

    run_job(job_id, attempt, "predict", work)


def _charge_training(ctx: JobContext, flight: SingleFlight, ticker: str, client: str) -> None:
    """An auto-training is a training: it counts in its submitter's training windows, the ones POST /train
    counts in. Past that budget this job fails instead; the lock it took goes back and the requests
    waiting on it are queued again (each charged to its own submitter when it takes the lock)."""
    if not client:
        return  # not submitted through the API (no budget), or before submissions carried their client
    tally = Budgets(ctx.rt.redis, configured(ctx.rt.settings)).charge("train", client)
    if tally is None or not tally.over:
        return
    flight.release(ctx.job_id)
    _requeue_waiters(ctx.rt, flight.drain())
    raise TrainingBudgetExceeded(
        f"{ticker} has no model yet, and training one would exceed this client's training budget "
        f"({tally.item}): no training was started. Train it with POST /train once the budget's window "
        f"resets (in {max(1, round(tally.wait_s))} s), then ask for the forecast again."
    )


def _wait_for_training(ctx: JobContext, flight: SingleFlight, ticker: str, client: str) -> object:
    """Queued behind the holder, which finishes this job too. The waiter also looks again just after the
    lock would expire: if its holder died (and so stopped refreshing it), it takes over the training."""
    return ctx.hand_off("stockq.predict", stage="waiting_for_training", countdown=flight.remaining_s() + 1.0,
                        kwargs={"ticker": ticker, "model": "auto", "client": client})  # fmt: skip


@shared_task(
    name="stockq.auto_train",
    acks_late=True,
    soft_time_limit=TRAIN_SOFT_LIMIT,
    time_limit=TRAIN_HARD_LIMIT,
)
def auto_train(job_id: str, ticker: str, client: str = "", attempt: int = 1) -> None:
    """ingest -> (parent) -> child -> predict for `job_id`, then serve every job that waited on it."""
    rt = runtime()
    flight = _single_flight(rt, ticker)
    ended: list[tuple[str, str] | None] = []  # the outcome shared with waiters, once the job has one

    def work(ctx: JobContext) -> Any:
        # Retried after a crash while another request took over: wait for that one.
        if not flight.acquire(ctx.job_id):
            if flight.wait(ctx.job_id):
                return _wait_for_training(ctx, flight, ticker, client)
            return ctx.rt.forecast(ticker, "auto")
        ctx.hold_lock(flight)
        try:
            ctx.plan("ingest", "select", "refit", "forecast")
            _ingest_for(ctx, ticker)
            # A retried job may find the model trained meanwhile by a request that took over.
            if not ctx.rt.has_model(ticker, "auto"):
                _train(ctx, ticker, "fine_tune", rt.settings.auto_train_epochs)
            ctx.stage("predict")
            ctx.begin("forecast", "forecast")
            result = ctx.rt.forecast(ticker, "auto")
        except Cancelled:
            ended.append(("cancelled", ""))
            raise
        except StockqError as exc:
            ended.append((exc.code, exc.message))
            raise
        ended.append(None)
        return result

    try:
        run_job(job_id, attempt, "predict", work)
    finally:
        # Preempted or stale holders keep the lock (it expires by itself): their next attempt takes it
        # again with the same token, and the waiters keep waiting for it.
        if ended:
            flight.release(job_id)
            _serve_waiters(rt, flight, ticker, ended[0])


def _requeue_waiters(rt: Runtime, waiters: list[str]) -> None:
    """The waiters of a holder that gave up its training still want a forecast: each is published again
    now (its waiting hand-off: stockq.predict), and the first of them to run takes the lock and trains."""
    from workers import app
    from workers.dispatch import publish_record

    for waiter in waiters:
        job = rt.jobs.get(waiter)
        if job is not None and job.status == JobStatus.QUEUED:
            publish_record(app, rt.jobs, job, job.attempt)


def _serve_waiters(rt: Runtime, flight: SingleFlight, ticker: str, failure: tuple[str, str] | None) -> None:
    waiters = flight.drain()
    if failure is not None and failure[0] == "cancelled":
        _requeue_waiters(rt, waiters)  # only the holder's own job was cancelled
        return
    for waiter in waiters:
        if failure is not None:
            finish_failed(rt, waiter, "predict", *failure)
            continue
        try:
            finish_ok(rt, waiter, "predict", jsonable(rt.forecast(ticker, "auto")))
        except StockqError as exc:
            finish_failed(rt, waiter, "predict", exc.code, exc.message)


@shared_task(name="stockq.analyze", acks_late=True, soft_time_limit=300, time_limit=330)
def analyze(
    job_id: str, ticker: str, question: str | None = None, cache_scope: str = "global", attempt: int = 1
) -> None:
    def work(ctx: JobContext) -> Any:
        report = ctx.rt.analyst.analyze(ticker, question, on_stage=ctx.stage, cache_scope=cache_scope)
        hit = bool(report.get("cached"))
        ctx.rt.counters.incr(
            "stockq_semantic_cache_hits_total" if hit else "stockq_semantic_cache_misses_total"
        )
        return report

    run_job(job_id, attempt, "analyze", work)
