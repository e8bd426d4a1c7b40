"""Which queues have a live consumer: each worker's main process stamps its queues in Redis.

`/ready` and the `stockq_workers{queue}` gauge read these stamps instead of broadcasting to workers
(a Celery `inspect` round trip takes a second or more and needs every worker to answer).
"""

from __future__ import annotations

import threading

import redis

from workers.clock import server_time

STAMP_EVERY_S = 5.0
ALIVE_FOR_S = 15.0


def child_ready_key(main_pid: int) -> str:
    """Set by a worker's pool process once it can run jobs; keyed by its main process."""
    return f"stockq:worker-child-ready:{main_pid}"


def _key(queue: str) -> str:
    return f"stockq:workers:{queue}"


class Heartbeat:
    def __init__(self, client: redis.Redis, hostname: str, queues: list[str], ready_key: str) -> None:
        self.r = client
        self.hostname = hostname
        self.queues = queues
        # Until a pool process has finished its start-up, a job would only wait in it: not ready yet.
        self.ready_key = ready_key
        self._ready = False  # once a pool process said so: the key may expire, the worker stays ready
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stockq-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stamp(self) -> bool:
        """Advertise the queues; False (nothing advertised) while no pool process is ready."""
        if not self._ready:
            self._ready = bool(self.r.exists(self.ready_key))
        if not self._ready:
            return False
        now = server_time(self.r)
        pipe = self.r.pipeline()
        for queue in self.queues:
            pipe.zadd(_key(queue), {self.hostname: now})
        pipe.execute()
        return True

    def _run(self) -> None:
        ready = False
        # Every 0.2 s until a pool process is ready, then every STAMP_EVERY_S.
        while not self._stop.wait(STAMP_EVERY_S if ready else 0.2):
            try:
                ready = self.stamp()
            except redis.RedisError:
                continue  # Redis away for a moment: the next stamp catches up.

    def stop(self) -> None:
        self._stop.set()
        try:
            pipe = self.r.pipeline()
            for queue in self.queues:
                pipe.zrem(_key(queue), self.hostname)
            pipe.delete(self.ready_key)
            pipe.execute()
        except redis.RedisError:
            pass


def live_workers(client: redis.Redis, queues: tuple[str, ...] | list[str]) -> dict[str, int]:
    cutoff = server_time(client) - ALIVE_FOR_S
    pipe = client.pipeline()
    for queue in queues:
        pipe.zremrangebyscore(_key(queue), "-inf", cutoff)
        pipe.zcard(_key(queue))
    counts = pipe.execute()[1::2]
    return dict(zip(queues, (int(c) for c in counts), strict=True))


def worker_alive(client: redis.Redis, queue: str, hostname: str) -> bool:
    stamp = client.zscore(_key(queue), hostname)
    return stamp is not None and stamp >= server_time(client) - ALIVE_FOR_S
