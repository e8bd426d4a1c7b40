"""Rate-limit budgets: fixed windows counted in Redis, one counter per cost class, client and window.

The API counts each request in them (webapp/ratelimit.py); a worker counts in the same counters the work
a job starts on its submitter's behalf in another class (an auto-training is charged to the training
class: workers/tasks.py), so a client's auto-trainings and its POST /train draw on one budget.

Budgets keep flask-limiter's syntax (`600/minute`, `10/second;600/minute`, parsed by `limits`, the library
behind it). A window's key names its own start (its number: the time over its length), so the reset time
needs no second call. The start is read from the counting host's clock: hosts whose clocks differ by s
seconds count a hit within s of a boundary in neighbouring windows, and nothing more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse_many

from stockq.settings import Settings
from workers.jobs import Window

PREFIX = "stockq:ratelimit"

# KEYS: one counter per window; ARGV[i]: window i's length in seconds. Returns the counts after this hit.
_HIT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  counts[i] = n
end
return counts
"""


def configured(settings: Settings) -> dict[str, str]:
    """Each cost class's budget (empty: unlimited); `read` is every request that submits nothing."""
    return {
        "train": settings.rate_limit_train,
        "predict": settings.rate_limit_predict,
        "agent": settings.rate_limit_agent,
        "read": settings.rate_limit,
    }


@dataclass(frozen=True)
class Tally:
    """The tightest window a hit reached (the fewest hits left): its budget, its count, when it resets."""

    item: RateLimitItem
    count: int
    reset: int  # the window's end, in seconds since the epoch
    wait_s: float  # from the hit until then

    @property
    def over(self) -> bool:
        return self.count > self.item.amount

    @property
    def left(self) -> int:
        return max(0, self.item.amount - self.count)


@dataclass(frozen=True)
class Plan:
    """The windows one hit counts in."""

    items: list[RateLimitItem]
    windows: list[Window]
    starts: list[int]  # each window's number: its start over its length
    now: float

    def tally(self, counts: list[int]) -> Tally:
        """The tightest of the windows, given the counts the hit reached in each."""
        rows = zip(self.items, self.starts, counts, strict=True)
        item, start, count = min(rows, key=lambda row: row[0].amount - row[2])
        reset = (start + 1) * item.get_expiry()
        return Tally(item, count, reset, reset - self.now)


class Budgets:
    def __init__(self, client: redis.Redis, budgets: dict[str, str]) -> None:
        # Parsed once: a hit only does arithmetic and its one round trip.
        self.limits = {name: parse_many(budget) for name, budget in budgets.items() if budget}
        self._hit = client.register_script(_HIT)

    def plan(self, name: str, who: str) -> Plan | None:
        """The windows of class `name` for client `who` (`tenant:<name>` or `addr:<ip>`); None: unlimited."""
        items = self.limits.get(name)
        if items is None:
            return None
        now = time.time()
        starts = [int(now // item.get_expiry()) for item in items]
        windows = [Window(f"{PREFIX}:{name}:{who}:{item.amount}/{item.get_expiry()}:{start}", item.amount,
                          item.get_expiry()) for item, start in zip(items, starts, strict=True)]  # fmt: skip
        return Plan(items, windows, starts, now)

    def count(self, plan: Plan) -> list[int]:
        """Count one hit in every window of `plan` (one round trip): the counts reached."""
        return [int(n) for n in self._hit(keys=[w.key for w in plan.windows],
                                          args=[w.seconds for w in plan.windows])]  # fmt: skip

    def charge(self, name: str, who: str) -> Tally | None:
        """Count one hit of class `name` for `who`: the tightest window it reached (None: unlimited)."""
        plan = self.plan(name, who)
        return None if plan is None else plan.tally(self.count(plan))
