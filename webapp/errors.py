"""One error shape everywhere: `{"error": {"code": ..., "message": ...}}`, never a traceback."""

from __future__ import annotations

import logging
import uuid

import redis
from flask import Flask, Response, jsonify
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from ml.errors import StockqError

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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, **extra: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def new_error_id() -> str:
    """Names one failure in the logs: the client gets the id, the traceback stays in the log."""
    return uuid.uuid4().hex[:12]


def validation_error_response(exc: ValidationError) -> Response:
    """422 naming each offending field, e.g. `body.epochs: Input should be less than or equal to 500`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return error_response(422, "validation_error", "; ".join(parts))


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(StockqError)
    def _stockq(exc: StockqError) -> Response:
        return error_response(exc.http_status, exc.code, exc.message)

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
        log.warning("broker unavailable: %s", exc)
        return error_response(503, "broker_unavailable", "the job broker (Redis) is unreachable; retry later")

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        error_id = new_error_id()
        log.exception("unhandled error (error_id %s)", error_id)
        return error_response(
            500, "internal_error", f"internal server error (error_id {error_id})", error_id=error_id
        )
