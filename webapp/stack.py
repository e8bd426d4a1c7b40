"""`stockq up`: Redis (if needed), gunicorn, one Celery worker per queue group and Flower, in the
foreground. Every child runs in its own process group; stopping the stack stops all of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis

from ml.settings import Settings

# Queue groups -> concurrency. The agent queue runs one process: embedded Qdrant allows one process
# per path (set QDRANT_URL to scale it out). Training runs one job at a time per worker; ingest has its
# own process so a long download never holds up predictions.
WORKER_GROUPS = {"training": 1, "inference": 2, "ingest": 1, "agent": 1}


def gunicorn_argv(port: int) -> list[str]:
    """The API server: threads, so a request waiting on a job (`?wait=`, charts) blocks no other."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    return [gunicorn, "-b", f"127.0.0.1:{port}", "-w", "2", "-k", "gthread", "--threads", "8",
            "--timeout", "60", "-c", "python:webapp.gunicorn_conf", "webapp:create_app()"]  # fmt: skip


def worker_argv(queues: str, concurrency: int, name: str) -> list[str]:
    """How every Celery worker of ours is started, so operators recognise and scale them."""
    celery = str(Path(sys.executable).parent / "celery")
    return [celery, "-A", "workers", "worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h",
            "--loglevel", "INFO"]  # fmt: skip


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def ensure_redis(self) -> None:
        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
            return
        except redis.RedisError:
            pass
        url = urlparse(self.settings.redis_url)
        server = shutil.which("redis-server")
        if server is None or url.hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise SystemExit(
                f"Redis at {self.settings.redis_url} is not answering and cannot be started here"
            )
        data = self.settings.var_path / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # AOF on: queued jobs survive a Redis restart.
        self._spawn(
            "redis",
            [
                server,
                "--port",
                str(url.port or 6379),
                "--bind",
                url.hostname,
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
        )
        for _ in range(50):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise SystemExit("redis-server did not start; see " + str(self.log_dir / "redis.log"))

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ensure_redis()
        prom_dir = self.settings.var_path / "prometheus"
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True)
        bin_dir = Path(sys.executable).parent
        self._spawn(
            "api",
            gunicorn_argv(self.settings.api_port),
            env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)},
        )
        for queues, concurrency in WORKER_GROUPS.items():
            name = queues.split(",")[0]
            self._spawn(f"worker-{name}", worker_argv(queues, concurrency, name))
        self._spawn(
            "flower",
            [
                str(bin_dir / "celery"),
                "-A",
                "workers",
                "flower",
                f"--port={self.settings.flower_port}",
                "--address=127.0.0.1",
            ],
        )

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        import requests

        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.settings.api_port}/ready"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.5)
        return False

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(
                    f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}"
                )

    def stop(self, timeout_s: float = 20.0, names: list[str] | None = None) -> None:
        """Stop `names` (default: everything): the API, workers and Flower first, each through its main
        process (a Celery worker's warm shutdown finishes or requeues its tasks), then Redis, which they
        need until they are gone. Another Ctrl-C meanwhile cannot cut this short."""
        chosen = list(self.procs) if names is None else names
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop_group([n for n in chosen if n != "redis"], timeout_s)
            if "redis" in chosen:
                self._stop_group(["redis"], 10.0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_group(self, names: list[str], timeout_s: float) -> None:
        for name in names:
            with contextlib.suppress(ProcessLookupError):
                self.procs[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name in names:
            proc = self.procs.pop(name)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            # Whatever is left of its process group (prefork children, gunicorn workers) goes too.
            self._signal(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
