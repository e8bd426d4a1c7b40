"""Which queues have a live consumer: each worker's main process stamps its queues in Redis.

`/ready` and the `stockq_workers{queue}` gauge read these stamps instead of broadcasting to workers
(a Celery `inspect` round trip takes a second or more and needs every worker to answer).
"""

from __future__ import annotations

import threading
import time

import redis

STAMP_EVERY_S = 5.0
ALIVE_FOR_S = 15.0


def _key(queue: str) -> str:
    return f"stockq:workers:{queue}"


class Heartbeat:
    def __init__(self, client: redis.Redis, hostname: str, queues: list[str]) -> None:
        self.r = client
        self.hostname = hostname
        self.queues = queues
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stockq-heartbeat", daemon=True)

    def start(self) -> None:
        self.stamp()
        self._thread.start()

    def stamp(self) -> None:
        now = time.time()
        pipe = self.r.pipeline()
        for queue in self.queues:
            pipe.zadd(_key(queue), {self.hostname: now})
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(STAMP_EVERY_S):
            try:
                self.stamp()
            except redis.RedisError:
                continue  # Redis away for a moment: the next stamp catches up.

    def stop(self) -> None:
        self._stop.set()
        try:
            pipe = self.r.pipeline()
            for queue in self.queues:
                pipe.zrem(_key(queue), self.hostname)
            pipe.execute()
        except redis.RedisError:
            pass


def live_workers(client: redis.Redis, queues: tuple[str, ...] | list[str]) -> dict[str, int]:
    cutoff = time.time() - ALIVE_FOR_S
    pipe = client.pipeline()
    for queue in queues:
        pipe.zremrangebyscore(_key(queue), "-inf", cutoff)
        pipe.zcard(_key(queue))
    counts = pipe.execute()[1::2]
    return dict(zip(queues, (int(c) for c in counts), strict=True))
