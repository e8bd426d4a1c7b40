"""The published contract: `/openapi.json` says every status the server can answer, and `/docs` renders it
(Swagger UI from the flask-openapi3-swagger wheel, which ships its assets: no CDN).

The statuses that middleware answers for every operation (auth, rate limits, the JSON body check, Redis
down, a path that cannot match) are added here once, by the same rules that webapp/app.py, webapp/auth.py
and webapp/ratelimit.py apply; each route's decorator documents only what is its own (200/202, 404, 409).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask_openapi3 import OpenAPI
from werkzeug.routing import BaseConverter

from webapp.auth import PUBLIC_PATHS
from webapp.routes import ops_tag

ERROR_REF = "#/components/schemas/ErrorBody"
BODY_METHODS = {"post", "put", "patch"}
DESCRIPTIONS = {
    400: "The body is empty or not valid JSON.",
    401: "Missing or invalid API key.",
    404: "Not found (for a job: missing or another tenant's).",
    409: "A job id prefix that several of the caller's jobs start with (`ambiguous_job_id`: "
    "`details.candidates` lists their ids); give more of the id.",
    413: "The body exceeds 64 KiB.",
    415: "The body is not `application/json`.",
    422: "A parameter or the body fails validation; the message names each field.",
    429: "Over this tenant's rate limit for the endpoint class, or its in-flight cap (`Retry-After`).",
    503: "Redis (the job registry) or the broker is unreachable (`broker_unavailable`) or full"
    " (`broker_full`): retry after `Retry-After` seconds.",
}
METRICS = {
    "get": {
        "tags": ["ops"],
        "summary": "Prometheus metrics of this API process (prometheus-flask-exporter).",
        "operationId": "metrics_get",
        "responses": {
            "200": {
                "description": "Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
}


class JobIdConverter(BaseConverter):
    """Any job id shape (an id never issued is a 404), except the literal `ping`: `/jobs/ping` is the ping
    endpoint, so `OPTIONS /jobs/ping` must not also advertise `DELETE` of a job called "ping"."""

    regex = r"(?!ping$)[^/]+"


def _error(status: int) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": ERROR_REF}}}
    return {"description": DESCRIPTIONS[status], "content": content}


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """Adds the middleware's statuses (and the bearer requirement) to every operation, replacing the
    pydantic-shaped 422 flask-openapi3 puts on every operation with ours, only where something is validated.
    Idempotent."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            params = {p.get("in") for p in op.get("parameters", [])}
            wanted: set[int] = set()
            if path not in PUBLIC_PATHS:
                wanted |= {401, 429, 503}
                op["security"] = [{"bearer": []}]
            if params:
                wanted.add(422)
            if "path" in params:
                wanted.add(404)  # a value that no route matches (a `/` in it, say)
            if "{job_id}" in path:
                wanted.add(409)  # a prefix of several jobs' ids (webapp/jobref.py); a route's own 409 stays
            if method in BODY_METHODS:
                wanted |= {400, 413, 415, 422}  # the body check runs even where no body is expected
            if 422 not in wanted:
                responses.pop("422", None)
            for status in sorted(wanted):
                if status == 422 or str(status) not in responses:
                    responses[str(status)] = _error(status)
    doc["paths"].setdefault("/metrics", METRICS)
    doc.get("components", {}).get("schemas", {}).pop("ValidationErrorModel", None)
    return doc


def install_docs(app: OpenAPI) -> None:
    """Call after every blueprint is registered: the document is built once, from the routes there are."""

    @app.get(
        "/openapi.json",
        tags=[ops_tag],
        responses={
            200: {
                "description": "This document (OpenAPI 3.1).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    def openapi() -> Response:
        """The OpenAPI document of this API; `/docs` renders it."""
        return Response(body, mimetype="application/json")

    # flask-openapi3 caches the dict it serves at /docs/openapi.json: completing it in place serves the
    # same document there.
    body = json.dumps(complete(app.api_doc))
