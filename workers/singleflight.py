"""A Redis lock with expiry and owner token, plus a waiters list, so one training serves many requests.

The holder refreshes the expiry while it works (each epoch); a crashed holder stops refreshing and the
lock frees itself within `ttl_s`, so it never blocks the next request for longer than that.
"""

from __future__ import annotations

import redis

# KEYS[1] lock; ARGV[1] token, ARGV[2] ttl ms. Re-entrant for the same token (a redelivered task).
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SingleFlight:
    def __init__(self, client: redis.Redis, name: str, ttl_s: float) -> None:
        self.r = client
        self.lock_key = f"stockq:lock:{name}"
        self.waiters_key = f"stockq:waiters:{name}"
        self.ttl_s = ttl_s
        self.ttl_ms = int(ttl_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    def acquire(self, token: str) -> bool:
        return bool(self._acquire(keys=[self.lock_key], args=[token, self.ttl_ms]))

    def refresh(self, token: str) -> bool:
        return bool(self._refresh(keys=[self.lock_key], args=[token, self.ttl_ms]))

    def release(self, token: str) -> None:
        self._release(keys=[self.lock_key], args=[token])

    def remaining_s(self) -> float:
        """Seconds until the lock expires (0 when free)."""
        return max(0.0, int(self.r.pttl(self.lock_key)) / 1000)

    def holder(self) -> str | None:
        value = self.r.get(self.lock_key)
        return value.decode() if value else None

    def wait(self, token: str) -> bool:
        """Queue `token` behind the holder. False when the holder finished meanwhile and the caller
        must act itself (it took itself off the list again, so nobody else will)."""
        self.r.rpush(self.waiters_key, token)
        if self.holder() is not None:
            return True
        return self.r.lrem(self.waiters_key, 1, token) == 0

    def drain(self) -> list[str]:
        pipe = self.r.pipeline()
        pipe.lrange(self.waiters_key, 0, -1)
        pipe.delete(self.waiters_key)
        waiters, _ = pipe.execute()
        return list(dict.fromkeys(w.decode() for w in waiters))
