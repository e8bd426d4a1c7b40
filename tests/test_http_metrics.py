"""The API's /metrics under gunicorn: prometheus-flask-exporter in multiprocess mode sums every worker
process, with method, endpoint template and status on the counter and the histogram."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fresh_settings
from tests.procs import free_port, start_gunicorn


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in found.items() if n == name and match.items() <= dict(labels).items())


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A gunicorn API with two workers; its base URL and metrics directory."""
    tmp_path = tmp_path_factory.mktemp("http_metrics")
    settings = fresh_settings(tmp_path, 8, 9, api_keys="metrics-test-key-0123456789")
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: emptied at start
    port = free_port()
    proc = start_gunicorn(settings, port, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    try:
        yield f"http://127.0.0.1:{port}", prom_dir
    finally:
        proc.stop()


def test_requests_over_two_gunicorn_workers_are_all_counted(api: tuple[str, Path]) -> None:
    base, prom_dir = api
    n_ok, n_denied = 120, 30
    # start_gunicorn's own readiness probes count too: measure from here.
    before = samples(requests.get(f"{base}/metrics", timeout=10).text)

    def health(_: int) -> int:
        return requests.get(f"{base}/health", timeout=10, headers={"Connection": "close"}).status_code

    def denied(_: int) -> int:
        return requests.get(f"{base}/status/abc", timeout=10, headers={"Connection": "close"}).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(health, range(n_ok))) == {200}
        assert set(pool.map(denied, range(n_denied))) == {401}
    # Both gunicorn workers served some of them (each writes its own counter file).
    assert not (prom_dir / "counter_999999.db").exists()
    assert len(list(prom_dir.glob("counter_*.db"))) == 2

    found = samples(requests.get(f"{base}/metrics", timeout=10).text)
    labels = {"method": "GET", "endpoint": "/health", "status": "200"}
    for name in ("stockq_http_request_total", "stockq_http_request_duration_seconds_count"):
        assert total(found, name, **labels) - total(before, name, **labels) == n_ok, name
    rejected = {"method": "GET", "endpoint": "/status/<job_id>", "status": "401"}
    for name in ("stockq_http_request_total", "stockq_http_request_duration_seconds_count"):
        assert total(found, name, **rejected) - total(before, name, **rejected) == n_denied, name
    # Rejected by auth before the view ran, and still timed (the clock starts before auth).
    assert total(found, "stockq_http_request_duration_seconds_sum", **rejected) > 0
    # Per-process HTTP figures only: nothing read from Redis (that is the exporter's).
    names = {name for name, _ in found}
    assert not {n for n in names if n.startswith(("stockq_queue", "stockq_jobs", "stockq_worker"))}


def test_made_up_methods_share_one_series(api: tuple[str, Path]) -> None:
    """Anyone can send any method token, unauthenticated: each must not add a series of its own."""
    base, _ = api
    made_up = ("QQQA", "QQQB", "BREW", "PROPFIND", "X-HACK")
    for method in made_up:
        assert requests.request(method, f"{base}/health", timeout=10).status_code == 405
    found = samples(requests.get(f"{base}/metrics", timeout=10).text)
    series = {labels for name, labels in found if name == "stockq_http_request_total"}
    methods = {dict(labels)["method"] for labels in series}
    assert not methods & set(made_up), methods
    other = [dict(labels) for labels in series if dict(labels)["method"] == "other"]
    # A 405 matches no rule: its endpoint label is "unmatched", a fixed value too.
    assert other == [{"method": "other", "status": "405", "endpoint": "unmatched"}]
    assert total(found, "stockq_http_request_total", method="other") == len(made_up)
