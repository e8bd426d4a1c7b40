"""Counters kept in Redis so every process (gunicorn workers, Celery workers) adds to one total.

The API's /metrics exports them; a per-process prometheus counter would be wrong across processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

PREFIX = "stockq:metrics:"
# Increments as a Redis script takes them (workers/jobs/lua.py FINISH adds them in the same round trip
# as a job's outcome): [hash, field, amount, "float" or ""].
Increments = Sequence[tuple[str, str, str, str]]


JOB_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Counters:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def incr(self, name: str, label: str = "", amount: int = 1) -> None:
        self.r.hincrby(PREFIX + name, label, amount)

    @staticmethod
    def increment(name: str, label: str = "", amount: int = 1) -> Increments:
        """incr() as increments, for a script to apply."""
        return [(PREFIX + name, label, str(amount), "")]

    @staticmethod
    def observation(name: str, label: str, value: float, buckets: tuple[float, ...]) -> Increments:
        """observe() as increments, for a script to apply."""
        out = [(PREFIX + name, f"{label}|{le}", "1", "") for le in buckets if value <= le]
        out.append((PREFIX + name, f"{label}|+Inf", "1", ""))
        out.append((PREFIX + name, f"{label}|sum", repr(value), "float"))
        return out

    def read(self, name: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(PREFIX + name).items()}

    def observe(self, name: str, label: str, value: float, buckets: tuple[float, ...]) -> None:
        """A histogram observation, stored cumulatively per bucket like Prometheus's own."""
        pipe = self.r.pipeline()
        for key, field, amount, kind in self.observation(name, label, value, buckets):
            if kind == "float":
                pipe.hincrbyfloat(key, field, float(amount))
            else:
                pipe.hincrby(key, field, int(amount))
        pipe.execute()

    def read_histogram(
        self, name: str, buckets: tuple[float, ...]
    ) -> dict[str, tuple[list[tuple[str, float]], float]]:
        """label -> ([(le, cumulative count)...], sum)."""
        raw = {k.decode(): float(v) for k, v in self.r.hgetall(PREFIX + name).items()}
        labels = {key.rsplit("|", 1)[0] for key in raw}
        out = {}
        for label in sorted(labels):
            counts = [(str(le), raw.get(f"{label}|{le}", 0.0)) for le in buckets]
            counts.append(("+Inf", raw.get(f"{label}|+Inf", 0.0)))
            out[label] = (counts, raw.get(f"{label}|sum", 0.0))
        return out
