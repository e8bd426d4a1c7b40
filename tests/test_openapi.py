"""The OpenAPI document and /docs, in process (the live fuzz run is tests/test_fuzz_api.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.conftest import make_settings
from webapp import create_app
from webapp.schemas import TICKER_PATTERN

KEY = "docs-secret-0123456789abcdef"


@pytest.fixture()
def client(tmp_path: Path) -> FlaskClient:
    return create_app(make_settings(tmp_path, 12, 13, api_keys=f"docs:{KEY}")).test_client()


def test_the_document_is_public_and_documents_every_status_with_one_error_body(
    client: FlaskClient,
) -> None:
    doc = client.get("/openapi.json").get_json()
    assert "ValidationErrorModel" not in str(doc)
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert "200" in ops["get", path]["responses"] and "security" not in ops["get", path], path
    assert set(ops["get", "/metrics"]["responses"]["200"]["content"]) == {"text/plain"}
    train = ops["post", "/train"]
    assert set(train["responses"]) == {"202", "400", "401", "413", "415", "422", "429", "503"}
    assert train["security"] == [{"bearer": []}]
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for status, response in train["responses"].items():
        if status != "202":
            assert response["content"]["application/json"]["schema"] == error_body, status
    assert set(ops["post", "/evaluate"]["responses"]) == set(train["responses"])
    assert ops["post", "/evaluate"]["security"] == [{"bearer": []}]
    assert {"404", "409"} <= set(ops["delete", "/jobs/{job_id}"]["responses"])
    assert "422" not in ops["get", "/health"]["responses"]  # nothing there is validated
    chart = ops["get", "/forecast/{ticker}.{fmt}"]["responses"]["200"]["content"]
    assert set(chart) == {"image/png", "image/svg+xml"}
    ticker = doc["components"]["schemas"]["TrainRequest"]["properties"]["ticker"]
    assert (ticker["pattern"], ticker["minLength"], ticker["maxLength"]) == (TICKER_PATTERN, 1, 12)
    record = doc["components"]["schemas"]["JobRecord"]["properties"]
    assert "job_id" in record and "Deprecated" in record["id"]["description"]


def test_the_live_job_endpoints_tickers_and_error_details_are_documented(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    stream = paths["/jobs/{job_id}/events"]["get"]["responses"]
    assert set(stream["200"]["content"]) == {"text/event-stream"}
    log = paths["/jobs/{job_id}/log"]["get"]
    assert log["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LogPage"
    }
    (after,) = [p for p in log["parameters"] if p["name"] == "after"]
    assert (after["in"], after["schema"]["minimum"]) == ("query", 0)
    for path, method in (("/status/{job_id}", "get"), ("/jobs/{job_id}", "delete"),
                         ("/jobs/{job_id}/retry", "post"), ("/jobs/{job_id}/events", "get"),
                         ("/jobs/{job_id}/log", "get")):  # fmt: skip
        assert {"404", "409"} <= set(paths[path][method]["responses"]), path  # unknown, ambiguous prefix
        assert paths[path][method]["security"] == [{"bearer": []}]
    tickers = paths["/tickers"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert tickers == {"$ref": "#/components/schemas/TickerList"}
    assert set(schemas["TickerList"]["required"]) == {"tickers", "source", "complete"}
    assert set(schemas["LogLine"]["properties"]) == {"n", "ts", "level", "logger", "message"}
    error = schemas[schemas["ErrorBody"]["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert "details" in error["properties"] and "details" not in error.get("required", [])


def test_the_evaluate_body_is_published_with_the_limits_the_server_checks(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    props = doc["components"]["schemas"]["EvaluateRequest"]["properties"]
    assert doc["paths"]["/evaluate"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EvaluateRequest"
    }
    (tickers,) = [t for t in props["tickers"]["anyOf"] if t.get("type") == "array"]
    assert (tickers["minItems"], tickers["maxItems"], tickers["items"]["pattern"]) == (1, 100, TICKER_PATTERN)
    (universe,) = [u for u in props["universe"]["anyOf"] if "enum" in u]
    assert set(universe["enum"]) == {"panel", "gspc"}
    (first_year,) = [y for y in props["first_year"]["anyOf"] if y.get("type") == "integer"]
    assert (first_year["minimum"], first_year["maximum"]) == (1900, 2100)
    (months,) = [m for m in props["refit_months"]["anyOf"] if m.get("type") == "integer"]
    assert (months["minimum"], months["maximum"]) == (1, 60)
    job_type = doc["components"]["schemas"]["JobRecord"]["properties"]["type"]
    assert "evaluate" in job_type["enum"]
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.post("/evaluate", json={"refit_months": 61}, headers=auth).status_code == 422
    assert client.post("/evaluate", json={"refit_months": 60}, headers=auth).status_code == 202


def test_the_schema_s_ticker_rule_is_the_server_s(client: FlaskClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for ticker in (" AAPL", "AAPL\n", "ı", ".A", "A" * 13, ""):
        assert re.search(TICKER_PATTERN, ticker) is None or ticker.endswith("\n"), ticker
        r = client.post("/train", json={"ticker": ticker}, headers=auth)
        assert r.status_code == 422, (ticker, r.get_json())
    # The pattern takes `brk.b`; the bundled data source has no such ticker (tests/test_tickers.py).
    r = client.post("/train", json={"ticker": "brk.b"}, headers=auth)
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "unknown_ticker"


def test_options_on_the_ping_path_advertises_only_its_own_method(client: FlaskClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    allow = client.options("/jobs/ping", headers=auth).headers["Allow"]
    assert "DELETE" not in allow and "POST" in allow
    assert "DELETE" in client.options("/jobs/0123abcd", headers=auth).headers["Allow"]


def test_swagger_ui_is_served_from_the_app_without_a_cdn(client: FlaskClient) -> None:
    page = client.get("/docs/swagger")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [a for a in assets if "//" in a], assets  # every asset relative: from this app
    for asset in assets:
        r = client.get("/docs/" + asset)
        assert r.status_code == 200 and len(r.data) > 1000, asset
    assert "openapi.json" in html
    assert client.get("/docs/").status_code == 200  # the index, public like the rest of /docs
