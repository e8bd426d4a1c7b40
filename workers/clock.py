"""The one clock every host agrees on: the Redis server's. Leases, heartbeats and job times are stored
and compared in it, so a host whose own clock is off (60 s ahead, say) is judged by the same time."""

from __future__ import annotations

import redis


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6
