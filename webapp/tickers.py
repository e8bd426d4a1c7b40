"""What the data source can serve: `GET /tickers` (offered as you type), and the check every submission's
tickers pass, so an unknown ticker is refused with close matches instead of failing as a job.

A source that cannot list what it serves (yfinance, and `auto`, which asks yfinance first) refuses
nothing here: its workers still fail an unknown ticker as `unknown_ticker`.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from ml.data.listing import MAX_SUGGESTIONS, Listing
from webapp.errors import ApiError
from webapp.jobref import api_context
from webapp.schemas import ErrorBody, TickerList

data_tag = Tag(name="data", description="What the data source can serve")
tickers = APIBlueprint("tickers", __name__, abp_responses={"401": ErrorBody, "503": ErrorBody})


def _listing() -> Listing:
    return api_context().tickers()


@tickers.get("/tickers", tags=[data_tag], responses={200: TickerList})
def list_tickers() -> Response:
    """The tickers the configured data source can serve, sorted. With `complete` false (a source that
    cannot list them all) any other ticker may still be submitted."""
    found = _listing()
    return jsonify({"tickers": list(found.tickers), "source": found.source, "complete": found.complete})


def check_known(params: dict[str, Any]) -> None:
    """422 `unknown_ticker` when a submission's `ticker` or `tickers` (validated, upper-case) holds one the
    data source cannot serve: `details.unknown` names them, `details.suggestions` has up to 5 close
    matches of them (difflib: `APPL` -> `AAPL`)."""
    asked = [params["ticker"]] if params.get("ticker") else list(params.get("tickers") or ())
    if not asked:
        return
    found = _listing()
    unknown = found.unknown(asked)
    if not unknown:
        return
    suggestions = list(dict.fromkeys(s for t in unknown for s in found.suggestions(t)))[:MAX_SUGGESTIONS]
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; GET /tickers lists them"
    raise ApiError(
        422, "unknown_ticker",
        f"the {found.source} data source has no history for {', '.join(unknown)}{hint}",
        details={"unknown": unknown, "suggestions": suggestions},
    )  # fmt: skip
