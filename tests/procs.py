"""Real processes for tests: Celery workers, gunicorn, a private redis-server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from stockq.cli.stack import gunicorn_argv, worker_argv
from stockq.settings import Settings
from workers.clock import server_time

BIN = Path(sys.executable).parent
# Worker settings that keep an end-to-end training to seconds: two epochs per phase (select, then the
# refit), a child on its last two years. The parent reads every ingested ticker's full history at a
# stride of 4: about a second per epoch per three tickers on one CPU thread.
FAST_TRAINING = {
    "STOCKQ_TRAIN_HISTORY_DAYS": "700",
    "STOCKQ_DEFAULT_EPOCHS": "2",
    "STOCKQ_AUTO_TRAIN_EPOCHS": "2",
}


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "STOCKQ_REDIS_URL": settings.redis_url,
        "STOCKQ_FEAST_REDIS_DB": str(settings.feast_redis_db),
        "STOCKQ_VAR_DIR": str(settings.var_path),
        "STOCKQ_DATA_SOURCE": settings.data_source,
        "STOCKQ_API_KEYS": settings.api_keys.get_secret_value(),
        "STOCKQ_ADMIN_KEYS": settings.admin_keys.get_secret_value(),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PYTHONUNBUFFERED": "1",
    }
    if settings.broker_url:
        env["STOCKQ_BROKER_URL"] = settings.broker_url
    env.update(extra)
    return env


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before: Linux may give the same free
    port to two binds in a row (a stack once got its API and Flower on one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def alive(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.p = subprocess.Popen(
            argv, env=env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
        try:
            os.killpg(self.p.pid, sig)
            self.p.wait(timeout_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(5)
        self._fh.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")


def start_worker(
    settings: Settings, queues: str, name: str, concurrency: int = 1, app: str = "workers",
    wrap: Sequence[str] = (), **env: str,
) -> Proc:  # fmt: skip
    """`app`: the Celery app module (tests.fault_tasks adds test-only tasks to the real one). `wrap`: a
    command the worker runs under (tests/netns.py: on another host)."""
    # mingle and gossip only slow a test worker's start: it never needs its peers' state
    argv = [*worker_argv(queues, concurrency, name), "--without-mingle", "--without-gossip"]
    argv[argv.index("-A") + 1] = app
    argv = [*wrap, *argv]
    client = redis.Redis.from_url(settings.redis_url)
    first = queues.split(",")[0]
    # Only a stamp of this process counts: a killed worker of the same name leaves its last one behind
    # (it never ran its shutdown), and a test that went on at once met a worker whose pool was starting.
    since = server_time(client)
    proc = Proc(argv, settings_env(settings, **env), settings.var_path / f"worker-{name}.log")

    def up() -> bool:
        if proc.p.poll() is not None:
            raise AssertionError(f"worker {name} exited:\n{proc.tail()}")
        stamps = client.zrange(f"stockq:workers:{first}", 0, -1, withscores=True)
        return any(m.decode().startswith(name + "@") and at >= since for m, at in stamps)

    try:
        wait_until(up, 300, f"worker {name}", every=0.2)  # a cold start on a loaded 2-core machine is slow
    except AssertionError:
        proc.kill()  # never leave a worker behind that no fixture will stop
        raise
    return proc


def start_all(*starts: Callable[[], Proc]) -> list[Proc]:
    """Start processes at once, so their cold starts (imports of torch, MLflow, Feast) overlap; if one
    fails, the others are stopped and its error raised."""
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = [pool.submit(start) for start in starts]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for f in futures:
            if f.exception() is None:
                f.result().kill()
        raise errors[0]
    return [f.result() for f in futures]


def start_gunicorn(settings: Settings, port: int, **env: str) -> Proc:
    argv = gunicorn_argv(port)
    proc = Proc(argv, settings_env(settings, **env), settings.var_path / "gunicorn.log")
    import requests

    def up() -> bool:
        if proc.p.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{proc.tail()}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, 120, "gunicorn", every=0.2)  # started beside cold workers: see start_worker
    return proc


def start_redis(port: int, data_dir: Path, aof: bool = False, bind: str = "127.0.0.1",
                password: str | None = None) -> Proc:  # fmt: skip
    """`aof`: durable like the Redis `stockq up` starts (append-only file, fsync every second). `bind`:
    the one address it listens on; off loopback Redis answers only with a `password`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = shutil.which("redis-server") or "redis-server"
    argv = [server, "--port", str(port), "--bind", bind, "--dir", str(data_dir), "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec"]  # fmt: skip
    if password:
        argv += ["--requirepass", password]
    proc = Proc(argv, dict(os.environ), data_dir / "redis.log")
    client = redis.Redis(host=bind, port=port, password=password, socket_connect_timeout=0.2)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(up, 10, "redis-server")
    return proc
