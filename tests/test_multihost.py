"""Two worker hosts that share only the network services: a child trained on one is served by the other,
and a training whose host dies mid-run ends on the other host once, resumed from its checkpoint.

Each host is a Linux network namespace (tests/netns.py) with its own address, hostname (so its own Celery
node name) and var dir. They reach, over their veth link and the bridge, a password-protected Redis (job
registry, locks, Feast's online store and, for `redis`, the broker), RabbitMQ through a socat forwarder
(for `amqp`) and a real `mlflow server` serving the artifacts, all listening on the bridge's gateway
address only; the API (gunicorn) runs in the main namespace. Nothing of a model ever sits in a host's var
dir: weights, cards and checkpoints travel through the tracking server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from ml.registry.mlflow_registry import JOB_TAG, ModelRegistry
from ml.tickers import child_name
from stockq.settings import Settings
from tests import netns, rabbit
from tests.conftest import make_settings
from tests.procs import (
    BIN,
    FAST_TRAINING,
    Proc,
    free_port,
    start_gunicorn,
    start_redis,
    start_worker,
    wait_until,
)
from workers.celery_app import create_celery
from workers.jobs import JobRegistry

pytestmark = pytest.mark.slow

LEASE_S = 8
WORKER_ENV = {
    # A child reads its whole history here (no STOCKQ_TRAIN_HISTORY_DAYS): about a second per epoch on a
    # loaded machine, so a host can die between a training's epochs (two years train in a blink).
    **{k: v for k, v in FAST_TRAINING.items() if k != "STOCKQ_TRAIN_HISTORY_DAYS"},
    "STOCKQ_LEASE_S": str(LEASE_S),
    "STOCKQ_CHECKPOINT_S": "0",  # every epoch checkpoints into the run
}
REDIS_PASSWORD = "multihost-test-password"
# (served, resumed, kept) tickers per broker. The served child is another in each case: the champion B
# serves is then the one trained here. KO's selection improves on every one of RESUMED_EPOCHS epochs,
# then its refit runs as many: room to die after the first (MSFT's stops early after 2).
TICKERS = {"redis": ("AAPL", "KO"), "amqp": ("JNJ", "KO", "KO")}
RESUMED_EPOCHS = 5


@pytest.fixture(scope="module")
def lan() -> Iterator[netns.Lan]:
    reason = netns.unsupported()
    if reason:
        pytest.skip(reason)
    network = netns.Lan()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(scope="module")
def services(lan: netns.Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Redis, MLflow and (when RabbitMQ is here) an AMQP forwarder on the gateway address only."""
    root = tmp_path_factory.mktemp("multihost")
    gw = lan.gateway
    procs: list[Proc] = []
    try:
        mlflow_port = netns.free_port(gw)
        argv = [str(BIN / "mlflow"), "server", "--host", gw, "--port", str(mlflow_port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"]  # fmt: skip
        mlflow_env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow = Proc(argv, {**os.environ, **mlflow_env}, root / "mlflow.log")
        procs.append(mlflow)
        redis_port = netns.free_port(gw)
        procs.append(start_redis(redis_port, root / "redis", bind=gw, password=REDIS_PASSWORD))
        amqp_port = None
        if rabbit.available():
            amqp_port = netns.free_port(gw)
            forward = ["socat", f"TCP-LISTEN:{amqp_port},bind={gw},reuseaddr,fork", f"TCP:{rabbit.HOST}"]
            procs.append(Proc(forward, dict(os.environ), root / "socat.log"))
        tracking_uri = f"http://{gw}:{mlflow_port}"

        def mlflow_up() -> bool:
            if mlflow.p.poll() is not None:
                raise AssertionError(f"mlflow server exited:\n{mlflow.tail()}")
            try:
                return requests.get(f"{tracking_uri}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        registry = ModelRegistry(tracking_uri)

        def mlflow_ready() -> None:
            """Waited for beside the workers' cold starts (they need it at their first job only)."""
            wait_until(mlflow_up, 180, "mlflow server", every=0.3)
            registry.experiment_id()  # created as a worker would, with the server's artifact store

        yield {"redis": f"redis://:{REDIS_PASSWORD}@{gw}:{redis_port}", "amqp_port": amqp_port,
               "tracking_uri": tracking_uri, "registry": registry, "mlflow_ready": mlflow_ready}  # fmt: skip
    finally:
        for proc in procs:
            proc.kill()  # nothing of theirs outlives the module


class Api:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.http = requests.Session()

    def submit(self, path: str, body: dict[str, Any]) -> str:
        r = self.http.post(self.url + path, json=body, timeout=30)
        assert r.status_code in (200, 202), r.text
        return str(r.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"{self.url}/status/{job_id}", timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_until(done, timeout_s, f"job {job_id} to end", every=0.1)


@dataclass
class Stack:
    broker: str
    api: Api
    celery: Any
    registry: ModelRegistry
    host_a: netns.Host
    host_b: netns.Host
    var_b: Path
    jobs: JobRegistry  # the records as Redis holds them: what the API never shows (a lease's expiry)

    @property
    def node_a(self) -> str:
        return f"w-a@{self.host_a.hostname}"

    @property
    def node_b(self) -> str:
        return f"w-b@{self.host_b.hostname}"

    def training_queue(self, node: str, consume: bool) -> None:
        """Make `node` start or stop consuming the training queue (Celery's remote control); see it did."""
        command = self.celery.control.add_consumer if consume else self.celery.control.cancel_consumer
        replies = command("training", destination=[node], reply=True, timeout=15)
        assert any(node in reply for reply in replies), replies


@pytest.fixture(scope="module", params=["redis", "amqp"])
def stack(request: pytest.FixtureRequest, lan: netns.Lan, services: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    """Host A: a training worker. Host B: one worker for inference and (once told) training. The API on
    the main host. Each case on its own Redis DBs and RabbitMQ vhost."""
    broker = request.param
    if broker == "amqp" and services["amqp_port"] is None:
        pytest.skip("RabbitMQ (rabbitmqctl) is not installed here")
    db = 0 if broker == "redis" else 2  # this module's own Redis: any DB numbers
    root = tmp_path_factory.mktemp(f"stack-{broker}")
    vhost = f"stockq-multihost-{os.getpid()}"
    broker_url = None
    if broker == "amqp":  # the vhost's URL through the forwarder on the gateway
        broker_url = rabbit.fresh_vhost(vhost).replace(rabbit.HOST, f"{lan.gateway}:{services['amqp_port']}")

    def settings(var: str) -> Settings:
        return make_settings(root / var, db, db + 1, redis_url=f"{services['redis']}/{db}",
                             broker_url=broker_url, mlflow_tracking_uri=services["tracking_uri"],
                             lease_s=LEASE_S)  # fmt: skip

    api_settings, a_settings, b_settings = settings("api"), settings("host-a"), settings("host-b")
    host_a, host_b = lan.add("a"), lan.add("b")
    procs: list[Proc] = []
    celery = create_celery(api_settings)  # the test's own client of the broker (remote control)
    api_port = free_port()
    api = Api(api_port)
    try:
        b_worker = {"queues": "inference,training", "name": "w-b", "wrap": host_b.wrap(), **WORKER_ENV}
        with ThreadPoolExecutor(4) as pool:  # the cold starts at once
            starting = [
                pool.submit(start_worker, a_settings, "training", "w-a", wrap=host_a.wrap(), **WORKER_ENV),
                pool.submit(start_worker, b_settings, **b_worker),
                pool.submit(start_gunicorn, api_settings, api_port),
                pool.submit(services["mlflow_ready"]),
            ]
            wait(starting)
        procs += [f.result() for f in starting[:3] if f.exception() is None]
        for started in starting:
            started.result()  # the first failure, if any
        jobs = JobRegistry(redis.Redis.from_url(api_settings.redis_url), api_settings.job_retention_s)
        found = Stack(broker, api, celery, services["registry"], host_a, host_b, b_settings.var_path, jobs)
        # B takes trainings only once A's second one runs: which host trains what is then certain.
        found.training_queue(found.node_b, consume=False)
        yield found
    finally:
        lan.remove(host_a)  # every process of a host SIGKILLed: nothing to shut down gracefully here
        lan.remove(host_b)
        api.http.close()  # gunicorn's graceful stop would wait for its idle keep-alive connections
        for proc in procs:
            proc.stop()
        celery.close()
        if broker_url:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def _runs_of(registry: ModelRegistry, job_id: str, model: str) -> list[Any]:
    tags = f"tags.`{JOB_TAG}` = '{job_id}' and tags.`stockq.model` = '{model}'"
    return registry.client.search_runs([registry.experiment_id()], filter_string=tags)


def test_a_child_trained_on_one_host_is_served_by_another(stack: Stack) -> None:
    """B's var dir never held the model: B fetched it from the tracking server over its link."""
    api, ticker = stack.api, TICKERS[stack.broker][0]
    trained = api.wait(api.submit("/train", {"ticker": ticker, "strategy": "scratch", "epochs": 1}), 300)
    assert trained["status"] == "succeeded" and trained["worker"] == stack.node_a, trained
    forecast = api.wait(api.submit("/predict-child?wait=10", {"ticker": ticker, "model": "child"}), 120)
    assert forecast["status"] == "succeeded" and forecast["worker"] == stack.node_b, forecast
    model = forecast["result"]["model"]
    assert (model["name"], model["version"]) == (child_name(ticker), trained["result"]["version"])
    on_b = [p.relative_to(stack.var_b) for p in stack.var_b.rglob("*") if p.is_file()]
    kept = [p for p in on_b if p.suffix in (".parquet", ".pt", ".db") and p.name != "registry.db"]
    assert not kept, on_b


def _cut_broker_connections(stack: Stack, port: int) -> list[int]:
    """SIGKILL the forwarder processes carrying host A's connections to RabbitMQ (socat forks one per
    connection): A's broker connections drop while A itself lives on and reaches Redis. The pids killed."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    pids = {int(part.split(",")[0]) for line in out.splitlines() if f"{stack.host_a.address}:" in line
            for part in line.split("pid=")[1:]}  # fmt: skip
    killed = []
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # a short-lived connection (a publish) closed since ss listed it
            continue
        killed.append(pid)
    return killed


def test_a_live_host_that_loses_its_broker_connection_keeps_its_training(
    stack: Stack, services: dict[str, Any]
) -> None:
    """RabbitMQ redelivers A's message to B when A's connection drops, but A still renews its lease: B
    drops the copy and A finishes, its one attempt never counted as lost."""
    if stack.broker != "amqp":
        pytest.skip("a Redis broker redelivers only after the visibility timeout")
    api, ticker = stack.api, TICKERS[stack.broker][2]
    job_id = api.submit("/train", {"ticker": ticker, "strategy": "scratch", "epochs": RESUMED_EPOCHS})
    running = wait_until(lambda: (j := api.job(job_id))["status"] == "running" and j, 120, "a training")
    assert running["worker"] == stack.node_a, running
    stack.training_queue(stack.node_b, consume=True)
    try:
        wait_until(lambda: (api.job(job_id).get("progress") or {}).get("epoch", 0) >= 1, 240, "epoch 1",
                   every=0.05)  # fmt: skip
        assert _cut_broker_connections(stack, services["amqp_port"]), "no connection of A's to cut"
        done = api.wait(job_id, 300)
    finally:
        stack.training_queue(stack.node_b, consume=False)
    assert done["status"] == "succeeded" and done["worker"] == stack.node_a, done
    outcomes = [(a["outcome"], a["worker"]) for a in done["attempts"]]
    assert (done["attempt"], done["lost"], outcomes) == (1, 0, [("succeeded", stack.node_a)]), done
    assert not done.get("resumed_from_epoch")  # never handed on, never resumed


def test_a_dead_host_s_training_ends_once_on_the_other_resumed_from_its_checkpoint(stack: Stack) -> None:
    """A trains, checkpoints an epoch and dies: every process SIGKILLed (the kernel closes their
    connections), then its link pulled. The job ends on B in the same MLflow run, one version registered:
    within the lease on Redis, before it on RabbitMQ."""
    api, ticker = stack.api, TICKERS[stack.broker][1]
    job_id = api.submit("/train", {"ticker": ticker, "strategy": "scratch", "epochs": RESUMED_EPOCHS})
    running = wait_until(lambda: (j := api.job(job_id))["status"] == "running" and j, 120, "a training")
    assert running["worker"] == stack.node_a, running
    stack.training_queue(stack.node_b, consume=True)
    wait_until(lambda: (api.job(job_id).get("progress") or {}).get("epoch", 0) >= 1, 240,
               "A's first checkpointed epoch", every=0.05)  # fmt: skip
    before = api.job(job_id)
    assert (before["status"], before["attempt"]) == ("running", 1), before
    record = stack.jobs.get(job_id)
    assert record is not None and record.lease_expires_at is not None
    lease = record.lease_expires_at  # A renews it until it dies: the real expiry is this or later
    down = time.monotonic()
    assert stack.host_a.tear_down(), "no process on host A"
    wait_until(lambda: api.job(job_id)["attempt"] >= 2, 120, "attempt 2", every=0.05)
    requeued_s = time.monotonic() - down
    done = api.wait(job_id, 300)
    print(f"\n[{stack.broker}] host A down: attempt 2 queued after {requeued_s:.1f}s, the job "
          f"{done['status']} after {time.monotonic() - down:.1f}s; attempts {done['attempts']}")  # fmt: skip

    assert done["status"] == "succeeded" and done["worker"] == stack.node_b, done
    outcomes = [(a["outcome"], a["worker"]) for a in done["attempts"]]
    assert outcomes == [("worker_lost", stack.node_a), ("succeeded", stack.node_b)], done["attempts"]
    assert done["attempt"] == 2 and done["executions"] == 1 and done["lost"] == 1
    assert done["resumed_from_epoch"] >= 1 and done["result"]["resumed_from_epoch"] >= 1
    runs = _runs_of(stack.registry, job_id, child_name(ticker))
    assert [(r.info.run_id, r.info.status) for r in runs] == [(done["result"]["run_id"], "FINISHED")]
    client = stack.registry.client
    versions = client.search_model_versions(f"run_id = '{runs[0].info.run_id}'")
    assert [str(v.version) for v in versions] == [done["result"]["version"]]
    # No epoch trained twice: the selection's epochs and the refit's each logged once, from 1.
    history = done["result"]["history"]
    for phase, metric in (("select", "train_loss"), ("refit", "refit_train_loss")):
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, metric)]
        assert sorted(steps) == list(range(1, sum(h["phase"] == phase for h in history) + 1)), (phase, steps)
    assert sum(h["phase"] == "refit" for h in history) == done["result"]["epochs_run"]
    # Who requeued it: on RabbitMQ, B took the job over the moment the broker redelivered A's message
    # (A's connection closed), long before A's lease ran out; on Redis the message waits for its
    # visibility timeout, and B's reaper requeued the job once A's lease had expired.
    before_expiry = done["attempts"][0]["ended_at"] < lease
    assert before_expiry == (stack.broker == "amqp"), (done["attempts"][0], lease)
