"""Secrets out of text that a tenant reads (a job's own log, workers/job_log.py): the values of the
settings' secrets, and whatever looks like a credential: `password=...`, `token: ...`, `api_key=...`,
an `Authorization:` header, a bearer token, a URL's `user:password@`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlparse

from pydantic import SecretStr

from stockq.settings import Settings

MASK = "***"
# A secret (or a piece of one) shorter than this is not masked by its value: it would mask ordinary words
# and numbers (the patterns below still mask it where it is assigned to a key or sits in a URL).
MIN_SECRET = 4
_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s\"',;&}\]]+)"  # quoted, or up to a space or a separator
# Authorization: Bearer x / Basic x / x (a header, or a dict's key)
_AUTHORIZATION = (
    r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|digest|token)\s+)?)" + _VALUE
)
# password=x, "api_key": "x", token: x, STOCKQ_API_KEYS=x, secret='x y': a key ending in one of the words
_KEY = "(?:" + "|".join((r"password", r"passwd", r"pwd", r"secret(?:[_-]?key)?", r"private[_-]?key", r"token",
                         r"api[_-]?keys?", r"apikey", r"access[_-]?key", r"credentials?")) + ")"  # fmt: skip
_ASSIGNED = rf"(?i)([\w.-]*{_KEY}[\"']?\s*[=:]\s*)" + _VALUE
_PATTERNS = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        # scheme://user:password@host and scheme://token@host
        (r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/@:]*):[^\s/@]*@", rf"\1\2:{MASK}@"),
        (r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]+@", rf"\1{MASK}@"),
        (_AUTHORIZATION, rf"\1{MASK}"),
        (r"(?i)\b(bearer\s+)[\w.~+/=-]{8,}", rf"\1{MASK}"),
        (_ASSIGNED, rf"\1{MASK}"),
    )
)


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains another is masked whole.
        known = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, known))) if known else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """Every secret the settings hold: each SecretStr's value and its `name:secret,...` parts, and the
        passwords inside every URL setting."""
        found: list[str] = []
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr):
                found += _secret_parts(value.get_secret_value())
            elif isinstance(value, str) and "://" in value:
                found.append(urlparse(value).password or "")
        return cls(found)

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def _secret_parts(value: str) -> list[str]:
    """A secret setting may hold several (`alice:s1,bob:s2`, Flower's `user:password`): the whole value,
    each comma-separated part, and each part's secret after its name."""
    parts = [p.strip() for p in value.split(",")]
    return [value, *parts, *(p.split(":", 1)[1] for p in parts if ":" in p)]
