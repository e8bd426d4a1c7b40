"""Alerts that fire, end to end: a real Prometheus and Alertmanager (Debian's packages, on loopback)
scrape a real stack (gunicorn API, `stockq exporter`, Celery workers on a test-owned Redis) with the
project's rules, every `for:` shortened to 1 s by compose/alertgen.py. Faults are real: a worker is
SIGKILLed and started again; jobs are submitted to a queue nobody consumes.

Scrapes and evaluations run every second; a dead worker reads 0 once its heartbeat is 15 s old.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from tests.conftest import make_settings
from tests.procs import (
    BIN,
    FAST_TRAINING,
    Proc,
    free_port,
    settings_env,
    start_gunicorn,
    start_redis,
    start_worker,
    wait_until,
)
from tests.promstack import WebhookReceiver, tool
from tests.test_alerts import alertgen, render_alertmanager

pytestmark = pytest.mark.slow
DASHBOARD = (
    Path(__file__).resolve().parents[1] / "compose" / "grafana" / "dashboards" / "stockq-overview.json"
)


def alertmanager_config(webhook: str) -> str:
    """The project's routing tree, with notification delays cut from seconds-minutes to a second."""
    config = yaml.safe_load(render_alertmanager(webhook))
    for route in (config["route"], *config["route"]["routes"]):
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return yaml.safe_dump(config)


def prometheus_config(api: int, exporter: int, flower: int, alertmanager: int) -> dict[str, Any]:
    def job(name: str, port: int) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}

    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": ["alerts.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]},
        "scrape_configs": [job("stockq-api", api), job("stockq-exporter", exporter), job("flower", flower)],
    }


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.workers: dict[str, Proc] = {}
        redis_port = free_port()
        self.procs.append(start_redis(redis_port, tmp / "redis"))
        self.settings = make_settings(tmp, 0, 1, redis_url=f"redis://127.0.0.1:{redis_port}/0")
        self.redis = redis.Redis.from_url(self.settings.redis_url)
        self.webhook = WebhookReceiver()

    def spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        proc = Proc(argv, settings_env(self.settings, **env), self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        api, exporter, flower, prom, am = (free_port() for _ in range(5))
        (self.tmp / "multiproc").mkdir()
        self.procs.append(
            start_gunicorn(self.settings, api, PROMETHEUS_MULTIPROC_DIR=str(self.tmp / "multiproc"))
        )
        self.api = f"http://127.0.0.1:{api}"
        self.spawn("exporter", [str(BIN / "stockq"), "exporter", "--port", str(exporter)])
        self.spawn(
            "flower",
            [str(BIN / "celery"), "-A", "workers", "flower", f"--port={flower}", "--address=127.0.0.1"],
        )
        am_dir = self.tmp / "alertmanager"
        am_dir.mkdir()
        (am_dir / "alertmanager.yml").write_text(alertmanager_config(self.webhook.url), encoding="utf-8")
        config = am_dir / "alertmanager.yml"
        self.spawn("alertmanager", [tool("prometheus-alertmanager"), f"--config.file={config}",
                                    f"--storage.path={am_dir}", f"--web.listen-address=127.0.0.1:{am}",
                                    "--cluster.listen-address="])  # fmt: skip
        prom_dir = self.tmp / "prometheus"
        prom_dir.mkdir()
        alertgen.main(["fast", str(prom_dir / "alerts.yml"), "--for", "1s"])
        (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(api, exporter, flower, am)))
        self.spawn("prometheus", [tool("prometheus"), f"--config.file={prom_dir / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={prom_dir / 'data'}",
                                  f"--web.listen-address=127.0.0.1:{prom}"])  # fmt: skip
        self.prometheus = f"http://127.0.0.1:{prom}"
        jobs = {"stockq-api", "stockq-exporter", "flower"}
        wait_until(lambda: self._targets_up() == jobs, 90, "scrape targets up")

    def _get(self, url: str, **params: str) -> Any:
        try:
            return requests.get(url, params=params, timeout=5).json()["data"]
        except (requests.RequestException, ValueError, KeyError):
            return None

    def _targets_up(self) -> set[str]:
        data = self._get(f"{self.prometheus}/api/v1/targets") or {"activeTargets": []}
        return {t["labels"]["job"] for t in data["activeTargets"] if t["health"] == "up"}

    def firing(self, alertname: str, **labels: str) -> bool:
        data = self._get(f"{self.prometheus}/api/v1/alerts") or {"alerts": []}
        return any(
            a["labels"]["alertname"] == alertname
            and a["state"] == "firing"
            and labels.items() <= a["labels"].items()
            for a in data["alerts"]
        )

    def worker(self, queue: str, name: str, **env: str) -> str:
        self.workers[name] = start_worker(self.settings, queue, name, **env)
        return next(
            m.decode()
            for m in self.redis.zrange(f"stockq:workers:{queue}", 0, -1)
            if m.startswith(name.encode())
        )

    def stop(self) -> None:
        for proc in [*self.workers.values(), *reversed(self.procs)]:
            proc.stop()
        self.webhook.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for both tests (they use different queues): the start-up is most of the cost."""
    for name in ("promtool", "prometheus", "prometheus-alertmanager"):
        tool(name)
    s = Stack(tmp_path_factory.mktemp("alerts_live"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_worker_down_fires_is_delivered_and_resolves(stack: Stack) -> None:
    # Two workers on the queue (started side by side): with one killed the queue still has a worker,
    # so only the per-worker alert fires (a queue without workers would hold it back in Alertmanager).
    with ThreadPoolExecutor(2) as pool:
        node, _ = pool.map(lambda name: stack.worker("ingest", name), ["ingest-a", "ingest-b"])
    wait_until(lambda: stack.firing("StockqQueueNoWorkers", queue="agent"), 60, "unconsumed queues alert")
    assert not stack.firing("StockqWorkerDown")

    stack.workers.pop("ingest-a").kill()
    wait_until(
        lambda: stack.firing("StockqWorkerDown", worker=node, queue="ingest"), 90, "worker-down firing"
    )
    wait_until(
        lambda: stack.webhook.notified("StockqWorkerDown", "firing", worker=node), 30, "worker-down sent"
    )
    assert not stack.firing("StockqQueueNoWorkers", queue="ingest")

    assert stack.worker("ingest", "ingest-a") == node
    wait_until(lambda: not stack.firing("StockqWorkerDown", worker=node), 60, "worker-down resolved")
    wait_until(
        lambda: stack.webhook.notified("StockqWorkerDown", "resolved", worker=node), 30, "resolved sent"
    )


def test_queue_backlog_fires_and_resolves_when_a_worker_drains_it(stack: Stack) -> None:
    ids = [requests.post(f"{stack.api}/jobs/ping", timeout=10).json()["job_id"] for _ in range(3)]
    assert int(stack.redis.llen("inference")) == 3  # nobody consumes the queue
    assert not stack.firing("StockqQueueBacklog")
    # As if they had waited 10 minutes (the backlog threshold for quick queues is 5).
    for job_id in ids:
        stack.redis.hset(f"stockq:job:{job_id}", "submitted_at", time.time() - 600)
    wait_until(lambda: stack.firing("StockqQueueBacklog", queue="inference"), 60, "backlog firing")
    wait_until(lambda: stack.webhook.notified("StockqQueueBacklog", "firing", queue="inference"), 30, "sent")

    stack.worker("inference", "cpu")
    wait_until(lambda: not stack.firing("StockqQueueBacklog", queue="inference"), 90, "backlog resolved")
    wait_until(
        lambda: stack.webhook.notified("StockqQueueBacklog", "resolved", queue="inference"), 30, "sent"
    )
    statuses = {requests.get(f"{stack.api}/status/{i}", timeout=5).json()["status"] for i in ids}
    assert statuses == {"succeeded"}  # drained by the worker for real


def _job(stack: Stack, path: str, body: dict[str, Any], timeout_s: float = 240) -> dict[str, Any]:
    accepted = requests.post(f"{stack.api}{path}", json=body, timeout=10)
    assert accepted.status_code in {200, 202}, accepted.text
    job_id = accepted.json().get("job_id") or accepted.json()["id"]

    def done() -> dict[str, Any] | None:
        job = requests.get(f"{stack.api}/status/{job_id}", timeout=5).json()
        return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

    job = wait_until(done, timeout_s, f"{path} job", every=0.5)
    assert job["status"] == "succeeded", job
    return job


def test_every_dashboard_panel_shows_data_after_a_workload(stack: Stack) -> None:
    """After ingest, train, predict and analyze, each query of the provisioned dashboard returns data."""
    started = time.time()
    needed = {"ingest-a": "ingest", "cpu": "inference", "training": "training", "agent": "agent"}
    missing = [(queue, name) for name, queue in needed.items() if name not in stack.workers]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda qn: stack.worker(*qn, **FAST_TRAINING), missing))
    # The parent learns from every stored ticker: over six, each epoch takes about a second, so a running
    # training is scraped a few times (its loss is a live-only figure) before early stopping and the refit
    # end it (^GSPC alone ends in about the scrape interval).
    _job(stack, "/ingest", {"tickers": ["^GSPC", "AAPL", "KO", "PEP", "JNJ", "XOM"]})
    _job(stack, "/train", {"ticker": "^GSPC", "epochs": 15})
    _job(stack, "/predict-child", {"ticker": "^GSPC"})
    _job(stack, "/predict-child", {"ticker": "^GSPC"})  # the second from the prediction cache
    _job(stack, "/agent/chat", {"ticker": "^GSPC", "question": "Is the trend up?"})
    # The exporter reads the registry every 30 s: wait for the new champion's age.
    wait_until(lambda: _query(stack, "stockq_model_age_seconds", started), 60, "champion age")

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if not _query(stack, target["expr"].replace("$__rate_interval", "30s"), started):
                empty.append(panel["title"])
    assert len(dashboard["panels"]) >= 20
    assert empty == [], f"panels without data: {sorted(set(empty))}"


def _query(stack: Stack, expr: str, since: float) -> list[Any]:
    data = stack._get(f"{stack.prometheus}/api/v1/query_range", query=expr, start=str(since),
                      end=str(time.time()), step="1")  # fmt: skip
    return (data or {}).get("result", [])
