"""gunicorn settings shared by `stockq up`, compose and k8s (`-c python:webapp.gunicorn_conf`).

prometheus_client's multiprocess mode keeps one file per worker process in PROMETHEUS_MULTIPROC_DIR; a
scrape sums them. The directory must start empty (stale files from an earlier run would be summed too),
and a dead worker's files are marked so its live-only figures drop out.
"""

import os
import shutil
from pathlib import Path
from typing import Any


def _multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def check_threads(threads: int, waiting: int) -> None:
    """Up to `waiting` requests per process block a thread each on a job (`?wait=`, charts); /health and
    submissions need one more, or a process whose threads all wait answers nothing (its health check
    fails and gunicorn's timeout kills it)."""
    if threads <= waiting:
        raise SystemExit(
            f"gunicorn runs {threads} thread(s) per process and STOCKQ_MAX_WAITING_PER_PROCESS={waiting} of "
            "them may wait on jobs: give each process more threads (--threads) than waiting slots"
        )


def on_starting(server: Any) -> None:
    """In the master, before any worker forks: refuse placeholder secrets, an open API beyond loopback
    (fail closed) and too few threads for the waiting slots; empty the metrics directory (a restarted
    container keeps it)."""
    from stockq import placeholders
    from stockq.settings import Settings
    from webapp.auth import check_bind

    settings = Settings()
    placeholders.check(settings)
    check_bind([str(address).rsplit(":", 1)[0] for address in server.cfg.bind], settings)
    check_threads(server.cfg.threads, settings.max_waiting_per_process)
    directory = _multiproc_dir()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)


def post_fork(server: Any, worker: Any) -> None:
    """Each API process logs in the configured format (STOCKQ_LOG_FORMAT)."""
    from stockq.settings import Settings
    from workers import logs

    logs.configure(Settings().log_format)


def child_exit(server: Any, worker: Any) -> None:
    if _multiproc_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
