"""Errors the ml core raises; each has a stable `code` the API returns as `{"error": {code, message}}`.

`message` is written for the client. What only an operator should read (a library's exception text, a
server path) goes in `detail`: it is logged once, when the error is raised, under an `error_id` that the
client's message quotes, and never leaves the process.
"""

from __future__ import annotations

import logging
import uuid

log = logging.getLogger(__name__)


def new_error_id() -> str:
    """Names one failure in the logs: the client gets the id, the detail stays in the log."""
    return uuid.uuid4().hex[:12]


class StockqError(Exception):
    code = "stockq_error"
    http_status = 400

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        self.error_id = new_error_id() if detail is not None else None
        if self.error_id is not None:
            message = f"{message} (error_id {self.error_id})"
            log.warning("%s (error_id %s): %s", self.code, self.error_id, detail)
        # str(exc), for tracebacks and tests, has the detail too; clients get `message` (to_dict).
        super().__init__(message if detail is None else f"{message}: {detail}")
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        """The client's view of the error."""
        found = {"code": self.code, "message": self.message}
        return found if self.error_id is None else {**found, "error_id": self.error_id}


class InvalidTicker(StockqError):
    code = "invalid_ticker"
    http_status = 422


class UnknownTicker(StockqError):
    code = "unknown_ticker"
    http_status = 404


class DataUnavailable(StockqError):
    code = "data_unavailable"
    http_status = 503


class InvalidInput(StockqError):
    code = "invalid_input"
    http_status = 422


class InsufficientHistory(StockqError):
    code = "insufficient_history"
    http_status = 422


class StaleFeatures(StockqError):
    code = "stale_features"
    http_status = 409


class FeaturesMissing(StockqError):
    code = "features_missing"
    http_status = 404


class ModelNotFound(StockqError):
    code = "model_not_found"
    http_status = 404


class CorruptModel(StockqError):
    """Whatever is damaged (which file, what the loader said) is for the operator: the client learns that a
    stored model cannot be served and the error_id to quote."""

    code = "corrupt_model"
    http_status = 500

    def __init__(self, detail: str) -> None:
        super().__init__("the stored model cannot be loaded (damaged or altered files)", detail=detail)


class Cancelled(StockqError):
    code = "cancelled"
    http_status = 409


class Paused(Exception):
    """Training stopped at an epoch boundary with its state checkpointed, to be resumed elsewhere
    (preemption, a lost lease). Not a StockqError: it is no outcome of the job."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"paused after epoch {epoch}")
        self.epoch = epoch


class ParentOverlap(InvalidInput):
    """A parent whose training period reaches into the evaluation windows of the model built on it."""

    code = "parent_overlaps_evaluation"
