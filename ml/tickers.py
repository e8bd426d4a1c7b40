"""The one strict ticker validator: every ticker that reaches a path, a key or a query passed through it."""

from __future__ import annotations

import re

from ml.errors import InvalidTicker

TICKER_RE = re.compile(r"^[A-Z0-9^.=-]{1,12}$")
INDEX_TICKER = "^GSPC"
# Registered model names: one parent, one child per ticker (MLflow accepts every ticker character).
PARENT_NAME = "stockq-parent"
CHILD_PREFIX = "stockq-child-"


def validate_ticker(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidTicker(f"ticker must be a string, got {type(raw).__name__}")
    ticker = raw.strip().upper()
    if not TICKER_RE.fullmatch(ticker) or ticker in {".", ".."} or ticker.startswith("."):
        shown = raw if len(raw) <= 20 else raw[:20] + "…"
        raise InvalidTicker(f"invalid ticker {shown!r}: expected 1-12 characters of A-Z 0-9 ^ . = -")
    return ticker


def ticker_filename(ticker: str) -> str:
    """A file-name-safe form of an already validated ticker (`^GSPC` -> `_GSPC`)."""
    return validate_ticker(ticker).replace("^", "_")


def child_name(ticker: str) -> str:
    return f"{CHILD_PREFIX}{validate_ticker(ticker)}"
