"""bench/scale.py's broker section: the submit and round-trip figures of bench/submit.py, one round on
each broker (the bench's own Redis, and RabbitMQ on a private vhost of the machine's server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import pct
from bench.submit import bench_stack, round_trips, throughput, warm_up

RABBIT = os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1:5672")
VHOST = "stockq-bench-scale"


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise SystemExit("rabbitmqctl not found: run with --brokers redis")
    subprocess.run([ctl, "-q", *args], check=check, capture_output=True, timeout=60)


@contextmanager
def rabbit_vhost(name: str = VHOST) -> Iterator[str]:
    """An empty vhost of the local RabbitMQ (its queues and messages go with it afterwards); its URL."""
    _rabbitmqctl("delete_vhost", name, check=False)
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBIT}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name, check=False)


@contextmanager
def _broker(kind: str) -> Iterator[str | None]:
    if kind == "redis":
        yield None  # bench_stack's own redis-server carries the queues as well as the registry
    elif kind == "amqp":
        with rabbit_vhost() as url:
            yield url
    else:
        raise SystemExit(f"unknown broker {kind!r}: redis or amqp")


def measure(kind: str, samples: int, seconds: float) -> dict[str, Any]:
    """Round trips (workers warm) then submit throughput (no worker consuming), on one broker."""
    load = os.getloadavg()[0]
    with _broker(kind) as url, bench_stack(name=f"scale-{kind}", broker_url=url) as stack:
        stack.start_workers()
        warm_up(stack)
        trips = round_trips(stack, samples)
        stack.stop_workers()
        rates = throughput(stack, seconds)
    bad = {k: v["status_errors"] + v["socket_errors"] for k, v in rates.items()}
    if any(bad.values()):
        raise SystemExit(f"{kind}: errors or non-2xx answers under wrk: {bad}")
    p50 = {k: pct(v, 50) * 1000 for k, v in trips.items()}
    return {
        "broker": kind,
        "raw_noop_p50_ms": p50["raw_noop"],
        "ping_wait_p50_ms": p50["ping_wait"],
        "predict_wait_p50_ms": p50["predict_wait"],
        "predict_wait_over_raw": p50["predict_wait"] / p50["raw_noop"],
        "peer_enqueue_per_s": rates["peer_enqueue"]["per_s"],
        "stockq_submit_per_s": rates["stockq_submit"]["per_s"],
        "submit_ratio": rates["stockq_submit"]["per_s"] / rates["peer_enqueue"]["per_s"],
        "peer_hello_per_s": rates["peer_hello"]["per_s"],
        "stockq_health_per_s": rates["stockq_health"]["per_s"],
        # CPU per request of each API's processes: steadier than requests per second on a shared machine.
        "peer_enqueue_cpu_us": rates["peer_enqueue"].get("api_cpu_us"),
        "stockq_submit_cpu_us": rates["stockq_submit"].get("api_cpu_us"),
        "load_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def measure_apart(kind: str, samples: int, seconds: float) -> dict[str, Any]:
    """`measure` in a process of its own: bench/submit_peer's Celery app takes its broker at import, so a
    second broker in one process would still publish to the first. A failure is recorded, not raised."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "broker.json"
        argv = [sys.executable, "-m", "bench.scale_brokers", kind, str(samples), str(seconds), str(out)]
        done = subprocess.run(argv, timeout=1800, check=False)
        if done.returncode != 0 or not out.exists():
            return {"broker": kind, "error": f"exit status {done.returncode} (its output is above)"}
        return json.loads(out.read_text())


if __name__ == "__main__":
    broker, n, secs, path = sys.argv[1:]
    Path(path).write_text(json.dumps(measure(broker, int(n), float(secs))))
