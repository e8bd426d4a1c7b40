"""Submit benchmark: stockq's submit path against a bare Flask + `apply_async` peer, side by side in one run.

    python -m bench.submit [--broker URL] [--rounds 3] [--seconds 10] [--samples 200]

Both APIs run under the same gunicorn settings (webapp/stack.gunicorn_argv: 2 workers, gthread, 8 threads);
`wrk -t2 -c16` drives each in turn with no worker consuming, so only the API and the broker are timed:
`POST /predict-child` (a tenant key, validation, job registry, a fresh Idempotency-Key per request, the
rate limiter and the HTTP metrics all on) vs the peer's `POST /enqueue`, and `/health` vs the peer's
`/hello`. Then, with workers running, the round trips: a raw Celery `noop.delay().get()` vs a warm
`POST /predict-child?wait=5` vs `POST /jobs/ping?wait=5`, interleaved. Rounds alternate their order; the
median ratio of the rounds counts. The broker is STOCKQ_BROKER_URL / --broker (Redis or amqp://); the job
registry is a redis-server of the bench's own (or --redis). Writes var/bench/submit.json.

bench/scale.py imports `bench_stack`, `run_wrk`, `throughput` and `round_trips`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from bench.common import OUT_DIR, free_port, pct, report, run_job, start_redis_server, stop_group, wait_up

TENANT = "bench"
# On, but far above what the benchmark sends: it measures the limiter's cost, not its throttling.
HIGH_LIMIT = "100000000/minute"
# The fast training settings of the tests: the parent the warm predictions use trains in seconds.
FAST_TRAINING = {"STOCKQ_TRAIN_HISTORY_DAYS": "700", "STOCKQ_DEFAULT_EPOCHS": "1"}
WARM_BODY = {"ticker": "AAPL", "model": "parent"}  # served warm from the parent: one training only


@dataclass
class BenchStack:
    """The two APIs (and their workers while they run) on one broker and one registry Redis."""

    var: Path
    broker_url: str
    redis_url: str
    api_key: str
    stockq: str  # base URL of stockq's API
    peer: str  # base URL of the bare peer
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    redis_pid: int | None = None  # the bench's own redis-server (its CPU is measured too)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        log = open(self.var / f"{name}.log", "ab")  # noqa: SIM115 (the child holds it)
        proc = subprocess.Popen(argv, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def stop(self, *names: str) -> None:
        """Stop `names` (default: all), each by its own process group."""
        for name in names or list(self.procs):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_group(proc)

    def start_workers(self) -> None:
        """A stockq worker for the inference, training and ingest queues (two pool processes, like the
        inference group of `stockq up`) and the peer's noop worker, also two processes."""
        from stockq.cli.stack import worker_argv

        argv = [*worker_argv("inference,training,ingest", 2, "bench"), "--without-mingle", "--without-gossip"]
        since = time.time()
        self.spawn("worker", argv, **FAST_TRAINING)
        celery = str(Path(sys.executable).parent / "celery")
        self.spawn("peer-worker", [celery, "-A", "bench.submit_peer", "worker", "-Q", "bench-peer", "-c", "2",
                                   "--without-mingle", "--without-gossip", "-n", "peer@%h"])  # fmt: skip
        client = redis.Redis.from_url(self.redis_url)
        stamps = lambda: client.zrange("stockq:workers:inference", 0, -1, withscores=True)  # noqa: E731
        wait_up(lambda: any(score > since for _, score in stamps()), "stockq worker", 240)
        peer_celery().send_task("bench.noop").get(timeout=120)

    def stop_workers(self) -> None:
        self.stop("worker", "peer-worker")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (gunicorn's workers), from /proc: on a shared
    machine, CPU per request is steadier than requests per second."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def peer_celery() -> Any:
    """The peer's Celery app in this process (BENCH_BROKER_URL / BENCH_RESULT_URL are set by bench_stack)."""
    from bench.submit_peer import celery

    return celery


def _gunicorn(stack: BenchStack, name: str, app: str, port: int, **env: str) -> None:
    from stockq.cli.stack import gunicorn_argv

    argv = gunicorn_argv(port)
    argv[-1] = app  # the same server settings for both: only the application differs
    stack.spawn(name, argv, **env)
    wait_up(lambda: requests.get(f"http://127.0.0.1:{port}/health" if name == "api" else
                               f"http://127.0.0.1:{port}/hello", timeout=1).ok, name)  # fmt: skip


@contextmanager
def bench_stack(name: str = "submit", broker_url: str | None = None, redis_url: str | None = None,
                **api_env: str) -> Iterator[BenchStack]:  # fmt: skip
    """Both APIs under gunicorn on `broker_url` (default: the registry Redis), a fresh var dir, and a
    redis-server of the bench's own unless `redis_url` names one (flushed first). Workers: start_workers."""
    var = OUT_DIR / f"{name}-var"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    server = None
    if redis_url is None:
        server, redis_url = start_redis_server(var)
    broker_url = broker_url or redis_url
    api_key = secrets.token_urlsafe(24)
    env = {**os.environ, "STOCKQ_REDIS_URL": redis_url, "STOCKQ_BROKER_URL": broker_url,
           "STOCKQ_FEAST_REDIS_DB": "1", "STOCKQ_VAR_DIR": str(var), "STOCKQ_DATA_SOURCE": "bundled",
           "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}", "STOCKQ_API_KEYS": f"{TENANT}:{api_key}",
           "STOCKQ_ADMIN_KEYS": "", "STOCKQ_RATE_LIMIT": HIGH_LIMIT, "STOCKQ_RATE_LIMIT_PREDICT": HIGH_LIMIT,
           "STOCKQ_MAX_INFLIGHT": "100000000", "BENCH_BROKER_URL": broker_url, "BENCH_RESULT_URL": redis_url,
           "PYTHONUNBUFFERED": "1", **api_env}  # fmt: skip
    os.environ.update({k: env[k] for k in ("BENCH_BROKER_URL", "BENCH_RESULT_URL")})
    api_port, peer_port = free_port(), free_port()
    urls = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{peer_port}"
    stack = BenchStack(
        var, broker_url, redis_url, api_key, *urls, env, redis_pid=server.pid if server else None
    )
    try:
        wait_up(lambda: redis.Redis.from_url(redis_url).ping(), "redis", 10)
        redis.Redis.from_url(redis_url).flushdb()
        from ml.registry.mlflow_store import ensure_tracking_store

        ensure_tracking_store(env["MLFLOW_TRACKING_URI"], (var / "mlartifacts").as_uri())
        prom = var / "prometheus"
        prom.mkdir()
        _gunicorn(stack, "api", "webapp:create_app()", api_port, PROMETHEUS_MULTIPROC_DIR=str(prom))
        _gunicorn(stack, "peer", "bench.submit_peer:create_app()", peer_port)
        yield stack
    finally:
        stack.stop()
        if server is not None:
            server.terminate()
            server.wait(10)


_WRK_LUA = """
local nonce = "%(nonce)s"
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
local n = 0
request = function()
  n = n + 1
  local headers = %(headers)s
  %(idempotency)s
  return wrk.format(%(method)s, nil, headers, %(body)s)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%d %%f %%f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for these ASCII values


def run_wrk(url: str, *, method: str = "GET", body: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, idempotency: bool = False, seconds: float = 10,
            threads: int = 2, connections: int = 16) -> dict[str, Any]:  # fmt: skip
    """Debian's wrk against `url`: requests per second, socket errors, responses >= 400 and latency
    percentiles. `idempotency`: a fresh Idempotency-Key on every request (unique across runs)."""
    all_headers = dict(headers or {})
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    lua = _WRK_LUA % {
        "nonce": secrets.token_hex(6),
        "headers": "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in all_headers.items()) + "}",
        "idempotency": 'headers["Idempotency-Key"] = nonce .. "-" .. tid .. "-" .. n' if idempotency else "",
        "method": _lua_str(method),
        "body": "nil" if body is None else _lua_str(json.dumps(body)),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "-s", script.name, url],
            capture_output=True, text=True, timeout=seconds + 60,
        )  # fmt: skip
    finally:
        os.unlink(script.name)
    found = re.search(r"^WRK (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)$", out.stdout, re.M)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    n, duration_us, socket_errors, bad_status = (int(found.group(i)) for i in range(1, 5))
    return {"per_s": n / (duration_us / 1e6), "requests": n, "socket_errors": socket_errors,
            "status_errors": bad_status, "p50_ms": float(found.group(5)) / 1000,
            "p99_ms": float(found.group(6)) / 1000}  # fmt: skip


def throughput(stack: BenchStack, seconds: float, first: str = "peer") -> dict[str, dict[str, Any]]:
    """One round, no worker consuming: the peer's /enqueue vs stockq's /predict-child and /hello vs
    /health (`first` goes first in each pair)."""
    server = {"peer_enqueue": "peer", "stockq_submit": "api", "peer_hello": "peer", "stockq_health": "api"}
    runs = {
        "peer_enqueue": lambda: run_wrk(f"{stack.peer}/enqueue", method="POST", body={"ticker": "AAPL"},
                                        seconds=seconds),
        "stockq_submit": lambda: run_wrk(f"{stack.stockq}/predict-child", method="POST",
                                         body={"ticker": "AAPL"}, headers=stack.auth, idempotency=True,
                                         seconds=seconds),
        "peer_hello": lambda: run_wrk(f"{stack.peer}/hello", seconds=seconds),
        "stockq_health": lambda: run_wrk(f"{stack.stockq}/health", seconds=seconds),
    }  # fmt: skip
    order = [("peer_enqueue", "stockq_submit"), ("peer_hello", "stockq_health")]
    out: dict[str, dict[str, Any]] = {}
    for pair in order:
        for name in pair if first == "peer" else reversed(pair):
            api_pid = stack.procs[server[name]].pid
            api_cpu = cpu_seconds(api_pid)
            redis_cpu = cpu_seconds(stack.redis_pid) if stack.redis_pid else 0.0
            out[name] = runs[name]()
            n = max(1, out[name]["requests"])
            out[name]["api_cpu_us"] = (cpu_seconds(api_pid) - api_cpu) / n * 1e6
            if stack.redis_pid:
                out[name]["redis_cpu_us"] = (cpu_seconds(stack.redis_pid) - redis_cpu) / n * 1e6
    # The queued messages and records of this round are not the next round's business.
    client = redis.Redis.from_url(stack.redis_url)
    client.delete("bench-peer", "inference")
    return out


def warm_up(stack: BenchStack) -> None:
    """Ingest ^GSPC and AAPL, train the parent (seconds), load it into both pool processes."""
    session = requests.Session()
    session.headers.update(stack.auth)
    run_job(session, stack.stockq, "/ingest", {"tickers": ["^GSPC", "AAPL"]})
    run_job(session, stack.stockq, "/train", {"ticker": "^GSPC", "epochs": 1})
    for _ in range(20):
        run_job(session, stack.stockq, "/predict-child", WARM_BODY, timeout_s=120)


def round_trips(stack: BenchStack, samples: int) -> dict[str, list[float]]:
    """Seconds per round trip, interleaved so drift hits all three alike: the raw Celery noop (its result
    through the Redis backend), a warm `POST /predict-child?wait=5` and `POST /jobs/ping?wait=5`."""
    celery = peer_celery()
    session = requests.Session()
    session.headers.update(stack.auth)
    out: dict[str, list[float]] = {"raw_noop": [], "predict_wait": [], "ping_wait": []}
    for _ in range(samples):
        started = time.perf_counter()
        celery.send_task("bench.noop").get(timeout=10)
        out["raw_noop"].append(time.perf_counter() - started)
        for name, path, body in (("predict_wait", "/predict-child?wait=5", WARM_BODY),
                                 ("ping_wait", "/jobs/ping?wait=5", None)):  # fmt: skip
            started = time.perf_counter()
            r = session.post(stack.stockq + path, json=body, timeout=10)
            out[name].append(time.perf_counter() - started)
            if r.status_code != 200 or r.json().get("status") != "succeeded":
                raise SystemExit(f"{path} answered {r.status_code}: {r.text[:300]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=os.environ.get("STOCKQ_BROKER_URL"),
                        help="broker URL (redis:// or amqp://); default: the bench's own Redis")  # fmt: skip
    parser.add_argument("--redis", default=None, help="job registry Redis (flushed); default: its own")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--samples", type=int, default=200, help="round trips of each kind per round")
    parser.add_argument("--only", choices=("throughput", "round_trips"), help="measure one half only")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # per request, microseconds, of each side's API (and Redis) processes
    socket_errors: dict[str, int] = {}

    def row(r: int, measure: str, peer: dict[str, Any] | float, stockq: dict[str, Any] | float) -> None:
        """One side-by-side figure: stockq's over the peer's (a rate: higher is better; a latency: lower)."""
        p, q = (peer["per_s"], stockq["per_s"]) if isinstance(peer, dict) else (peer, stockq)
        ratios.setdefault(measure, []).append(q / p)
        out: dict[str, Any] = {"round": r + 1, "measure": measure, "peer": p, "stockq": q, "ratio": q / p}
        if isinstance(peer, dict) and isinstance(stockq, dict):
            # The peer's CPU per request over stockq's: what the rates would be on an idle machine.
            out["cpu_ratio"] = peer["api_cpu_us"] / stockq["api_cpu_us"]
            ratios.setdefault(measure + " (cpu)", []).append(out["cpu_ratio"])
            for side, figures in (("peer", peer), ("stockq", stockq)):
                for k in ("api_cpu_us", "redis_cpu_us"):
                    if k in figures:
                        cpu.setdefault(f"{measure}: {side} {k}", []).append(figures[k])
        rows.append(out)

    with bench_stack(broker_url=args.broker, redis_url=args.redis) as stack:
        if args.only != "throughput":
            stack.start_workers()
            warm_up(stack)
            for r in range(args.rounds):
                p50 = {k: pct(v, 50) * 1000 for k, v in round_trips(stack, args.samples).items()}
                row(r, "predict?wait p50 ms", p50["raw_noop"], p50["predict_wait"])
                row(r, "ping?wait p50 ms", p50["raw_noop"], p50["ping_wait"])
            stack.stop_workers()
        for r in range(args.rounds if args.only != "round_trips" else 0):
            t = throughput(stack, args.seconds, first="peer" if r % 2 == 0 else "stockq")
            refused = {k: v["status_errors"] for k, v in t.items() if v["status_errors"]}
            if refused:
                raise SystemExit(f"answers >= 400 (a limit throttled?): {refused}")
            # Timeouts and resets: wrk's own, counted (a loaded machine produces some), not fatal.
            for k, v in t.items():
                socket_errors[k] = socket_errors.get(k, 0) + v["socket_errors"]
            row(r, "submit req/s", t["peer_enqueue"], t["stockq_submit"])
            row(r, "health req/s", t["peer_hello"], t["stockq_health"])
        broker = stack.broker_url.split("://")[0]
    report("submit", rows, {
        "broker": broker,
        "median ratios": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
        "median CPU per request (us)": {k: round(statistics.median(v)) for k, v in cpu.items()},
        "wrk socket errors (timeouts, resets)": socket_errors,
        "measures": "submit: POST /enqueue (peer) vs POST /predict-child; health: GET /hello vs /health; "
                    "predict?wait, ping?wait: a raw Celery noop.delay().get() (peer) vs POST "
                    "/predict-child?wait=5 (warm) and POST /jobs/ping?wait=5",
        "targets": "submit ratio >= 0.7; predict?wait ratio <= 3",
        "settings": f"gunicorn -w 2 -k gthread --threads 8 (both); wrk -t2 -c16 -d{args.seconds:g}s; auth on "
                    f"(tenant key), metrics on, limiter on at {HIGH_LIMIT} (no request throttled: checked), "
                    "validation, registry, a fresh Idempotency-Key per request",
    })  # fmt: skip


if __name__ == "__main__":
    main()
