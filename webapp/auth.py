"""Bearer-token auth from STOCKQ_API_KEYS; /health, /ready and /metrics stay open for probes."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, g, request

from webapp.errors import ApiError

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})


def install_auth(app: Flask, keys: frozenset[str]) -> None:
    if not keys:
        log.warning("STOCKQ_API_KEYS is not set: the API accepts requests without authentication")
        return

    @app.before_request
    def _require_key() -> None:
        if request.path in PUBLIC_PATHS:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        # compare_digest against every key: the time taken does not reveal which prefix matched.
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.strip(), k) for k in keys):
            raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")
        g.client_id = "key:" + token.strip()[:8]
