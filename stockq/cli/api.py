"""The CLI's side of the REST API: calls mapped to exit codes, cards and charts (following a job:
stockq/cli/follow.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from tenacity import Retrying, retry_if_exception, retry_if_result, stop_after_delay, wait_exponential

from stockq.cli.output import AUTH_REFUSED, BAD_USAGE, UNREACHABLE, CliError
from stockq.settings import Settings

CHART_TIMEOUT_S = 120.0


def exit_code_for(status: int) -> int:
    """401/403: auth; 429 and 5xx: the API cannot serve now (retry later); any other 4xx: the request."""
    if status in (401, 403):
        return AUTH_REFUSED
    if status == 429 or status >= 500:
        return UNREACHABLE
    return BAD_USAGE


class Api:
    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.base = settings.api_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if settings.api_key.get_secret_value():
            self.session.headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            response = self.session.request(method, self.base + path, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CliError(
                UNREACHABLE, "api_unreachable", f"cannot reach the API at {self.base} ({type(exc).__name__}; "
                "is `stockq up` running?)",
            ) from None  # fmt: skip
        if response.status_code >= 400:
            raise _refused(response)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else {}

    def card(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.call(
            "GET", f"/models/{quote(name, safe='')}", params={} if version is None else {"version": version}
        )

    def chart_path(self, ticker: str) -> str:
        return f"/forecast/{quote(ticker, safe='')}.png"

    def save_chart(self, ticker: str, path: Path) -> Path:
        """GET /forecast/<ticker>.png into `path`. It answers 202 while the chart job is not done (at once
        when the API has no thread free to wait): asked again after 0.5 s, doubling up to 5 s, for two
        minutes. The requests join the same chart job; a chart found expired is asked for again."""
        attempts = Retrying(
            retry=retry_if_result(lambda r: not _is_image(r)) | retry_if_exception(_expired),
            wait=wait_exponential(multiplier=0.5, max=5),
            stop=stop_after_delay(CHART_TIMEOUT_S),
            retry_error_callback=lambda _state: None,
        )
        response = attempts(self.request, "GET", self.chart_path(ticker), params={"wait": 10})
        if response is None:
            raise CliError(UNREACHABLE, "chart_timeout", f"the chart of {ticker} was not ready in time")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(response.content)
        return path


def _refused(response: requests.Response) -> CliError:
    """The API's error as the CLI's: its code and message; an ambiguous job id lists the jobs it fits."""
    try:
        error = response.json().get("error") or {}
    except ValueError:  # not ours (a proxy's page, say)
        error = {}
    code = error.get("code") or f"http_{response.status_code}"
    message = f"{response.status_code} {code}: {error.get('message') or response.reason}"
    if response.status_code == 401:
        message += " (set STOCKQ_API_KEY)"
    candidates = (error.get("details") or {}).get("candidates") or []
    if candidates:
        message += "".join(f"\n  {c}" for c in candidates)
    extra = {"candidates": candidates} if candidates else {}
    return CliError(exit_code_for(response.status_code), code, message, status=response.status_code, **extra)


def _is_image(response: requests.Response) -> bool:
    return response.status_code == 200 and response.headers.get("content-type", "").startswith("image/")


def _expired(exc: BaseException) -> bool:
    # A chart job that finished long before this request, its bytes evicted: the next request starts anew.
    return isinstance(exc, CliError) and exc.code == "chart_expired"
