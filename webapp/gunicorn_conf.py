"""gunicorn settings used by `stockq up` (metrics from every worker process are merged at scrape time)."""

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
