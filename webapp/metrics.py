"""The API's /metrics: per-process HTTP figures only, served by prometheus-flask-exporter.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes every worker process write its figures there and a scrape
sum them all (webapp/gunicorn_conf.py empties the directory at start and marks dead workers).
Backend-wide figures (queues, workers, jobs, models, caches) are not here but in `stockq exporter`
(workers/exporter.py): read by every API replica, they would be counted once per replica.

The two request metrics are the library's defaults by name and labels, recorded here instead: its own
hooks inspect the label functions' signatures on every request (about a third of a `/health`'s time).
"""

from __future__ import annotations

import functools
import re
import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_flask_exporter import PrometheusMetrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PREFIX = "stockq"
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_SCRAPE = "prometheus_metrics"  # the library's /metrics view: not counted, as the library does
# The method label takes these values and "other": any client may send any token as a method (gunicorn
# passes `QQQA /health` on), and each new label value would be a new series kept until the process exits.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


@functools.cache
def _template(rule: str) -> str:
    return _CONVERTER.sub(r"<\1>", rule)


def _endpoint() -> str:
    """The URL template (`/status/<job_id>`, converters left out), never the raw path, so job ids add no
    series. Worked out once per rule."""
    return _template(request.url_rule.rule) if request.url_rule else "unmatched"


def install_metrics(app: Flask) -> PrometheusMetrics:
    """Install before auth and rate limiting: its before_request hook then starts the clock first, so a
    request they reject is timed (and counted) like any other."""
    # Each app its own registry: tests build many apps in one process.
    registry = CollectorRegistry(auto_describe=True)
    metrics = PrometheusMetrics(app, path="/metrics", export_defaults=False, registry=registry)
    labels = ("method", "view", "status", "endpoint")
    duration = Histogram(f"{PREFIX}_http_request_duration_seconds", "Flask HTTP request duration in seconds",
                         labels, registry=registry, buckets=BUCKETS)  # fmt: skip
    total = Counter(f"{PREFIX}_http_request_total", "Total number of HTTP requests",
                    ("method", "status", "endpoint"), registry=registry)  # fmt: skip

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is None or request.endpoint == _SCRAPE:
            return response
        method = request.method if request.method in METHODS else "other"
        status, endpoint = str(response.status_code), _endpoint()
        view = request.endpoint or "unmatched"
        duration.labels(method, view, status, endpoint).observe(max(time.perf_counter() - started, 0.0))
        total.labels(method, status, endpoint).inc()
        return response

    app.extensions["stockq_metrics"] = metrics
    return metrics
