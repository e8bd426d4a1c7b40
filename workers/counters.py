"""Counters kept in Redis so every process (gunicorn workers, Celery workers) adds to one total.

The API's /metrics exports them; a per-process prometheus counter would be wrong across processes.
"""

from __future__ import annotations

import redis

PREFIX = "stockq:metrics:"


class Counters:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def incr(self, name: str, label: str = "", amount: int = 1) -> None:
        self.r.hincrby(PREFIX + name, label, amount)

    def read(self, name: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(PREFIX + name).items()}
