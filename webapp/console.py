"""The job console at `/`: one server-rendered page for people, served by the API itself.

The page and its assets (webapp/static, public like /docs) carry no tenant data: the browser asks the API
for everything with the key the user entered (kept in sessionStorage), so a tenant sees only what the API
shows that key. The one call of the console's own, `GET /console/jobs/<id>`, adds what only the server
can make for a job: its analyst report as sanitised HTML and its links into Flower and MLflow.

A link to Flower or the MLflow UI is offered only when it is configured and answers: the server asks it
(a short timeout, the answer kept for a while), so the page never points at a port where nothing runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import nh3
import requests
from flask import Response, current_app, jsonify, render_template, request
from flask_openapi3 import APIBlueprint, Tag
from markdown_it import MarkdownIt
from pydantic import BaseModel, Field

from ml.tickers import INDEX_TICKER
from webapp.evaluation_cost import not_evaluated_text
from webapp.jobref import visible_job
from webapp.schemas import ErrorBody, JobPath
from workers.dispatch import task_id

console_tag = Tag(name="console", description="What the browser console at / needs beyond the jobs API")
console = APIBlueprint("console", __name__, abp_responses={"401": ErrorBody, "503": ErrorBody})
# CommonMark with tables; raw HTML in the markdown is escaped, and nh3 (ammonia) cleans what is rendered.
# Images are off: a report (LLM prose, news headlines) must not make the reader's browser fetch anything,
# so `![x](https://tracker/...)` stays text and a link.
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
# What the renderer emits and nothing that loads a resource by itself (no img, no iframe, no style).
_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li", "pre", "code", "hr", "br",
         "strong", "em", "a", "table", "thead", "tbody", "tr", "th", "td"}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
_URL_SCHEMES = {"http", "https", "mailto"}
# The page's own policy: scripts, styles, images and requests from this origin only (charts are blob:
# URLs), so even HTML that slipped past the sanitiser could load nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


# A page render waits at most this long per tool; a tool's answer (or silence) is kept this long.
PROBE_TIMEOUT_S = 0.5
PROBE_TTL_S = 30.0
_probed: dict[str, tuple[float, bool]] = {}
_probe_lock = threading.Lock()


class JobView(BaseModel):
    job_id: str
    report_html: str | None = Field(
        None, description="The analyst's markdown report, rendered and sanitised."
    )
    flower_url: str | None = Field(None, description="The job's current delivery in Flower.")
    mlflow_url: str | None = Field(None, description="The training's run, or the serving model's version.")


def render_markdown(text: str) -> str:
    return nh3.clean(_markdown.render(text), tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_URL_SCHEMES,
                     link_rel="noopener noreferrer")  # fmt: skip


def _ui_base(configured: str | None, port: int) -> str | None:
    """A browser-facing base URL: as configured (empty: none), else this host at `port`, where `stockq up`
    serves Flower and the MLflow UI."""
    if configured is not None:
        return configured.rstrip("/") or None
    host = urlsplit(request.host_url).hostname or "127.0.0.1"
    return f"{request.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def answering(base: str) -> bool:
    """Whether a web UI answers at `base` (any HTTP answer below 500: Flower behind basic auth answers
    401), asked at most once per PROBE_TTL_S per process."""
    now = time.monotonic()
    with _probe_lock:
        seen = _probed.get(base)
    if seen is not None and now - seen[0] < PROBE_TTL_S:
        return seen[1]
    try:
        ok = requests.get(base + "/", timeout=PROBE_TIMEOUT_S, allow_redirects=False).status_code < 500
    except requests.RequestException:
        ok = False
    with _probe_lock:
        _probed[base] = (now, ok)
    return ok


def _bases() -> tuple[str | None, str | None]:
    """Flower's and the MLflow UI's browser-facing bases, each None unless configured and answering."""
    s = current_app.extensions["stockq"].settings
    bases = (_ui_base(s.flower_ui_url, s.flower_port), _ui_base(s.mlflow_ui_url, s.mlflow_ui_port))
    flower, mlflow = (base if base and answering(base) else None for base in bases)
    return flower, mlflow


def _mlflow_link(base: str, result: Any) -> str | None:
    if not isinstance(result, dict):
        return None
    if result.get("run_id"):  # a training: its run (MLflow's UI finds the experiment itself)
        return f"{base}/#/runs/{quote(str(result['run_id']))}"
    model = result.get("model") or (result.get("forecast") or {}).get("model")
    if isinstance(model, dict) and model.get("name") and model.get("version"):
        return f"{base}/#/models/{quote(str(model['name']))}/versions/{quote(str(model['version']))}"
    return None


@console.get("/", doc_ui=False)
def page() -> Response:
    """The console page (HTML; not part of the API document)."""
    flower, mlflow = _bases()
    response = Response(render_template(
        "console.html", flower_url=flower, mlflow_url=mlflow, not_evaluated=not_evaluated_text(),
        parent_ticker=INDEX_TICKER,
    ))  # fmt: skip
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@console.get("/console/jobs/<job_id:job_id>", tags=[console_tag], responses={200: JobView, 404: ErrorBody})
def job_view(path: JobPath) -> Response:
    """For the console: the caller's job's report as sanitised HTML and its Flower and MLflow links."""
    job = visible_job(path.job_id)
    result = job.result
    markdown = result.get("report_markdown") if isinstance(result, dict) else None
    flower, mlflow = _bases()
    view = JobView(
        job_id=job.id,
        report_html=render_markdown(markdown) if isinstance(markdown, str) else None,
        flower_url=f"{flower}/task/{task_id(job.id, job.attempt)}" if flower else None,
        mlflow_url=_mlflow_link(mlflow, result) if mlflow else None,
    )
    return jsonify(view.model_dump())
