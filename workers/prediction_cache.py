"""Forecasts cached in Redis, keyed by ticker + model version + data as-of date + latest evaluation.

The key names the exact model version, data day and the evaluation whose calibration the forecast
applied, so a hit can never be a forecast from an old model, old data or an old calibration; the TTL only
bounds memory.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from workers.counters import Counters


class PredictionCache:
    def __init__(self, client: redis.Redis, counters: Counters, ttl_s: int) -> None:
        self.r = client
        self.counters = counters
        self.ttl_s = ttl_s

    @staticmethod
    def key(ticker: str, model_name: str, version: str, as_of: str, evaluation: str | None) -> str:
        return f"stockq:pred:{ticker}:{model_name}:{version}:{as_of}:{evaluation or '-'}"

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.r.get(key)
        self.counters.incr("redis_cache_hit_total" if raw else "redis_cache_miss_total")
        return json.loads(raw) if raw else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.r.set(key, json.dumps(value), ex=self.ttl_s)
