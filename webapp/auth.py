"""Bearer-token auth from STOCKQ_API_KEYS; /health, /ready and /metrics stay open for probes."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, request

from webapp.errors import ApiError

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})


def install_auth(app: Flask, keys: frozenset[str]) -> None:
    if not keys:
        log.warning("STOCKQ_API_KEYS is not set: the API accepts requests without authentication")
        return

    encoded = [k.encode() for k in sorted(keys)]

    @app.before_request
    def _require_key() -> None:
        if request.path in PUBLIC_PATHS:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Bytes (a non-ASCII token must not raise), and every key compared: the time taken reveals
        # neither which key nor which prefix matched.
        given = token.strip().encode("utf-8", "surrogateescape")
        matched = False
        for key in encoded:
            matched |= hmac.compare_digest(given, key)
        if scheme.lower() != "bearer" or not matched:
            raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")
