"""Models kept warm in each worker process: an LRU by (name, version) plus a short-lived alias cache.

The champion alias is looked up at most every `alias_check_s` seconds per model name, so a new
champion is served within that time without restarting the worker. A loaded model carries its card with
the latest evaluation of its recipe (its calibration shifts and verdict): `evaluation_stamp`, read as
often, names the latest evaluation any worker recorded, and a new one drops every cached model, so the
next forecast is served with the new calibration without restarting the worker either.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ml.errors import ModelNotFound
from workers.counters import Counters


class ModelCache:
    def __init__(
        self,
        registry: Any,
        size: int = 16,
        alias_check_s: float = 5.0,
        counters: Counters | None = None,
        evaluation_stamp: Callable[[], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.size = size
        self.alias_check_s = alias_check_s
        self.evaluation_stamp = evaluation_stamp
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._aliases: dict[str, tuple[float, str | None]] = {}
        # (when it was read, the stamp the cached models were loaded under); None: never read yet
        self._stamp: tuple[float, str | None] | None = None
        self._lock = threading.Lock()

    def forget_models(self) -> None:
        """Drop every loaded model: the next `get` loads its card (and evaluation) again."""
        with self._lock:
            self._models.clear()

    def evaluation(self) -> str | None:
        """The latest evaluation's stamp, read at most every `alias_check_s`; the models this cache hands
        out from now on carry that evaluation (a new stamp dropped the ones loaded before it)."""
        if self.evaluation_stamp is None:
            return None
        now = time.monotonic()
        if self._stamp is not None and now - self._stamp[0] < self.alias_check_s:
            return self._stamp[1]
        stamp = self.evaluation_stamp()
        if self._stamp is not None and stamp != self._stamp[1]:
            self.forget_models()
        self._stamp = (now, stamp)
        return stamp

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
        """The champion of `name`, loaded once per version and evaluation; None when no champion exists."""
        self.evaluation()
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
