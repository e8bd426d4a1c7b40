"""The Flask app factory (served by gunicorn as `webapp:create_app()`)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis
from flask import Flask, request
from flask_openapi3 import Info, OpenAPI

from ml.data.listing import Listing, listing, parse_spec
from stockq.settings import Settings, configure_process_env
from webapp.auth import install_auth
from webapp.console import console
from webapp.errors import ApiError, register_error_handlers, validation_error_response
from webapp.events import events
from webapp.metrics import install_metrics
from webapp.models_routes import models
from webapp.openapi import JobIdConverter, install_docs
from webapp.ratelimit import install_rate_limit
from webapp.routes import api, ops
from webapp.schemas import ErrorBody
from webapp.submit import Submitter
from webapp.tickers import tickers
from workers.celery_app import create_celery
from workers.jobs import JobRegistry
from workers.results import ResultStore

MAX_BODY = 64 * 1024
log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    settings: Settings
    redis: redis.Redis
    blocking_redis: redis.Redis
    jobs: JobRegistry
    submitter: Submitter
    # Slots for requests that block a thread waiting on a job (`?wait=`, charts), per process.
    waiting: threading.BoundedSemaphore
    # Charts and batch results on the evicting cache Redis (workers/results.py).
    results: ResultStore
    # What the data source can serve now (a csv source's directory is read again on each call).
    tickers: Callable[[], Listing]
    # Counts the request in a rate-limit class the route decides (webapp/ratelimit.py RateLimiter.charge).
    charge: Callable[[str], None] = lambda _name: None


# Endpoints that take no body (a POST that only triggers work).
BODYLESS_ENDPOINTS = frozenset({"api.ping", "api.retry_job"})


def _check_json_body() -> None:
    """400 for malformed JSON, 413 past 64 KiB, 415 for another content type, 422 for a non-object body,
    all before schema validation."""
    if request.method not in {"POST", "PUT", "PATCH"} or request.routing_exception is not None:
        return  # routing answers 404 / 405 itself
    data = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH when the length is declared
    if request.content_length is None and len(data) >= MAX_BODY:
        # A chunked body is cut at the limit without an error: never accept the truncated prefix.
        raise ApiError(413, "payload_too_large", f"request body exceeds {MAX_BODY // 1024} KiB")
    if not data:
        if request.endpoint not in BODYLESS_ENDPOINTS:
            raise ApiError(400, "bad_request", "request body is empty: send a JSON object")
        return
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    try:
        # Parsed once: Flask keeps it for the schema validation that follows. None (malformed, or the
        # body `null`): parsed again, for the reason.
        parsed = request.get_json(silent=True)
        if parsed is None:
            parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {reason}") from None
    if not isinstance(parsed, dict):
        raise ApiError(422, "validation_error", f"body: must be a JSON object, got {type(parsed).__name__}")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    configure_process_env(settings)
    parse_spec(settings.data_source)  # a data source no worker could build refuses to start here too
    app = OpenAPI(
        __name__,
        info=Info(
            title="stockq", version="0.1.0", description="Stock forecasting jobs over Celery and Redis"
        ),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        # Swagger UI at /docs/swagger (the /docs page lists it), assets from the flask-openapi3-swagger wheel.
        doc_ui=True,
        doc_prefix="/docs",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_model=ErrorBody,
        validation_error_callback=validation_error_response,
    )
    app.url_map.converters["job_id"] = JobIdConverter
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False
    # Short timeouts: with Redis down the API answers 503 within 2 s instead of hanging.
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
    # For `?wait=` (at most 10 s): the socket must outlast the BLPOP, and no more.
    blocking = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=11.5)
    jobs = JobRegistry(client, settings.job_retention_s)
    celery = create_celery(settings)
    app.extensions["stockq"] = ApiContext(
        settings,
        client,
        blocking,
        jobs,
        Submitter(celery, jobs, client, settings),
        threading.BoundedSemaphore(settings.max_waiting_per_process),
        # The API's short timeouts: a cache Redis that is down answers 503 / `result_unavailable` in 2 s.
        ResultStore.from_settings(
            settings, redis.Redis.from_url(settings.cache_url, socket_connect_timeout=1, socket_timeout=1)
        ),
        partial(listing, settings.data_source),
    )
    register_error_handlers(app)
    # Metrics first: their clock starts before auth and rate limiting can reject a request.
    install_metrics(app)
    install_auth(app, settings)
    app.extensions["stockq"].charge = install_rate_limit(app, settings, client)
    app.before_request(_check_json_body)
    app.register_api(api)
    app.register_api(events)
    app.register_api(tickers)
    app.register_api(ops)
    app.register_api(models)
    app.register_api(console)
    install_docs(app)  # last: the document covers every route registered above
    return app
