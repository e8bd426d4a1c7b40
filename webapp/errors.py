"""One error shape everywhere: `{"error": {"code": ..., "message": ...}}`, never a traceback.

Messages are written for clients. Whatever a library said (an exception's text, a path, a script's line)
stays in this process's log under an `error_id` that the client gets to quote.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from ml.errors import StockqError, new_error_id

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


# Retry-After of a 503: a restarted Redis is back within seconds, a full one needs an operator.
UNREACHABLE_RETRY_AFTER_S = 5
FULL_RETRY_AFTER_S = 60


class ApiError(Exception):
    """`details`: what a client acts on beyond the message (an unknown ticker's `suggestions`, an ambiguous
    id's `candidates`); left out of the body when there is none."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.details = details


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def validation_error_response(exc: ValidationError) -> Response:
    """422 naming each offending field, e.g. `body.epochs: Input should be less than or equal to 500`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return error_response(422, "validation_error", "; ".join(parts))


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """kombu wraps the Redis error of a failed publish in its OperationalError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_later(code: str, message: str, retry_after_s: int) -> Response:
    response = error_response(503, code, message)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def broker_error_response(exc: Exception) -> Response:
    """Three troubles, three answers: Redis full (noeviction refuses writes until memory is freed: an
    operator must act), Redis unreachable (a restart or a network blip: retry soon), and anything else
    Redis refused (a script or command error: a bug or damaged data, a 500 whose detail stays in the log)."""
    if _caused_by(exc, (redis.exceptions.OutOfMemoryError,)):
        log.error("Redis is full (maxmemory reached, noeviction) and refuses writes: %s", exc)
        return _retry_later("broker_full", "the job store is full and refuses new work for now; retry later",
                            FULL_RETRY_AFTER_S)  # fmt: skip
    if isinstance(exc, OperationalError) or _caused_by(exc, (redis.ConnectionError, redis.TimeoutError)):
        log.warning("Redis unreachable: %s", exc)
        return _retry_later("broker_unavailable", "the job broker (Redis) is unreachable; retry later",
                            UNREACHABLE_RETRY_AFTER_S)  # fmt: skip
    error_id = new_error_id()
    log.error("Redis refused an operation (error_id %s)", error_id, exc_info=exc)
    return error_response(
        500, "broker_error", f"the job store refused an operation (error_id {error_id})", error_id=error_id
    )


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Response:
        extra = {} if exc.details is None else {"details": exc.details}
        response = error_response(exc.status, exc.code, exc.message, **extra)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(StockqError)
    def _stockq(exc: StockqError) -> Response:
        # The detail of an error built from a library's exception was logged under its error_id when raised.
        return error_response(exc.http_status, **exc.to_dict())

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error_response(status, _HTTP_CODES.get(status, "http_error"), exc.description or exc.name)
        for name, value in exc.get_headers():  # e.g. Allow on 405, Retry-After on 429
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _broker(exc: Exception) -> Response:
        return broker_error_response(exc)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        error_id = new_error_id()
        log.exception("unhandled error (error_id %s)", error_id)
        return error_response(
            500, "internal_error", f"internal server error (error_id {error_id})", error_id=error_id
        )
