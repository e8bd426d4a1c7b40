"""Per-client rate limits (flask-limiter on Redis, shared by every gunicorn process).

The client is its API key when one is sent (hashed, never stored in clear), else its address, so one
noisy client cannot exhaust the budget of the others. Submissions count; probes and polling do not.
"""

from __future__ import annotations

import hashlib

from flask import Flask, request
from flask_limiter import Limiter

from ml.settings import Settings
from webapp.auth import PUBLIC_PATHS


def client_key() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:16]
    return "addr:" + (request.remote_addr or "unknown")


def _exempt() -> bool:
    """Probes and reads (polling a job) are free; what creates work is limited."""
    if request.path in PUBLIC_PATHS:
        return True
    return request.method in {"GET", "HEAD", "OPTIONS"} and not request.path.startswith("/forecast/")


def install_rate_limit(app: Flask, settings: Settings) -> None:
    if not settings.rate_limit:
        return
    Limiter(
        client_key,
        app=app,
        # application_limits: one budget per client across all endpoints (default_limits would give
        # every endpoint its own budget, the per-endpoint mistake).
        application_limits=[settings.rate_limit],
        application_limits_exempt_when=_exempt,
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        key_prefix="stockq:ratelimit",
        headers_enabled=True,
        # Redis down: let the request through to the handlers, which answer 503 themselves.
        swallow_errors=True,
    )
