"""Per-tenant rate limits by cost, as request hooks: fixed windows in Redis (workers/budgets.py, which
workers count in too), shared by every gunicorn process.

The identity is the tenant (its key's name) when auth is on, else the client address: with auth off a
rotating bearer token buys nothing. Each endpoint class has its own budget, so a ping does not cost what
a training costs: training submissions (ingests and evaluations too), prediction submissions (charts too),
agent questions, and reads. Probes are free.

flask-limiter made three round trips per request (the hit, then a GET and a TTL for the headers); here a
request that submits a job is counted in its submit's one round trip (JobRegistry.submit: over budget,
nothing is created); any other request in one script of its own. A submission that never reaches its
submit (its body is refused) is counted once it has been answered.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from flask import Flask, Response, g, has_request_context, request

from stockq.settings import Settings
from webapp.auth import ANONYMOUS, PUBLIC_PATHS, PUBLIC_PREFIXES, current_tenant
from webapp.errors import ApiError
from workers.budgets import Budgets, Plan, Tally, configured

TRAIN_PATHS = ("/train", "/ingest", "/evaluate")
AGENT_PATHS = ("/agent/",)


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


class RateLimiter:
    def __init__(self, client: redis.Redis, budgets: dict[str, str]) -> None:
        self.budgets = Budgets(client, budgets)

    def plan(self, name: str | None = None) -> Plan | None:
        """The windows of class `name` (default: the request's endpoint class) for the caller."""
        return self.budgets.plan(name or endpoint_class(), client_key())

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
            return self.budgets.count(plan)
        except redis.RedisError:
            return None  # Redis down: the request goes on to the handlers, which answer 503 themselves

    def after(self, response: Response) -> Response:
        plan = g.pop("rate_limit_pending", None)
        if plan is not None:  # a submission refused before its submit: counted now, answered already
            counts = self._count(plan)
            if counts is not None:
                g.rate_limit_headers = _headers(plan.tally(counts))
        headers = g.get("rate_limit_headers")
        if headers:
            response.headers.update(headers)
        return response


def take_plan() -> Plan | None:
    """The windows the current request's submit counts (and the limiter then does not)."""
    return g.pop("rate_limit_pending", None) if has_request_context() else None


def _headers(tally: Tally) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(tally.item.amount), "X-RateLimit-Remaining": str(tally.left),
            "X-RateLimit-Reset": str(tally.reset)}  # fmt: skip


def settle(plan: Plan, counts: list[int]) -> None:
    """The counts a request's windows reached: its headers, or a 429 past a budget."""
    tally = plan.tally(counts)
    g.rate_limit_headers = headers = _headers(tally)
    if tally.over:
        retry_after = str(max(1, int(tally.wait_s + 0.999)))
        raise ApiError(429, "rate_limited", f"rate limit exceeded: {tally.item}",
                       headers={**headers, "Retry-After": retry_after})  # fmt: skip


def install_rate_limit(app: Flask, settings: Settings, client: redis.Redis) -> Callable[[str], None]:
    """The limiter's hooks; returns the charge of a class the route decides (a no-op without limits)."""
    limiter = RateLimiter(client, configured(settings))
    if not limiter.budgets.limits:
        return lambda _name: None
    app.before_request(limiter.check)
    app.after_request(limiter.after)
    return limiter.charge
