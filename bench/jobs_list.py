"""Jobs-list benchmark: `GET /jobs?status=failed` on 100 vs 100,000 stored jobs, side by side in one run.

    python -m bench.jobs_list [--small 100] [--large 100000] [--failed 20] [--samples 200]

Two registries, each on a redis-server of its own, hold the same `--failed` failed jobs among `--small` and
`--large` stored jobs (the rest succeeded, the failed spread evenly through time), all of one tenant; they
are filled through JobRegistry.submit and finish (the API's own scripts, so every index is as the API
leaves it). Each is served by the API under the same gunicorn settings as the other API benches
(stockq.cli.stack.gunicorn_argv: 2 workers, gthread, 8 threads; a tenant key, the rate limiter on but far
above what is sent, metrics on). The requests alternate between the two stores, in both orders, so
drift on a shared machine hits both alike: the tenant's page and the admin's (everyone's) page, `limit=50`
(every failed job on one page). Per store: latency percentiles, and the Redis commands each request ran
(INFO commandstats of its own server): what a page reads, whatever else runs on the machine.
Writes var/bench/jobs_list.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

from bench.common import OUT_DIR, free_port, pct, report, start_redis_server, stop_group, wait_up

TENANT, ADMIN = "bench", "ops"
HIGH_LIMIT = "100000000/minute"  # on, but never throttling: its cost is measured, not its limits


@dataclass
class Store:
    """One registry (its own redis-server) and the API serving it."""

    stored: int
    redis_url: str
    base: str

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


def fill(client: redis.Redis, stored: int, failed: int, threads: int = 8) -> float:
    """`stored` jobs of the tenant, `failed` of them failed (evenly spread), the rest succeeded; seconds.
    A few threads keep several scripts in flight: each job is two round trips."""
    from workers.jobs import JobRegistry, JobStatus

    jobs = JobRegistry(client, 7 * 24 * 3600)
    every = stored // failed

    def one(i: int) -> None:
        job_type = ("ping", "predict", "train")[i % 3]
        made = jobs.submit(job_type, {"n": i}, f"stockq.{job_type}", owner=TENANT, max_inflight=stored + 1)
        assert made.job is not None
        if i % every == every // 2:
            jobs.finish(made.job.id, JobStatus.FAILED, {"code": "boom", "message": "failed on purpose"})
        else:
            jobs.finish(made.job.id, JobStatus.SUCCEEDED, {"n": i})

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, range(stored)):
            pass
    if sum(jobs.count("failed", t) for t in ("ping", "predict", "train")) != failed:
        raise SystemExit(f"filled {stored} jobs, but not {failed} failed")
    return time.perf_counter() - started


@contextmanager
def serve(var: Path, name: str, redis_url: str, api_key: str, admin_key: str) -> Iterator[str]:
    """The API under gunicorn on `redis_url`; its base URL."""
    from stockq.cli.stack import gunicorn_argv

    port = free_port()
    prom = var / f"prometheus-{name}"
    prom.mkdir()
    env = {**os.environ, "STOCKQ_REDIS_URL": redis_url, "STOCKQ_BROKER_URL": redis_url,
           "STOCKQ_FEAST_REDIS_DB": "1", "STOCKQ_VAR_DIR": str(var), "STOCKQ_DATA_SOURCE": "bundled",
           "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}", "STOCKQ_API_KEYS": f"{TENANT}:{api_key}",
           "STOCKQ_ADMIN_KEYS": f"{ADMIN}:{admin_key}", "STOCKQ_RATE_LIMIT": HIGH_LIMIT,
           "STOCKQ_MAX_INFLIGHT": "100000000", "PROMETHEUS_MULTIPROC_DIR": str(prom),
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with open(var / f"api-{name}.log", "ab") as log:
        proc = subprocess.Popen(gunicorn_argv(port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(lambda: requests.get(f"{base}/health", timeout=1).ok, f"api {name}")
        yield base
    finally:
        stop_group(proc)


def page(session: requests.Session, store: Store, key: str, limit: int, failed: int) -> float:
    """Seconds for one `GET /jobs?status=failed`; exits unless it answered every failed job, only those."""
    started = time.perf_counter()
    r = session.get(f"{store.base}/jobs", params={"status": "failed", "limit": limit},
                    headers={"Authorization": f"Bearer {key}"}, timeout=60)  # fmt: skip
    seconds = time.perf_counter() - started
    body = r.json() if r.ok else {}
    if len(body.get("jobs", [])) != failed or any(j["status"] != "failed" for j in body["jobs"]):
        raise SystemExit(f"{store.stored} stored: {r.status_code} {r.text[:300]}")
    return seconds


def measure(stores: list[Store], keys: dict[str, str], samples: int, limit: int, failed: int,
            warmup: int = 20) -> dict[tuple[str, int], dict[str, Any]]:  # fmt: skip
    """Per view and store: latency samples (interleaved, the order flipping every round) and the Redis
    commands per request."""
    session = requests.Session()
    for _ in range(warmup):
        for store in stores:
            for key in keys.values():
                page(session, store, key, limit, failed)
    times: dict[tuple[str, int], list[float]] = {(v, s.stored): [] for v in keys for s in stores}
    for store in stores:
        store.client.config_resetstat()
    for n in range(samples):
        for store in stores if n % 2 == 0 else stores[::-1]:
            for view, key in keys.items():
                times[view, store.stored].append(page(session, store, key, limit, failed))
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for store in stores:
        stats = store.client.info("commandstats")
        per_request = {name.removeprefix("cmdstat_"): s["calls"] / (samples * len(keys))
                       for name, s in stats.items()}  # fmt: skip
        for view in keys:
            out[view, store.stored] = {"times": times[view, store.stored], "commands": per_request}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=20, help="failed jobs in each store")
    parser.add_argument("--samples", type=int, default=200, help="requests per view and store")
    parser.add_argument("--limit", type=int, default=50, help="page size (at least --failed)")
    args = parser.parse_args()
    if args.limit < args.failed:
        raise SystemExit("--limit must be at least --failed: every failed job on one page")

    var = OUT_DIR / "jobs_list-var"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    api_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    fill_s: dict[int, float] = {}
    memory: dict[int, int] = {}
    with ExitStack() as stack:
        stores = []
        for stored in (args.small, args.large):
            server_dir = var / f"redis-{stored}"
            server_dir.mkdir()
            server, url = start_redis_server(server_dir)
            stack.callback(lambda s=server: (s.terminate(), s.wait(10)))
            wait_up(lambda u=url: redis.Redis.from_url(u).ping(), "redis", 10)
            fill_s[stored] = fill(redis.Redis.from_url(url), stored, args.failed)
            memory[stored] = int(redis.Redis.from_url(url).info("memory")["used_memory"])
            base = stack.enter_context(serve(var, str(stored), url, api_key, admin_key))
            stores.append(Store(stored, url, base))
        views = {"tenant": api_key, "admin": admin_key}
        found = measure(stores, views, args.samples, args.limit, args.failed)

    rows: list[dict[str, Any]] = []
    for (view, stored), m in found.items():
        ms = [t * 1000 for t in m["times"]]
        rows.append({"view": view, "stored": stored, "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90),
                     "hgetall/req": m["commands"].get("hgetall", 0.0),
                     "commands/req": sum(m["commands"].values())})  # fmt: skip
    ratios = {}
    for view in ("tenant", "admin"):
        small, large = (next(r for r in rows if r["view"] == view and r["stored"] == n)
                        for n in (args.small, args.large))  # fmt: skip
        ratios[view] = {q: round(large[q] / small[q], 3) for q in ("p50_ms", "p90_ms")}
        rows.append({"view": view, "stored": f"ratio {args.large}/{args.small}", **ratios[view]})
    report("jobs_list", rows, {
        "ratios (large / small)": ratios,
        "fill seconds (submit + finish per job)": {str(k): round(v, 1) for k, v in fill_s.items()},
        "redis used_memory MiB": {str(k): round(v / 2**20, 1) for k, v in memory.items()},
        "measures": f"GET /jobs?status=failed&limit={args.limit}: {args.failed} failed jobs among "
                    f"{args.small} and {args.large} stored (the rest succeeded); a tenant's and the admin's "
                    "view",
        "settings": "gunicorn -w 2 -k gthread --threads 8 per store; one client, sequential requests, "
                    f"{args.samples} per view and store after 20 warm-up, stores interleaved (order flipped "
                    f"each round); auth on (tenant and admin keys), rate limiter on at {HIGH_LIMIT}, "
                    "metrics on",
        "target": "p50 and p90 ratios about 1 (a filtered page costs O(page), not O(stored))",
    })  # fmt: skip


if __name__ == "__main__":
    main()
