"""Per-tenant rate limits by cost: fixed windows in Redis, shared by every gunicorn process.

The identity is the tenant (its key's name) when auth is on, else the client address: with auth off a
rotating bearer token buys nothing. Each endpoint class has its own budget, so a ping does not cost what
a training costs: training submissions (ingests and evaluations too), prediction submissions (charts too),
agent questions, and reads. Probes are free.

Budgets keep flask-limiter's syntax (`600/minute`, `10/second;600/minute`, parsed by `limits`, the library
behind it), counted in fixed windows whose keys name their own start, so the reset time needs no second
call (flask-limiter made three round trips: the hit, then a GET and a TTL for the headers). A request that
submits a job is counted in its submit's one round trip (JobRegistry.submit: over budget, nothing is
created); any other request in one script of its own. A submission that never reaches its submit (its body
is refused) is counted once it has been answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import Flask, Response, g, has_request_context, request
from limits import RateLimitItem, parse_many

from stockq.settings import Settings
from webapp.auth import ANONYMOUS, PUBLIC_PATHS, PUBLIC_PREFIXES, current_tenant
from webapp.errors import ApiError
from workers.jobs import Window

TRAIN_PATHS = ("/train", "/ingest", "/evaluate")
AGENT_PATHS = ("/agent/",)
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


def client_key() -> str:
    tenant = current_tenant()
    if tenant is not ANONYMOUS:
        return "tenant:" + tenant.name
    return "addr:" + (request.remote_addr or "unknown")


def endpoint_class() -> str:
    """train | agent | predict (every other submission, charts included) | read | free (probes)."""
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return "free"
    if path.startswith(TRAIN_PATHS):
        return "train"
    if path.startswith(AGENT_PATHS):
        return "agent"
    if request.method not in {"GET", "HEAD", "OPTIONS"} or path.startswith("/forecast/"):
        return "predict"
    return "read"


# The endpoints whose windows are counted by their submit (webapp/submit.py).
SUBMITTING = frozenset({"api.train", "api.predict_child", "api.predict_batch", "api.agent_chat", "api.ingest",
                        "api.ping", "api.forecast_chart", "api.evaluate"})  # fmt: skip


# The endpoints whose class only the route knows: a retry costs what its job's type costs.
CHARGED_BY_ROUTE = frozenset({"api.retry_job"})


@dataclass(frozen=True)
class Plan:
    """The windows one request counts in."""

    items: list[RateLimitItem]
    windows: list[Window]
    starts: list[int]  # each window's number: its start over its length
    now: float


class RateLimiter:
    def __init__(self, client: redis.Redis, budgets: dict[str, str]) -> None:
        # Parsed once: a request only does arithmetic and its one round trip.
        self.limits = {name: parse_many(budget) for name, budget in budgets.items() if budget}
        self._hit = client.register_script(_HIT)

    def plan(self, name: str | None = None) -> Plan | None:
        """The windows of class `name` (default: the request's endpoint class) for the caller."""
        name = name or endpoint_class()
        items = self.limits.get(name)
        if items is None:
            return None
        now, who = time.time(), client_key()
        starts = [int(now // item.get_expiry()) for item in items]
        windows = [Window(f"{PREFIX}:{name}:{who}:{item.amount}/{item.get_expiry()}:{start}", item.amount,
                          item.get_expiry()) for item, start in zip(items, starts, strict=True)]  # fmt: skip
        return Plan(items, windows, starts, now)

    def check(self) -> None:
        """Count the request (or leave it to its submit); 429 with Retry-After past any window."""
        plan = self.plan()
        if plan is None:
            return
        if request.endpoint in SUBMITTING:
            g.rate_limit_pending = plan
            return
        if request.endpoint in CHARGED_BY_ROUTE:
            return
        counts = self._count(plan)
        if counts is not None:
            settle(plan, counts)

    def charge(self, name: str) -> None:
        """Count the request in class `name`'s windows (a retry, charged as its job's type): 429 past one."""
        plan = self.plan(name)
        counts = None if plan is None else self._count(plan)
        if plan is not None and counts is not None:
            settle(plan, counts)

    def _count(self, plan: Plan) -> list[int] | None:
        try:
            return self._hit(keys=[w.key for w in plan.windows], args=[w.seconds for w in plan.windows])
        except redis.RedisError:
            return None  # Redis down: the request goes on to the handlers, which answer 503 themselves

    def after(self, response: Response) -> Response:
        plan = g.pop("rate_limit_pending", None)
        if plan is not None:  # a submission refused before its submit: counted now, answered already
            counts = self._count(plan)
            if counts is not None:
                g.rate_limit_headers = _headers(plan, counts)[2]
        headers = g.get("rate_limit_headers")
        if headers:
            response.headers.update(headers)
        return response


def take_plan() -> Plan | None:
    """The windows the current request's submit counts (and the limiter then does not)."""
    return g.pop("rate_limit_pending", None) if has_request_context() else None


def _headers(plan: Plan, counts: list[int]) -> tuple[RateLimitItem, int, dict[str, str], float]:
    """The tightest window (the fewest requests left), its count, its headers and the seconds until it
    resets."""
    rows = zip(plan.items, plan.starts, counts, strict=True)
    item, start, count = min(rows, key=lambda row: row[0].amount - row[2])
    reset = (start + 1) * item.get_expiry()
    left = max(0, item.amount - count)
    headers = {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(left),
               "X-RateLimit-Reset": str(reset)}  # fmt: skip
    return item, count, headers, reset - plan.now


def settle(plan: Plan, counts: list[int]) -> None:
    """The counts a request's windows reached: its headers, or a 429 past a budget."""
    item, count, headers, wait_s = _headers(plan, counts)
    g.rate_limit_headers = headers
    if count > item.amount:
        retry_after = str(max(1, int(wait_s + 0.999)))
        raise ApiError(429, "rate_limited", f"rate limit exceeded: {item}",
                       headers={**headers, "Retry-After": retry_after})  # fmt: skip


def install_rate_limit(app: Flask, settings: Settings, client: redis.Redis) -> Callable[[str], None]:
    """The limiter's hooks; returns the charge of a class the route decides (a no-op without limits)."""
    budgets = {
        "train": settings.rate_limit_train,
        "predict": settings.rate_limit_predict,
        "agent": settings.rate_limit_agent,
        "read": settings.rate_limit,
    }
    limiter = RateLimiter(client, budgets)
    if not limiter.limits:
        return lambda _name: None
    app.before_request(limiter.check)
    app.after_request(limiter.after)
    return limiter.charge
