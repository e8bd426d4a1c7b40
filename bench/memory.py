"""Memory under one tenant at its documented limits: a live stack (`stockq up`'s Stack) on a job Redis set
up as compose sets it (`maxmemory 768mb`, `noeviction`) and a cache Redis (`384mb`, `allkeys-lru`). Tenant
`heavy` spends its whole prediction budget (settings.rate_limit_predict, 600/minute) for --minutes on
charts, 100-ticker batch forecasts and pings in turn, never waiting; tenant `light` sends a ping
(`?wait=5`) every second.

Reported: the job Redis's used_memory over time (peak, end) against the bound below, the cache Redis's,
the bytes `heavy` holds on the cache (at most settings.tenant_cache_bytes), what `heavy`'s requests got,
and how many of `light`'s pings completed (p50, p99 latency).

The bound: the job Redis holds records, their index entries and queued messages only (chart and batch
bytes are on the cache Redis, workers/results.py), at most RECORD_BOUND_BYTES per job, and a tenant submits
at most the budget's jobs per minute: used_memory <= the baseline after set-up + budget/minute x minutes x
RECORD_BOUND_BYTES (10 minutes at 600/minute: 35.2 MiB). Measured per finished job with its index entries:
a 100-ticker batch 5.3 kB, a chart 3.8 kB, a ping 2.2 kB. Every one of these records (predictions too) goes
after settings.short_job_retention_s (15 min), so past 15 minutes the job Redis stops growing.

`python -m bench.memory [--minutes 10]`: a table on stdout, JSON under var/bench/memory.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import requests
from limits import parse_many

from bench.common import OUT_DIR, free_port, isolate, pct, report, run_job, wait_up

MIB = 2**20
RECORD_BOUND_BYTES = 6 * 1024  # a job's record, index and expiry entries, and its message while queued
# The 20 large caps the bundled source ships; a batch fills up to 100 with tickers nobody ingested (each
# answers an error of its own).
TICKERS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
           "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]  # fmt: skip
BATCH = ["^GSPC", *TICKERS, *(f"Z{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(79))]
KEYS = {"heavy": "heavy-tenant-key-0123456789abcdef", "light": "light-tenant-key-0123456789abcdef"}
SAMPLES_SHOWN = 10
FOLLOW_S = 300.0  # how long the bench waits after the load for `light`'s last ping to finish


def start_redis(var: Path, name: str, maxmemory: str, policy: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    data = var / name
    data.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data), "--maxmemory", maxmemory, "--maxmemory-policy", policy],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_up(lambda: redis.Redis(port=port).ping(), f"redis-server {name}")
    return server, port


def session(tenant: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {KEYS[tenant]}"
    return s


def outcome(response: requests.Response) -> str:
    """The status, with the error code of a refusal (`429 rate_limited`, `429 too_many_inflight`, ...)."""
    if response.status_code < 400:
        return str(response.status_code)
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)


@dataclass
class Heavy:
    """One tenant at its prediction budget: charts, batches and pings in turn, never waiting."""

    base: str
    per_s: float
    outcomes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, s: requests.Session, i: int) -> None:
        kind = ("chart", "batch", "ping")[i % 3]
        try:
            if kind == "chart":
                ticker = ["^GSPC", *TICKERS][i // 3 % (len(TICKERS) + 1)]
                fmt = "png" if i // 3 % 2 == 0 else "svg"
                r = s.get(f"{self.base}/forecast/{quote(ticker, safe='')}.{fmt}", params={"wait": 0},
                          timeout=30)  # fmt: skip
            elif kind == "batch":
                r = s.post(f"{self.base}/predict", json={"tickers": BATCH}, timeout=30)
            else:
                r = s.post(f"{self.base}/jobs/ping", timeout=30)
            result = outcome(r)
        except Exception as exc:  # counted like any other outcome (a lost future would hide it)
            result = type(exc).__name__
        with self.lock:
            self.outcomes[f"{kind} {result}"] += 1

    def run(self, until: float) -> None:
        sessions = [session("heavy") for _ in range(16)]
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            i = 0
            while (due := started + i / self.per_s) < until:
                time.sleep(max(0.0, due - time.monotonic()))
                pool.submit(self.request, sessions[i % 16], i)
                i += 1


@dataclass
class Light:
    """Another tenant: a ping every `every_s`. How long each took is read from its record afterwards (the
    job Redis's own submitted_at and finished_at), so following them costs no requests meanwhile."""

    base: str
    every_s: float = 1.0
    job_ids: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    def run(self, until: float) -> None:
        s = session("light")
        started = time.monotonic()
        i = 0
        while (due := started + i * self.every_s) < until:
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                r = s.post(f"{self.base}/jobs/ping", timeout=30)
                if r.status_code == 202:
                    self.job_ids.append(r.json()["job_id"])
                else:
                    self.refused[outcome(r)] += 1
            except requests.RequestException as exc:
                self.refused[type(exc).__name__] += 1
            i += 1

    def latencies(self, client: redis.Redis) -> tuple[list[float], Counter[str]]:
        """Once every ping finished (or FOLLOW_S passed): each completed ping's seconds from submission to
        result, and how many ended otherwise (or are still unfinished)."""
        from workers.jobs import JobRegistry

        jobs = JobRegistry(client, 0)
        deadline = time.monotonic() + FOLLOW_S
        last = self.job_ids[-1] if self.job_ids else None
        # Pings are taken in order (one FIFO queue on Redis): the last one finishes about last.
        while last and time.monotonic() < deadline and not ((job := jobs.get(last)) and job.finished):
            time.sleep(1.0)
        seconds: list[float] = []
        other: Counter[str] = Counter(self.refused)
        for job_id in self.job_ids:
            job = jobs.get(job_id)
            if job is not None and job.status == "succeeded" and job.finished_at and job.submitted_at:
                seconds.append(job.finished_at - job.submitted_at)
            else:
                other["gone" if job is None else str(job.status)] += 1
        return seconds, other


def sampler(jobs: redis.Redis, cache: redis.Redis, started: float, until: float, every_s: float,
            samples: list[dict[str, Any]]) -> None:  # fmt: skip
    from workers.jobs import keys

    while True:
        held = sum(int(n) for n in cache.hvals(keys.tenant_bytes("heavy")))
        samples.append({
            "t_s": round(time.monotonic() - started, 1),
            "jobs_redis_MiB": jobs.info("memory")["used_memory"] / MIB,
            "jobs_redis_keys": jobs.dbsize(),
            "cache_redis_MiB": cache.info("memory")["used_memory"] / MIB,
            "heavy_cache_MiB": held / MIB,
        })  # fmt: skip
        if time.monotonic() >= until:
            return
        time.sleep(min(every_s, max(0.0, until - time.monotonic())))


def stored_jobs(client: redis.Redis, owner: str) -> dict[str, dict[str, int]]:
    """The owner's stored jobs by type and status (what its requests became), from the status indexes."""
    from workers.jobs import JobRegistry, JobStatus, keys

    counts = {t: {str(s): int(client.zcard(keys.filtered_index(owner, s, t))) for s in JobStatus}
              for t in ("chart", "predict_batch", "ping")}  # fmt: skip
    found = {t: {s: n for s, n in by.items() if n} for t, by in counts.items()}
    failed, _ = JobRegistry(client, 0).list(status="failed", owner=owner, limit=500)
    found["failed_by_code"] = dict(Counter((j.error or {}).get("code", "") for j in failed))
    return found


def held_by_tenant(cache: redis.Redis) -> dict[str, int]:
    """Bytes each tenant holds on the cache Redis (its budget's counter)."""
    return {key.decode(): sum(int(n) for n in cache.hvals(key))
            for key in cache.scan_iter("stockq:tenant:*:bytes")}  # fmt: skip


def set_up(base: str) -> None:
    """The tickers ingested and a parent model trained (one epoch: the bytes measured do not depend on how
    well it forecasts); one chart and one batch load it into the inference processes."""
    s = session("light")
    run_job(s, base, "/ingest", {"tickers": ["^GSPC", *TICKERS]})
    run_job(s, base, "/train", {"ticker": "^GSPC", "epochs": 1})
    run_job(s, base, "/predict", {"tickers": BATCH[:21]})
    wait_up(lambda: s.get(f"{base}/forecast/AAPL.png", params={"wait": 10}, timeout=30).status_code == 200,
            "the first chart", 120)  # fmt: skip


def in_threads(*runs: Callable[[], None]) -> None:
    threads = [threading.Thread(target=run, daemon=True) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args()

    var = OUT_DIR / "memory-var"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    jobs_server, jobs_port = start_redis(var, "jobs-redis", "768mb", "noeviction")
    cache_server, cache_port = start_redis(var, "cache-redis", "384mb", "allkeys-lru")
    cache_url = f"redis://127.0.0.1:{cache_port}/0"
    isolate(var, jobs_port, STOCKQ_CACHE_REDIS_URL=cache_url, STOCKQ_EXPORTER_PORT=str(free_port()))
    # Two tenants (isolate() leaves the keys out): each has budgets, an in-flight cap and a cache budget.
    os.environ["STOCKQ_API_KEYS"] = ",".join(f"{name}:{key}" for name, key in KEYS.items())
    from stockq.cli.stack import Stack
    from stockq.settings import Settings

    settings = Settings()

    stack = Stack(settings, var / "logs")
    try:
        stack.start()
        if not stack.wait_ready(300):
            raise SystemExit(f"stack not ready; logs in {stack.log_dir}")
        base = f"http://127.0.0.1:{settings.api_port}"
        set_up(base)
        jobs, cache = redis.Redis(port=jobs_port), redis.Redis.from_url(cache_url)
        baseline = jobs.info("memory")["used_memory"]
        per_s = min(item.amount / item.get_expiry() for item in parse_many(settings.rate_limit_predict))
        heavy, light = Heavy(base, per_s), Light(base)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        until = started + args.minutes * 60
        in_threads(lambda: heavy.run(until), lambda: light.run(until),
                   lambda: sampler(jobs, cache, started, until, args.sample_s, samples))  # fmt: skip
        maxmemory = int(jobs.config_get("maxmemory")["maxmemory"])
        heavy_jobs, held = stored_jobs(jobs, "heavy"), held_by_tenant(cache)
        pings, missed = light.latencies(jobs)
    finally:
        stack.stop()
        for server in (jobs_server, cache_server):
            server.terminate()
            server.wait(10)

    bound = baseline + per_s * args.minutes * 60 * RECORD_BOUND_BYTES
    peak = max(s["jobs_redis_MiB"] for s in samples)
    rows = samples[:: max(1, len(samples) // SAMPLES_SHOWN)][:SAMPLES_SHOWN]
    if rows[-1] is not samples[-1]:
        rows.append(samples[-1])
    accepted = sum(n for k, n in heavy.outcomes.items() if k.endswith((" 202", " 200")))
    report("memory", rows, {
        "minutes": args.minutes,
        "heavy_requests_per_s": per_s,
        "heavy_outcomes": dict(sorted(heavy.outcomes.items())),
        "heavy_jobs_at_end": heavy_jobs,
        "cache_bytes_held_at_end": held,
        "jobs_redis_baseline_MiB": round(baseline / MIB, 2),
        "jobs_redis_peak_MiB": round(peak, 2),
        "jobs_redis_end_MiB": round(samples[-1]["jobs_redis_MiB"], 2),
        "jobs_redis_bound_MiB": round(bound / MIB, 2),
        "within_bound": peak * MIB <= bound,
        "jobs_redis_maxmemory_MiB": maxmemory / MIB,
        "jobs_redis_bytes_per_accepted_request": round((peak * MIB - baseline) / max(1, accepted)),
        "cache_redis_peak_MiB": round(max(s["cache_redis_MiB"] for s in samples), 2),
        "heavy_cache_peak_MiB": round(max(s["heavy_cache_MiB"] for s in samples), 2),
        "tenant_cache_budget_MiB": settings.tenant_cache_bytes / MIB,
        "light_pings_completed": len(pings),
        "light_pings_not_completed": dict(missed),
        "light_ping_p50_ms": round(pct(pings, 50) * 1000, 1) if pings else None,
        "light_ping_p99_ms": round(pct(pings, 99) * 1000, 1) if pings else None,
    })  # fmt: skip


if __name__ == "__main__":
    main()
