"""Models kept warm in each worker process: an LRU by (name, version) plus a short-lived alias cache.

The champion alias is looked up at most every `alias_check_s` seconds per model name, so a new
champion is served within that time without restarting the worker.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from ml.errors import ModelNotFound
from workers.counters import Counters


class ModelCache:
    def __init__(
        self, registry: Any, size: int = 16, alias_check_s: float = 5.0, counters: Counters | None = None
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.size = size
        self.alias_check_s = alias_check_s
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._aliases: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def champion_version(self, name: str) -> str | None:
        now = time.monotonic()
        cached = self._aliases.get(name)
        if cached is not None and now - cached[0] < self.alias_check_s:
            return cached[1]
        version = self.registry.champion_version(name)
        self._aliases[name] = (now, version)
        return version

    def forget_alias(self, name: str) -> None:
        self._aliases.pop(name, None)

    def get(self, name: str) -> Any | None:
        """The champion of `name`, loaded once per version; None when no champion exists."""
        version = self.champion_version(name)
        if version is None:
            return None
        key = (name, version)
        with self._lock:
            hit = key in self._models
            if hit:
                self._models.move_to_end(key)
                found = self._models[key]
        if self.counters is not None:
            self.counters.incr("stockq_model_cache_hits_total" if hit else "stockq_model_cache_misses_total")
        if hit:
            return found
        try:
            model = self.registry.load(name, version)
        except ModelNotFound:
            self.forget_alias(name)
            return None
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model
