"""Which task ids the Redis broker holds right now: in a queue (any priority) or unacknowledged.

kombu keeps a Redis queue as one list per priority step (`<queue>`, `<queue>\\x06\\x163`, ...) and the
messages delivered but not acknowledged in the `unacked` hash. The reaper reads them to tell a job whose
message is still on its way from one whose message vanished with a dying worker (celery/kombu#305: the
message leaves the queue before it is recorded as unacknowledged).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"
SCAN_LIMIT = 5000  # messages per list; a longer queue is not scanned (its jobs are not judged lost)


def _task_id(raw: bytes) -> str | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
        message = message[0] if message else {}
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers.get("id") if isinstance(headers, dict) else None


def held_task_ids(client: redis.Redis, queues: Iterable[str]) -> tuple[set[str], set[str]]:
    """(task ids held, queues too long to tell). Unacknowledged messages count as held."""
    keys = {q: [q if not p else f"{q}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS] for q in queues}
    pipe = client.pipeline()
    for names in keys.values():
        for name in names:
            pipe.llen(name)
            pipe.lrange(name, 0, SCAN_LIMIT - 1)
    pipe.hvals(UNACKED)
    replies = pipe.execute()
    held: set[str] = set()
    too_long: set[str] = set()
    i = 0
    for queue, names in keys.items():
        for _ in names:
            length, items = replies[i], replies[i + 1]
            i += 2
            if length > SCAN_LIMIT:
                too_long.add(queue)
            held.update(t for t in map(_task_id, items) if t)
    held.update(t for t in map(_task_id, replies[-1]) if t)
    return held, too_long
