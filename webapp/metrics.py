"""The API's /metrics: per-process HTTP figures only, by prometheus-flask-exporter.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes every worker process write its figures there and a scrape
sum them all (webapp/gunicorn_conf.py empties the directory at start and marks dead workers).
Backend-wide figures (queues, workers, jobs, models, caches) are not here but in `stockq exporter`
(workers/exporter.py): read by every API replica, they would be counted once per replica.
"""

from __future__ import annotations

import re

from flask import Flask, Request, request
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _endpoint() -> str:
    """The URL template (`/status/<job_id>`, converters left out), never the raw path, so job ids add no
    series."""
    return _CONVERTER.sub(r"<\1>", request.url_rule.rule) if request.url_rule else "unmatched"


def view(req: Request) -> str:
    """The Flask view name: the library's histogram needs a grouping label of its own (label name
    `view`); the template is the `endpoint` label both the counter and the histogram carry."""
    return req.endpoint or "unmatched"


def install_metrics(app: Flask) -> PrometheusMetrics:
    """Install before auth and rate limiting: its before_request hook then starts the clock first, so a
    request they reject is timed (and counted) like any other."""
    metrics = PrometheusMetrics(
        app,
        path="/metrics",
        defaults_prefix="stockq",
        group_by=view,
        buckets=BUCKETS,
        default_labels={"endpoint": _endpoint},
        # Each app its own registry: tests build many apps in one process.
        registry=CollectorRegistry(auto_describe=True),
    )
    app.extensions["stockq_metrics"] = metrics
    return metrics
