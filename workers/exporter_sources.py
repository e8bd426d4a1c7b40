"""Where `stockq exporter` reads worker liveness and model age: the heartbeat sets and MLflow.

A worker that stops heartbeating reads 0 for `retention_s`, then its series goes; one that stopped
cleanly (its heartbeat removed while fresh) goes at once, so scaling down pages nobody.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from workers.clock import server_time
from workers.heartbeat import ALIVE_FOR_S

log = logging.getLogger(__name__)
# ml.registry.mlflow_registry.CHAMPION (not imported: it would load torch into the exporter)
CHAMPION = "champion"


class WorkerLiveness:
    """Workers seen in the heartbeat sets (`stockq:workers:<queue>`: hostname -> last stamp time)."""

    def __init__(self, client: redis.Redis, queues: tuple[str, ...], retention_s: float) -> None:
        self.r = client
        self.queues = queues
        self.retention_s = retention_s
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def poll(self, now: float | None = None) -> None:
        now = server_time(self.r) if now is None else now
        pipe = self.r.pipeline()
        for queue in self.queues:
            pipe.zrange(f"stockq:workers:{queue}", 0, -1, withscores=True)
        present = {
            (member.decode(), queue): score
            for queue, members in zip(self.queues, pipe.execute(), strict=True)
            for member, score in members
        }
        with self._lock:
            for key, last in list(self._last.items()):
                # Gone while fresh: removed by its own clean shutdown (readers prune a stamp only once it
                # is ALIVE_FOR_S old), so forgotten at once. Gone when stale: kept, and read as 0.
                if key not in present and now - last < ALIVE_FOR_S - 2:
                    del self._last[key]
            self._last.update(present)

    def states(self, now: float | None = None) -> dict[tuple[str, str], int]:
        now = server_time(self.r) if now is None else now
        with self._lock:
            for key in [k for k, last in self._last.items() if now - last > self.retention_s]:
                del self._last[key]  # silent past the retention window: its series goes
            return {key: int(now - last <= ALIVE_FOR_S) for key, last in self._last.items()}


class ModelAges:
    """Creation time of the version behind each model's `champion` alias. `refresh` (the serve loop,
    every `every_s`) reads the registry; a scrape only reads the figures, never waits on MLflow."""

    def __init__(self, tracking_uri: str, every_s: float = 30.0) -> None:
        self.tracking_uri = tracking_uri
        self.every_s = every_s
        self._created: dict[str, float] = {}
        self._read_at = float("-inf")

    def refresh(self) -> None:
        if time.monotonic() - self._read_at < self.every_s:
            return
        self._read_at = time.monotonic()
        try:
            self._created = self._read()
        except Exception as exc:  # an unreachable registry keeps the last figures
            log.warning("model registry unreadable: %s", exc)

    def ages(self) -> dict[str, float]:
        now = time.time()
        return {name: now - created for name, created in self._created.items()}

    def _read(self) -> dict[str, float]:
        from mlflow import MlflowClient

        from ml.registry.paging import every_page

        client = MlflowClient(self.tracking_uri)
        created = {}
        for model in every_page(client.search_registered_models):
            version = (model.aliases or {}).get(CHAMPION)
            if version is not None:
                mv = client.get_model_version(model.name, str(version))
                created[model.name] = mv.creation_timestamp / 1000.0
        return created
