"""Per-tenant rate limits by cost (flask-limiter on Redis, shared by every gunicorn process).

The identity is the tenant (its key's name) when auth is on, else the client address: with auth off a
rotating bearer token buys nothing. Each endpoint class has its own budget, so a ping does not cost what
a training costs: training submissions, prediction submissions (charts too), agent questions, and reads.
Probes are free.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import ApplicationLimit, Limiter

from ml.settings import Settings
from webapp.auth import ANONYMOUS, PUBLIC_PATHS, PUBLIC_PREFIXES, current_tenant

TRAIN_PATHS = ("/train", "/ingest")
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


def install_rate_limit(app: Flask, settings: Settings) -> None:
    budgets = {
        "train": settings.rate_limit_train,
        "predict": settings.rate_limit_predict,
        "agent": settings.rate_limit_agent,
        "read": settings.rate_limit,
    }
    limits = [
        ApplicationLimit(
            limit_provider=budget,
            scope=f"class-{name}",
            exempt_when=lambda name=name: endpoint_class() != name,
        )
        for name, budget in budgets.items()
        if budget
    ]
    if not limits:
        return
    Limiter(
        client_key,
        app=app,
        application_limits=limits,
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        key_prefix="stockq:ratelimit",
        headers_enabled=True,
        # Redis down: let the request through to the handlers, which answer 503 themselves.
        swallow_errors=True,
    )
