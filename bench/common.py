"""Shared bench plumbing: an isolated local stack, timing statistics, a table and a JSON file."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import requests
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
console = Console()

if TYPE_CHECKING:
    from stockq.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis_server(var: Path) -> tuple[subprocess.Popen, str]:
    """A private, non-persistent redis-server with its files in `var`, and its URL (DB 0)."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(var)], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return server, f"redis://127.0.0.1:{port}/0"


def wait_up(check: Any, what: str, timeout_s: float = 60) -> None:
    """Until `check()` is true (connection errors count as not yet), else exit the benchmark."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, redis.RedisError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not come up in {timeout_s}s")


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session, with its children: SIGINT first (gunicorn's quick
    shutdown ends keep-alive connections now; celery's warm one), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary_ms(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": pct(samples, 50) * 1000,
        "p99_ms": pct(samples, 99) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any]) -> Path:
    table = Table(title=name)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            *(f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns)
        )
    console.print(table)
    for key, value in extra.items():
        console.print(f"{key}: {value}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps({"rows": rows, **extra, "measured_at": time.time()}, indent=1))
    console.print(f"written {path}")
    return path


@contextmanager
def local_stack(name: str, db: int, **env: str) -> Iterator[dict[str, Any]]:
    """`stockq up`'s Stack on its own Redis DBs, ports and var dir (environment set before Settings)."""
    var = OUT_DIR / f"{name}-var"
    os.environ.update(
        {
            "STOCKQ_REDIS_URL": f"redis://127.0.0.1:6379/{db}",
            "STOCKQ_FEAST_REDIS_DB": str(db + 1),
            "STOCKQ_VAR_DIR": str(var),
            "STOCKQ_API_PORT": str(free_port()),
            "STOCKQ_FLOWER_PORT": str(free_port()),
            "STOCKQ_DATA_SOURCE": os.environ.get("STOCKQ_DATA_SOURCE", "bundled"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}",
            **env,
        }
    )
    os.environ.pop("STOCKQ_API_KEYS", None)
    from stockq.cli.stack import Stack
    from stockq.settings import Settings

    settings = Settings()
    for n in (db, db + 1):
        redis.Redis(db=n).flushdb()
    stack = Stack(settings, var / "logs")
    stack.start()
    try:
        if not stack.wait_ready(180):
            raise SystemExit(f"stack not ready; logs in {stack.log_dir}")
        yield {"settings": settings, "stack": stack, "base": f"http://127.0.0.1:{settings.api_port}"}
    finally:
        stack.stop()


def isolate(var: Path, redis_port: int, **env: str) -> Settings:
    """Settings for a stack of the bench's own: its redis-server port, free API ports and `var`, put in
    the environment first so every child process the bench spawns inherits them."""
    os.environ.update(
        {
            "STOCKQ_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "STOCKQ_FEAST_REDIS_DB": "1",
            "STOCKQ_VAR_DIR": str(var),
            "STOCKQ_API_PORT": str(free_port()),
            "STOCKQ_FLOWER_PORT": str(free_port()),
            "STOCKQ_DATA_SOURCE": os.environ.get("STOCKQ_DATA_SOURCE", "bundled"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
    )
    os.environ.pop("STOCKQ_API_KEYS", None)
    from stockq.settings import Settings

    return Settings()


def advertised_since(client: redis.Redis, queue: str, name: str, since: float) -> bool:
    """Worker `name` (its `-n name@%h`) stamped `queue` after `since` (unix time): a pool process of
    that worker, started after `since`, can take a job (workers/heartbeat.py)."""
    return any(
        member.decode().startswith(name + "@") and score > since
        for member, score in client.zrange(f"stockq:workers:{queue}", 0, -1, withscores=True)
    )


def run_job(
    session: requests.Session, base: str, path: str, body: dict | None, timeout_s: float = 600
) -> dict:
    """Submit (or, for a `/status/<id>` path, follow) a job until it ends; exits unless it succeeded."""
    if path.startswith("/status/"):
        job_id = path.removeprefix("/status/")
    else:
        job_id = session.post(base + path, json=body, timeout=30).json()["job_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = session.get(f"{base}/status/{job_id}", timeout=10).json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            if job["status"] != "succeeded":
                raise SystemExit(f"{path} {body} -> {job['status']}: {job.get('error')}")
            return job
        time.sleep(0.2)
    raise SystemExit(f"{path} {body} did not finish in {timeout_s}s")
