"""Placeholder secrets refused at start-up, every one of them, by one rule.

compose/.env.example and the docs ship values such as `change-me`: a deployment that forgot to replace one
must not start with a secret anyone can read in this repository. The rule (a documented mark anywhere in
the secret, any case) applies to the API keys (webapp/auth.py adds a minimum length for those), the
passwords inside every service URL (Redis, RabbitMQ, MLflow, Qdrant), Flower's login, the OpenAI key and
the secrets only processes other than stockq's read (redis-server, Flower, Grafana), which compose checks
with `python -m stockq.placeholders` before starting them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from urllib.parse import urlparse

from pydantic import SecretStr

from stockq.settings import Settings

# The marks of every placeholder in compose/.env.example, compose/k8s/README.md and the docs.
PLACEHOLDER_MARKS = ("change-me", "changeme", "replace-me", "example", "placeholder")
# Secrets in the environment of processes that are not stockq's: checked wherever they are set.
ENV_SECRETS = ("REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD")
# `user:password[,user:password]` logins: only the passwords are secret (a user may well be "example").
ENV_LOGINS = ("FLOWER_BASIC_AUTH",)
_URL_SETTINGS = {
    "redis_url": "STOCKQ_REDIS_URL",
    "broker_url": "STOCKQ_BROKER_URL",
    "cache_redis_url": "STOCKQ_CACHE_REDIS_URL",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "qdrant_url": "QDRANT_URL",
    "openai_base_url": "OPENAI_BASE_URL",
}


class PlaceholderSecret(SystemExit):
    """Start-up refused: the message names the settings, never a value."""


def is_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return any(mark in lowered for mark in PLACEHOLDER_MARKS)


def _value(secret: SecretStr | str | None) -> str:
    if secret is None:
        return ""
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def _after_names(raw: str) -> Iterator[str]:
    """The secrets of a comma-separated `name:secret` list (a bare entry is all secret)."""
    for entry in raw.split(","):
        name, sep, secret = entry.strip().partition(":")
        yield secret if sep else name


def _secrets(settings: Settings, environ: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(where it is set, the secret) for every secret the settings and the environment hold."""
    for field, variable in (("api_keys", "STOCKQ_API_KEYS"), ("admin_keys", "STOCKQ_ADMIN_KEYS")):
        for secret in _after_names(_value(getattr(settings, field))):
            yield variable, secret
    for secret in _after_names(_value(settings.flower_auth)):
        yield "STOCKQ_FLOWER_AUTH", secret
    yield "STOCKQ_API_KEY", _value(settings.api_key)
    yield "OPENAI_API_KEY", _value(settings.openai_api_key)
    for field, variable in _URL_SETTINGS.items():
        url = getattr(settings, field)
        yield variable, (urlparse(url).password or "") if url else ""
    for variable in ENV_SECRETS:
        yield variable, environ.get(variable, "")
    for variable in ENV_LOGINS:
        for secret in _after_names(environ.get(variable, "")):
            yield variable, secret


def found(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The settings and variables that hold a placeholder, each named once, in a stable order."""
    env = os.environ if environ is None else environ
    return list(dict.fromkeys(where for where, secret in _secrets(settings, env) if is_placeholder(secret)))


def check(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start while any secret is a documented placeholder."""
    bad = found(settings, environ)
    if bad:
        raise PlaceholderSecret(
            f"refusing to start: {', '.join(bad)} still hold(s) a documented placeholder "
            f"({', '.join(PLACEHOLDER_MARKS)}); set real secrets, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )


if __name__ == "__main__":
    check(Settings())
