"""Request and response bodies. The OpenAPI document is generated from these same models."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ml.tickers import validate_ticker

Strategy = Literal["freeze", "fine_tune", "scratch"]
ModelChoice = Literal["auto", "child", "parent"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobType = Literal["train", "predict", "predict_batch", "analyze", "ingest", "ping", "chart"]
MAX_BATCH = 100


def _ticker(value: object) -> str:
    from ml.errors import InvalidTicker

    try:
        return validate_ticker(value)
    except InvalidTicker as exc:
        raise ValueError(exc.message) from None


def _unique_tickers(value: object) -> object:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        return value  # the list's own length bounds answer, before any per-item work
    tickers = [_ticker(v) for v in value]
    dupes = sorted(t for t, n in Counter(tickers).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate ticker(s): {', '.join(dupes)}")
    return tickers


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TrainRequest(_Request):
    ticker: str = Field(description="Ticker to train; ^GSPC trains the parent model.", examples=["AAPL"])
    strategy: Strategy = "fine_tune"
    epochs: int | None = Field(None, ge=1, le=500, strict=True)

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class PredictRequest(_Request):
    ticker: str = Field(examples=["AAPL"])
    model: ModelChoice = "auto"

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class BatchPredictRequest(_Request):
    tickers: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    model: ModelChoice = "auto"

    _check_tickers = field_validator("tickers", mode="before")(_unique_tickers)


class AgentRequest(_Request):
    ticker: str = Field(examples=["AAPL"])
    question: str | None = Field(None, max_length=500)  # agent.service.MAX_QUESTION_CHARS

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class IngestRequest(_Request):
    tickers: list[str] = Field(min_length=1, max_length=MAX_BATCH)

    _check_tickers = field_validator("tickers", mode="before")(_unique_tickers)


class WaitQuery(BaseModel):
    wait: float = Field(0, ge=0, le=10, description="Seconds to wait for the result before answering 202.")


class JobsQuery(BaseModel):
    status: JobStatus | None = None
    type: JobType | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: float | None = Field(None, description="`next_cursor` of the previous page.")
    owner: str | None = Field(None, max_length=64, description="Admins only: one tenant's jobs.")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, values: Any) -> Any:
        """`?status=&limit=` means no filter, as a form would send it."""
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if v not in ("", None)}
        return values


class JobPath(BaseModel):
    # Any id shape is looked up: an id we never issued is simply not found (404), not malformed.
    job_id: str = Field(min_length=1, max_length=128)


class ChartPath(BaseModel):
    ticker: str
    fmt: Literal["png", "svg"]

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str


class JobRecord(BaseModel):
    job_id: str
    id: str = Field(description="Deprecated alias of job_id (one more release).")
    owner: str | None = None
    attempt: int = 1
    type: JobType
    status: JobStatus
    stage: str | None = None
    params: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: ErrorDetail | None = None
    cancel_requested: bool = False


class JobList(BaseModel):
    jobs: list[JobRecord]
    count: int
    next_cursor: float | None = None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    redis: bool
    workers: dict[str, int]
    missing: list[str]
    auth: Literal["enabled", "disabled"]
