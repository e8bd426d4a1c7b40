"""Request and response bodies. The OpenAPI document is generated from these same models."""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ml.tickers import validate_ticker

Strategy = Literal["freeze", "fine_tune", "scratch"]
ModelChoice = Literal["auto", "child", "parent"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobType = Literal["train", "predict", "predict_batch", "analyze", "ingest", "ping", "chart", "evaluate"]
Universe = Literal["panel", "gspc"]
MAX_BATCH = 100
# validate_ticker's rule as the API takes it (either case, upper-cased on the way in; never a leading dot),
# published in the schema: a generated client or a fuzzer knows exactly what is accepted.
TICKER_PATTERN = r"^[A-Za-z0-9^=-][A-Za-z0-9^.=-]{0,11}$"
_TICKER_RE = re.compile(TICKER_PATTERN)
Ticker = Annotated[
    str,
    Field(
        min_length=1,
        max_length=12,
        pattern=TICKER_PATTERN,
        description="A-Z a-z 0-9 ^ . = - (1-12, no leading dot), case-insensitive.",
    ),
]


def _ticker(value: object) -> str:
    from ml.errors import InvalidTicker

    try:
        ticker = validate_ticker(value)
    except InvalidTicker as exc:
        raise ValueError(exc.message) from None
    # validate_ticker strips and upper-cases: padding, or a letter that upper() maps into ASCII (`ı`), would
    # pass it though the schema refuses them.
    if not _TICKER_RE.fullmatch(str(value)):
        shown = str(value) if len(str(value)) <= 20 else str(value)[:20] + "…"
        raise ValueError(f"invalid ticker {shown!r}: expected 1-12 characters of A-Z a-z 0-9 ^ . = -")
    return ticker


def _unique_tickers(value: object) -> object:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        return value  # the list's own length bounds answer, before any per-item work
    tickers = [_ticker(v) for v in value]
    dupes = sorted(t for t, n in Counter(tickers).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate ticker(s): {', '.join(dupes)}")
    return tickers


class _Request(BaseModel):
    # No whitespace stripping: every limit in the schema is what the server checks, on the bytes sent.
    model_config = ConfigDict(extra="forbid")


class TrainRequest(_Request):
    ticker: Ticker = Field(description="Ticker to train; ^GSPC trains the parent model.", examples=["AAPL"])
    strategy: Strategy = "fine_tune"
    epochs: int | None = Field(None, ge=1, le=500, strict=True)

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class PredictRequest(_Request):
    ticker: Ticker = Field(examples=["AAPL"])
    model: ModelChoice = "auto"

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class BatchPredictRequest(_Request):
    tickers: list[Ticker] = Field(min_length=1, max_length=MAX_BATCH, json_schema_extra={"uniqueItems": True})
    model: ModelChoice = "auto"

    _check_tickers = field_validator("tickers", mode="before")(_unique_tickers)


class AgentRequest(_Request):
    ticker: Ticker = Field(examples=["AAPL"])
    question: str | None = Field(None, max_length=500)  # agent.service.MAX_QUESTION_CHARS

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class IngestRequest(_Request):
    tickers: list[Ticker] = Field(min_length=1, max_length=MAX_BATCH, json_schema_extra={"uniqueItems": True})

    _check_tickers = field_validator("tickers", mode="before")(_unique_tickers)


class EvaluateRequest(_Request):
    # Left out: the worker's settings (STOCKQ_EVALUATE_*, STOCKQ_PARENT_UNIVERSE), as a training's epochs.
    tickers: list[Ticker] | None = Field(
        None, min_length=1, max_length=MAX_BATCH, json_schema_extra={"uniqueItems": True},
        description="The panel to evaluate on (default: every ingested ticker); ^GSPC always joins it.",
    )  # fmt: skip
    universe: Universe | None = Field(
        None, description="What the global model learns from: the whole panel, or ^GSPC alone (the parent)."
    )
    first_year: int | None = Field(None, ge=1900, le=2100, strict=True, description="The first refit year.")
    refit_months: int | None = Field(None, ge=1, le=60, strict=True, description="Months between refits.")

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
    ticker: Ticker
    fmt: Literal["png", "svg"]

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str
    error_id: str | None = Field(None, description="Names the failure in the server's log (500s).")


class ErrorBody(BaseModel):
    """The one error body, for every 4xx and 5xx."""

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
