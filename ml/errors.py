"""Errors the ml core raises; each has a stable `code` the API returns as `{"error": {code, message}}`."""

from __future__ import annotations


class StockqError(Exception):
    code = "stockq_error"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


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
    code = "corrupt_model"
    http_status = 500


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
