"""Tenants by bearer token. Each API key is a tenant that sees only its own jobs; admin keys see all.

Keys come as `name:secret` (STOCKQ_API_KEYS, STOCKQ_ADMIN_KEYS); a bare secret is named after a hash prefix
of it, never after the secret itself. Auth fails closed: keys that are short or a documented placeholder
refuse to start, and without keys the API serves loopback only unless STOCKQ_AUTH=off says otherwise.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass

from flask import Flask, g, request

from stockq.placeholders import is_placeholder
from stockq.settings import Settings
from webapp.errors import ApiError

log = logging.getLogger(__name__)
# "/" is the console page (webapp/console.py): it carries no data, every call it makes sends the key.
PUBLIC_PATHS = frozenset({"/", "/health", "/ready", "/metrics", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs", "/static/")
MIN_KEY_LENGTH = 16
# Values shipped in examples and docs (compose/.env.example, the k8s Secret): never accepted as keys.
# A tenant's name is its jobs' owner. Never '@' (the internal owners, workers/jobs/keys.SCHEDULER_OWNER),
# ':' or '|' (separators of the registry's key names and index entries): a tenant can only ever name its own
# keys under stockq:tenant:<name>:, whatever it is called.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class AuthConfigError(SystemExit):
    """Start-up refused: the message names the problem, never a secret."""


@dataclass(frozen=True)
class Tenant:
    name: str
    admin: bool = False


ANONYMOUS = Tenant("anonymous")


def parse_keys(raw: str, *, admin: bool, variable: str) -> dict[bytes, Tenant]:
    keys: dict[bytes, Tenant] = {}
    for n, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        name, sep, secret = entry.partition(":")
        if not sep:
            name, secret = "key-" + hashlib.sha256(entry.encode()).hexdigest()[:8], entry
        if not _NAME.match(name):
            raise AuthConfigError(f"{variable} entry {n}: tenant name must be 1-64 of [A-Za-z0-9_.-]")
        if len(secret) < MIN_KEY_LENGTH or is_placeholder(secret):
            raise AuthConfigError(
                f"{variable} entry {n} ({name}): the key is a placeholder or shorter than {MIN_KEY_LENGTH} "
                "characters; generate one: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        keys[secret.encode()] = Tenant(name, admin)
    return keys


def tenant_keys(settings: Settings) -> dict[bytes, Tenant]:
    """Every key (admin keys win where one is in both lists), validated: refuses bad keys at start-up."""
    keys = parse_keys(settings.api_keys.get_secret_value(), admin=False, variable="STOCKQ_API_KEYS")
    keys |= parse_keys(settings.admin_keys.get_secret_value(), admin=True, variable="STOCKQ_ADMIN_KEYS")
    return keys


def is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(hosts: list[str], settings: Settings) -> None:
    """Refuse to serve beyond loopback without keys, unless STOCKQ_AUTH=off was set explicitly."""
    if tenant_keys(settings) or settings.auth == "off":
        return
    exposed = [h for h in hosts if not is_loopback(h)]
    if exposed:
        raise AuthConfigError(
            f"refusing to serve on {', '.join(exposed)} without API keys: set STOCKQ_API_KEYS, or "
            "STOCKQ_AUTH=off to run an open API on purpose"
        )


def install_auth(app: Flask, settings: Settings) -> None:
    keys = tenant_keys(settings)
    if not keys:
        check_bind([settings.api_host], settings)
        on_purpose = settings.auth == "off"
        where = "on purpose (STOCKQ_AUTH=off)" if on_purpose else f"on loopback ({settings.api_host})"
        log.warning("no API keys: serving without authentication %s", where)

        @app.before_request
        def _anonymous() -> None:
            g.tenant = ANONYMOUS

        return

    # Looked up by the SHA-256 of the token: one dict lookup whatever the number of keys, and its time
    # depends on the digest only, which reveals nothing about any key or prefix of one.
    by_digest = {hashlib.sha256(key).digest(): tenant for key, tenant in keys.items()}

    @app.before_request
    def _require_key() -> None:
        if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Bytes: a non-ASCII token must not raise.
        given = token.strip().encode("utf-8", "surrogateescape")
        found = by_digest.get(hashlib.sha256(given).digest())
        if scheme.lower() != "bearer" or found is None:
            raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")
        g.tenant = found


def current_tenant() -> Tenant:
    return getattr(g, "tenant", ANONYMOUS)
