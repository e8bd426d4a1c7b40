"""GET /tickers and the submit-time check: a ticker the data source cannot serve is refused with close
matches (422 unknown_ticker) before any job exists; a source that cannot list refuses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml.data.bundled import _closes
from ml.data.listing import listing
from ml.errors import InvalidInput
from tests.conftest import flush_db, make_settings
from webapp import create_app

BUNDLED = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP",
           "PFE", "PG", "RRC", "UNH", "WMT", "XOM", "^GSPC"]  # fmt: skip
# Every submission that takes tickers, with a body naming `ticker`.
SUBMISSIONS = [
    ("/train", lambda t: {"ticker": t}),
    ("/predict-child", lambda t: {"ticker": t}),
    ("/predict", lambda t: {"tickers": ["MSFT", t]}),
    ("/agent/chat", lambda t: {"ticker": t}),
    ("/ingest", lambda t: {"tickers": [t]}),
    ("/evaluate", lambda t: {"tickers": [t, "KO"]}),
]


def app_client(tmp_path: Path, data_source: str = "bundled") -> FlaskClient:
    settings = make_settings(tmp_path, 10, 11, data_source=data_source)
    flush_db(settings.redis_url)
    return create_app(settings).test_client()


@pytest.fixture()
def client(tmp_path: Path) -> FlaskClient:
    return app_client(tmp_path)


def test_the_bundled_source_lists_what_it_serves(client: FlaskClient) -> None:
    body = client.get("/tickers").get_json()
    assert body == {"tickers": BUNDLED, "source": "bundled", "complete": True}
    # Read from the data files' headers, it is what the source loads.
    assert sorted(_closes().columns) == BUNDLED


@pytest.mark.parametrize(("path", "body"), SUBMISSIONS)
@pytest.mark.parametrize("ticker", ["AAPL1", "APPL", "aapl1"])
def test_an_unknown_ticker_is_refused_with_close_matches(
    client: FlaskClient, path: str, body, ticker: str
) -> None:
    r = client.post(path, json=body(ticker))
    assert r.status_code == 422, r.get_json()
    error = r.get_json()["error"]
    assert error["code"] == "unknown_ticker" and ticker.upper() in error["message"]
    assert error["details"]["unknown"] == [ticker.upper()]
    assert "AAPL" in error["details"]["suggestions"] and len(error["details"]["suggestions"]) <= 5
    assert client.get("/jobs").get_json()["count"] == 0  # refused before any job exists


def test_known_tickers_in_any_case_are_taken_as_today(client: FlaskClient) -> None:
    for path, body in SUBMISSIONS:
        r = client.post(path, json=body("aapl"))
        assert r.status_code == 202, (path, r.get_json())
    job = client.get(client.post("/train", json={"ticker": "^gspc"}).headers["Location"]).get_json()
    assert job["params"]["ticker"] == "^GSPC"
    r = client.post("/predict", json={"tickers": ["ZZZZ9", "QQQQ8"]})
    error = r.get_json()["error"]
    assert error["details"] == {"unknown": ["ZZZZ9", "QQQQ8"], "suggestions": []}
    assert "GET /tickers" in error["message"]
    assert client.post("/evaluate", json={}).status_code == 202  # no tickers: every ingested one


def test_a_csv_source_serves_the_files_present(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    for name in ("MKTS.csv", "^GSPC.csv", "lower.csv", "notes.txt"):
        (folder / name).write_text("Date,Close\n2024-01-02,1\n")
    client = app_client(tmp_path, f"csv:{folder}")
    # `lower.csv` is never opened (CsvSource reads `LOWER.csv`); the directory's path is not shown.
    assert client.get("/tickers").get_json() == {
        "tickers": ["MKTS", "^GSPC"],
        "source": "csv",
        "complete": True,
    }
    r = client.post("/train", json={"ticker": "MKT"})
    assert r.status_code == 422 and r.get_json()["error"]["details"]["suggestions"] == ["MKTS"]
    (folder / "NEWCO.csv").write_text("Date,Close\n2024-01-02,1\n")  # read again on each request
    assert client.post("/train", json={"ticker": "newco"}).status_code == 202


@pytest.mark.parametrize("source", ["yfinance", "auto"])
def test_a_source_that_cannot_list_refuses_nothing(tmp_path: Path, source: str) -> None:
    client = app_client(tmp_path, source)
    body = client.get("/tickers").get_json()
    assert (body["source"], body["complete"]) == (source, False)
    # auto answers offline from the bundled history: those are offered as you type
    assert body["tickers"] == ([] if source == "yfinance" else BUNDLED)
    assert client.post("/train", json={"ticker": "ZZZZ9"}).status_code == 202


def test_a_data_source_no_worker_could_build_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown data source"):
        create_app(make_settings(tmp_path, 10, 11, data_source="csv:"))
    assert listing(f"csv:{tmp_path / 'absent'}").complete is False  # the workers report a missing directory
