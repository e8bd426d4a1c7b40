"""Prometheus metrics for /metrics.

HTTP metrics live in this process (or in PROMETHEUS_MULTIPROC_DIR under gunicorn, so every worker
process counts); job, cache, queue and worker figures are read from Redis at scrape time, where all
processes add to one total.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import redis
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from workers.celery_app import QUEUES
from workers.counters import JOB_DURATION_BUCKETS, Counters
from workers.heartbeat import live_workers

REQUESTS = Counter(
    "stockq_http_requests_total", "HTTP requests by endpoint and status", ["method", "endpoint", "status"]
)
LATENCY = Histogram(
    "stockq_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RedisCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.counters = Counters(client)

    def collect(self) -> Iterator[object]:
        try:
            hits = self.counters.read("redis_cache_hit_total").get("", 0)
            misses = self.counters.read("redis_cache_miss_total").get("", 0)
            submitted = self.counters.read("stockq_jobs_submitted_total")
            finished = self.counters.read("stockq_jobs_finished_total")
            lengths = {q: int(self.client.llen(q)) for q in QUEUES}
            workers = live_workers(self.client, QUEUES)
            durations = self.counters.read_histogram("stockq_job_duration_seconds", JOB_DURATION_BUCKETS)
        except redis.RedisError:
            return
        yield CounterMetricFamily("redis_cache_hit", "Prediction cache hits", value=hits)
        yield CounterMetricFamily("redis_cache_miss", "Prediction cache misses", value=misses)
        family = CounterMetricFamily("stockq_jobs_submitted", "Jobs submitted", labels=["type"])
        for job_type, n in sorted(submitted.items()):
            family.add_metric([job_type], n)
        yield family
        family = CounterMetricFamily("stockq_jobs_finished", "Jobs finished", labels=["type", "status"])
        for label, n in sorted(finished.items()):
            family.add_metric(label.split(",", 1), n)
        yield family
        gauge = GaugeMetricFamily("stockq_queue_length", "Messages waiting per queue", labels=["queue"])
        for queue, n in lengths.items():
            gauge.add_metric([queue], n)
        yield gauge
        histogram = HistogramMetricFamily(
            "stockq_job_duration_seconds", "Job run time in the worker", labels=["type"]
        )
        for job_type, (buckets, total) in durations.items():
            histogram.add_metric([job_type], buckets, sum_value=total)
        yield histogram
        gauge = GaugeMetricFamily("stockq_workers", "Live workers consuming each queue", labels=["queue"])
        for queue, n in workers.items():
            gauge.add_metric([queue], n)
        yield gauge


def metrics_registry(client: redis.Redis) -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(RedisCollector(client))
    return registry


def install_metrics(app: Flask, client: redis.Redis) -> None:
    registry = metrics_registry(client)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        LATENCY.labels(request.method, endpoint).observe(
            time.perf_counter() - g.get("started", time.perf_counter())
        )
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.extensions["stockq_metrics_registry"] = registry
