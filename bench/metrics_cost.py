"""What the API's metrics cost: submit throughput through gunicorn (2 workers, multiprocess metrics) with
prometheus-flask-exporter installed vs not, in one run, on loopback, against a private redis-server.

    python -m bench.metrics_cost [--requests 1500] [--threads 8] [--rounds 2]

Rounds alternate on/off so drift on a shared machine hits both alike; the median round of each counts.
No worker runs: submissions stay queued (rate and in-flight limits are lifted for the measurement).
Writes var/bench/metrics_cost.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import requests

from bench.common import OUT_DIR, free_port, report, start_redis_server, summary_ms, wait_up


def app_without_metrics() -> Any:
    """The API with install_metrics made a no-op: the "off" side of the comparison."""
    import webapp.app

    webapp.app.install_metrics = lambda app: None  # type: ignore[assignment]
    return webapp.app.create_app()


def measure(metrics: bool, env: dict[str, str], var: Path, n: int, threads: int) -> dict[str, Any]:
    from stockq.cli.stack import gunicorn_argv

    port = free_port()
    argv = gunicorn_argv(port)
    if not metrics:
        argv[-1] = "bench.metrics_cost:app_without_metrics()"
    prom = var / "multiproc"
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True)
    log = open(var / f"gunicorn-{'on' if metrics else 'off'}.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        argv, env={**env, "PROMETHEUS_MULTIPROC_DIR": str(prom)}, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(lambda: requests.get(f"{base}/health", timeout=1).ok, "gunicorn")
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads))

        def submit(_: int) -> float:
            started = time.perf_counter()
            response = session.post(f"{base}/jobs/ping", timeout=30)
            if response.status_code != 202:
                raise RuntimeError(f"submit answered {response.status_code}: {response.text[:300]}")
            return time.perf_counter() - started

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(submit, range(min(100, n))))  # warm-up: connections, imports, first writes
            started = time.perf_counter()
            latencies = list(pool.map(submit, range(n)))
            elapsed = time.perf_counter() - started
        scraped = requests.get(f"{base}/metrics", timeout=5)
        counted = metrics and 'stockq_http_request_total{endpoint="/jobs/ping"' in scraped.text
        return {"metrics": "on" if metrics else "off", "per_s": n / elapsed, **summary_ms(latencies),
                "counted": counted}  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)  # gunicorn's quick shutdown: keep-alive connections end now
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    var = OUT_DIR / "metrics_cost-var"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    server, url = start_redis_server(var)
    env = {**os.environ, "STOCKQ_REDIS_URL": url, "STOCKQ_VAR_DIR": str(var), "STOCKQ_API_KEYS": "",
           "STOCKQ_RATE_LIMIT": "", "STOCKQ_RATE_LIMIT_PREDICT": "", "STOCKQ_MAX_INFLIGHT": "1000000",
           "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}"}  # fmt: skip
    try:
        wait_up(lambda: redis.Redis.from_url(url).ping(), "redis-server", 10)
        rounds = []
        for _ in range(args.rounds):
            for metrics in (True, False):
                redis.Redis.from_url(url).flushdb()
                rounds.append(measure(metrics, env, var, args.requests, args.threads))
    finally:
        server.terminate()
        server.wait(10)
    median = {
        side: statistics.median(r["per_s"] for r in rounds if r["metrics"] == side) for side in ("on", "off")
    }
    report("metrics_cost", rounds, {
        "requests_per_round": args.requests, "threads": args.threads,
        "median_on_per_s": round(median["on"], 1), "median_off_per_s": round(median["off"], 1),
        "throughput_cost": f"{1 - median['on'] / median['off']:.1%}", "target": "<= 10%",
    })  # fmt: skip


if __name__ == "__main__":
    main()
