"""What a Redis server ran, for tests that assert on the work an operation costs (never on its time): a
redis-server of the test's own, so nothing else's commands are counted, and its command statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.procs import free_port, start_redis


@contextmanager
def private_redis(data_dir: Path) -> Iterator[str]:
    """A redis-server for this test alone; its URL (no DB)."""
    port = free_port()
    proc = start_redis(port, data_dir)
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.stop()


def commands(r: redis.Redis) -> Counter[str]:
    """Commands the server ran since the last CONFIG RESETSTAT, by name (those run by scripts too)."""
    stats = r.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})
