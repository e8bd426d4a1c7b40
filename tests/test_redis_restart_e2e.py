"""A durable Redis (AOF, fsync every second) SIGKILLed and restarted while 50 jobs wait in the queue: every
job completes, the API and the worker reconnect by themselves, and the API answers 503 meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import make_settings
from tests.procs import free_port, start_gunicorn, start_redis, start_worker, wait_until

pytestmark = pytest.mark.slow


def test_queued_jobs_survive_a_redis_crash_and_everything_reconnects(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis", aof=True)
    settings = make_settings(tmp_path / "var", 0, 1, redis_url=f"redis://127.0.0.1:{port}/0")
    worker = start_worker(settings, "inference", "inf")
    api_port = free_port()
    api = start_gunicorn(settings, api_port)
    base = f"http://127.0.0.1:{api_port}"
    try:
        os.killpg(worker.p.pid, signal.SIGSTOP)  # nobody consumes: the jobs stay queued
        ids = [requests.post(f"{base}/jobs/ping", timeout=5).json()["job_id"] for _ in range(50)]
        time.sleep(1.5)  # `appendfsync everysec`: what was acknowledged a second ago is on disk
        server.kill()
        down = requests.post(f"{base}/jobs/ping", timeout=10)
        assert down.status_code == 503 and down.json()["error"]["code"] == "broker_unavailable"
        assert requests.get(f"{base}/health", timeout=5).status_code == 200
        server = start_redis(port, tmp_path / "redis", aof=True)
        os.killpg(worker.p.pid, signal.SIGCONT)

        def finished() -> bool:
            jobs = [requests.get(f"{base}/status/{i}", timeout=5).json() for i in ids]
            return all(j["status"] == "succeeded" for j in jobs)

        wait_until(finished, 120, "all 50 queued jobs to complete after the restart", every=1)
        again = requests.post(f"{base}/jobs/ping?wait=5", timeout=10)
        assert again.status_code == 200 and again.json()["result"] == {"pong": True}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.p.pid, signal.SIGCONT)
        for proc in (api, worker, server):
            proc.stop()
