"""Request and response bodies. The OpenAPI document is generated from these same models."""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ml.tickers import validate_ticker
from workers.jobs.model import AttemptOutcome, JobStatus
from workers.jobs.model import JobRecord as StoredJob
from workers.jobs.specs import job_types

Strategy = Literal["freeze", "fine_tune", "scratch"]
ModelChoice = Literal["auto", "child", "parent"]


def _job_type(value: str) -> str:
    if value not in job_types():
        raise ValueError(f"unknown job type {value!r}: one of {', '.join(job_types())}")
    return value


class _JobTypesEnum:
    """The document's enum: the types registered when it is built."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        return {**handler(core_schema), "enum": list(job_types())}


# The job types of the one table (workers/jobs/specs.py), as the API takes and shows them: the table as it
# stands when a request is validated (a row registered after this module loaded is a type too), never a
# Literal frozen at import.
JobType = Annotated[str, AfterValidator(_job_type), _JobTypesEnum()]
Universe = Literal["panel", "gspc"]
MAX_BATCH = 100
MAX_LOG_CURSOR = 10**9
CURSOR_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
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
    """Each ticker once. The schema's uniqueItems is case-sensitive and tickers are not: `aapl` after
    `AAPL` is the same ticker, taken once (the first place it appears); an exact repeat is refused."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        return value  # the list's own length bounds answer, before any per-item work
    tickers = [_ticker(v) for v in value]  # each one valid (a string) before they are compared
    dupes = sorted(t for t, n in Counter(value).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate ticker(s): {', '.join(dupes)}")
    return list(dict.fromkeys(tickers))


def _integral(value: object) -> object:
    """JSON has one number type: 99.0 is the integer 99 (a fraction, a string or a bool stays refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _Request(BaseModel):
    # No whitespace stripping: every limit in the schema is what the server checks, on the bytes sent.
    model_config = ConfigDict(extra="forbid")


class TrainRequest(_Request):
    ticker: Ticker = Field(description="Ticker to train; ^GSPC trains the parent model.", examples=["AAPL"])
    strategy: Strategy = "fine_tune"
    # An integer as JSON Schema means it: 99 and 99.0, never "99" or true. Strict, with a before-validator
    # of the field (not of the type: pydantic then publishes `ge`/`le` instead of minimum/maximum).
    epochs: int | None = Field(None, ge=1, le=500, strict=True)

    _check_ticker = field_validator("ticker", mode="before")(_ticker)
    _check_epochs = field_validator("epochs", mode="before")(_integral)


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
    _check_integers = field_validator("first_year", "refit_months", mode="before")(_integral)


class WaitQuery(BaseModel):
    wait: float = Field(0, ge=0, le=10, description="Seconds to wait for the result before answering 202.")


class JobsQuery(BaseModel):
    status: JobStatus | None = None
    type: JobType | None = None
    limit: int = Field(50, ge=1, le=200)
    # Text read by the route (the document gives its pattern): a cursor that is no finite number is a bad
    # request (400 invalid_cursor), never a 5xx.
    cursor: str | None = Field(
        None, max_length=40, json_schema_extra={"pattern": CURSOR_PATTERN},
        description="`next_cursor` of the previous page.",
    )  # fmt: skip
    owner: str | None = Field(None, max_length=64, description="Admins only: one tenant's jobs.")


class JobPath(BaseModel):
    # Any id shape is looked up: an id we never issued is simply not found (404), not malformed.
    job_id: str = Field(min_length=1, max_length=128)


class LogQuery(BaseModel):
    after: int = Field(
        0, ge=0, le=MAX_LOG_CURSOR, description="The first line to send: `next` of the last page."
    )


class LogLine(BaseModel):
    n: int = Field(description="The line's number in the job's log, from 0.")
    ts: float = Field(description="When it was logged (Redis server time, s).")
    level: str
    logger: str
    message: str


class LogPage(BaseModel):
    """The job's own log lines (the last 500 are kept): those from `after` on."""

    lines: list[LogLine]
    next: int = Field(description="The cursor of the next page (`?after=`).")


class TickerList(BaseModel):
    tickers: list[str] = Field(description="What the data source can serve, sorted.")
    source: str = Field(description="The configured data source's kind: auto, yfinance, bundled or csv.")
    complete: bool = Field(
        description="Every servable ticker is listed, and a submission of any other is refused (422 "
        "unknown_ticker). False for a source that cannot list (yfinance; auto lists its offline tickers).",
    )  # fmt: skip


class ChartPath(BaseModel):
    ticker: Ticker
    fmt: Literal["png", "svg"]

    _check_ticker = field_validator("ticker", mode="before")(_ticker)


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str
    error_id: str | None = Field(None, description="Names the failure in the server's log (500s).")


class RequestErrorDetail(ErrorDetail):
    details: dict[str, Any] | None = Field(
        None, description="What to act on: `suggestions` (unknown_ticker: close matches of the unknown "
        "tickers, named in `unknown`), `candidates` (ambiguous_job_id: the full ids the prefix starts).",
    )  # fmt: skip


class ErrorBody(BaseModel):
    """The one error body, for every 4xx and 5xx."""

    error: RequestErrorDetail


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str


class Attempt(BaseModel):
    """How one earlier attempt ended."""

    attempt: int
    worker: str = Field(description="The worker that ran it ('' when its message was lost before).")
    started_at: float = Field(description="0 when it never started.")
    ended_at: float
    outcome: AttemptOutcome
    task: str | None = Field(None, description="A hand-off's next task: the job went on as this task.")


class JobRecord(BaseModel):
    """A job as the registry keeps it (workers/jobs/model.JobRecord.to_api): every response that shows
    a job is built through this model."""

    job_id: str
    id: str = Field(description="Deprecated alias of job_id (one more release).")
    owner: str
    type: JobType
    status: JobStatus
    attempt: int = Field(1, description="The delivery now owning the job; each requeue or retry adds one.")
    stage: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    progress: dict[str, Any] = Field(default_factory=dict)
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: ErrorDetail | None = None
    cancel_requested: bool = False
    attempts: list[Attempt] = Field(default_factory=list, description="How each earlier attempt ended.")
    lost: int = Field(0, description="Times its worker was lost (failed as worker_lost at the limit).")
    resumed_from_epoch: int = Field(0, description="A training resumed from this epoch's checkpoint.")
    executions: int = Field(0, description="Outcomes of its work recorded (at most one).")
    worker: str | None = Field(None, description="The worker running (or that last ran) it.")

    @classmethod
    def show(cls, job: StoredJob) -> dict[str, Any]:
        """The response body of a stored job, validated against this schema."""
        return cls.model_validate(job.to_api()).model_dump(mode="json")


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
