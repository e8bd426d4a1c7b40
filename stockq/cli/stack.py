"""`stockq up`: Redis (if needed), gunicorn, one Celery worker per queue group and Flower, in the
foreground, under a supervisor (stockq/cli/supervisor.py): a child that dies is restarted while the rest keeps
serving; stopping the stack stops all of them."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis

from ml.registry.mlflow_store import ensure_tracking_store
from stockq.cli.supervisor import Supervisor
from stockq.settings import Settings

# Queue groups -> concurrency. The agent queue runs one process: embedded Qdrant allows one process
# per path (set QDRANT_URL to scale it out). Training runs one job at a time per worker; ingest has its
# own process so a long download never holds up predictions.
WORKER_GROUPS = {"training": 1, "inference": 2, "ingest": 1, "agent": 1}


FLOWER_AUTH_FILE = "flower-auth"


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


def beat_argv() -> list[str]:
    """celery beat with redbeat's Redis-locked scheduler: the schedules of workers/scheduled.py, sent once
    however many beats run."""
    celery = str(Path(sys.executable).parent / "celery")
    return [celery, "-A", "workers", "beat", "-S", "workers.scheduled.RedBeat", "--loglevel", "INFO"]


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    mlflow_ui: bool = False
    beat: bool = False
    supervisor: Supervisor = field(init=False)
    generated_flower_auth: Path | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.log_dir)

    @property
    def procs(self) -> dict[str, subprocess.Popen | None]:
        """The children by name (None while one waits for its restart or was given up)."""
        return {name: child.proc for name, child in self.supervisor.children.items()}

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
        # Append-only file under the var dir, fsynced every second: queued jobs and job records survive a
        # restart of Redis (at most the last second of writes is lost when the host itself goes down).
        self.supervisor.spawn("redis", [server, "--port", str(url.port or 6379), "--bind", url.hostname,
                                        "--dir", str(data), "--appendonly", "yes", "--appendfsync",
                                        "everysec", "--save", ""])  # fmt: skip
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
        # Created here, once, before any worker process can race another on the schema migration.
        ensure_tracking_store(self.settings.tracking_uri, self.settings.artifact_root)
        prom_dir = self.settings.var_path / "prometheus"
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True)
        bin_dir = Path(sys.executable).parent
        spawn = self.supervisor.spawn
        spawn("api", gunicorn_argv(self.settings.api_port), env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)})
        for queues, concurrency in WORKER_GROUPS.items():
            name = queues.split(",")[0]
            spawn(f"worker-{name}", worker_argv(queues, concurrency, name))
        # Flower asks for basic auth (its /metrics and /healthcheck stay open for Prometheus and probes); the
        # credentials travel in the environment, never on a command line that `ps` shows.
        spawn("flower", [str(bin_dir / "celery"), "-A", "workers", "flower",
                         f"--port={self.settings.flower_port}", "--address=127.0.0.1"],
              env={"FLOWER_BASIC_AUTH": self.flower_credentials()})  # fmt: skip
        spawn("exporter", [str(bin_dir / "stockq"), "exporter", "--port", str(self.settings.exporter_port)])
        if self.mlflow_ui:
            store, port = self.settings.tracking_uri, str(self.settings.mlflow_ui_port)
            # One server process and no job runner: a person's browser is its only client, and mlflow's
            # defaults (four server copies, a job runner and two huey consumers for its GenAI jobs, which
            # stockq never submits) would start six more processes beside the workers.
            spawn("mlflow-ui", [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", store,
                                "--host", "127.0.0.1", "--port", port, "--workers", "1"],
                  env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # fmt: skip
        if self.beat:
            # Redis-locked: a beat of another host's stack on the same Redis only waits for the lock.
            spawn("beat", beat_argv())

    def flower_credentials(self) -> str:
        """STOCKQ_FLOWER_AUTH, else `admin:<random>` generated once into the var dir (mode 0600)."""
        if self.settings.flower_auth is not None:
            return self.settings.flower_auth.get_secret_value()
        path = self.settings.var_path / FLOWER_AUTH_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"admin:{secrets.token_urlsafe(18)}")
            self.generated_flower_auth = path
        return path.read_text().strip()

    def urls(self) -> dict[str, str]:
        """What `stockq up` serves, by name."""
        s = self.settings
        found = {
            "API": f"http://127.0.0.1:{s.api_port}",
            "console": f"http://127.0.0.1:{s.api_port}/",
            "Flower": f"http://127.0.0.1:{s.flower_port}",
            "exporter": f"http://127.0.0.1:{s.exporter_port}/metrics",
        }
        if self.mlflow_ui:
            found["MLflow"] = f"http://127.0.0.1:{s.mlflow_ui_port}"
        return found

    def banner(self) -> list[str]:
        """The URLs with what a newcomer needs to know about each, one line apiece."""
        s = self.settings
        login = "STOCKQ_FLOWER_AUTH" if s.flower_auth is not None else str(s.var_path / FLOWER_AUTH_FILE)
        keys = "Authorization: Bearer <key>" if s.api_keys.get_secret_value() else "no keys: loopback only"
        notes = {
            "API": f"docs /docs, {keys}",
            "console": "jobs, forecasts and model cards in the browser",
            "Flower": f"basic auth: {login}",
            "MLflow": "runs and registered models",
        }
        return [f"{name:<9}{url}" + (f"  ({notes[name]})" if name in notes else "")
                for name, url in self.urls().items()]  # fmt: skip

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """True once `/ready` answers 200; False after `timeout_s` or when the API was given up."""
        import requests

        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.settings.api_port}/ready"
        while time.monotonic() < deadline and "api" not in self.supervisor.given_up():
            self.supervisor.poll()
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.5)
        return False

    def supervise(self, every_s: float = 0.5) -> None:
        """Keep the children running until interrupted (KeyboardInterrupt)."""
        while True:
            self.supervisor.poll()
            time.sleep(every_s)

    def stop(self, timeout_s: float = 20.0, names: list[str] | None = None) -> None:
        """Stop `names` (default: everything): the API, workers and Flower first, then Redis, which they
        need until they are gone. Another Ctrl-C meanwhile cannot cut this short."""
        chosen = list(self.supervisor.children) if names is None else names
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.supervisor.stop([n for n in chosen if n != "redis"], timeout_s)
            if "redis" in chosen:
                self.supervisor.stop(["redis"], 10.0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
