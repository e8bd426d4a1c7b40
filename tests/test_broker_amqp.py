"""RabbitMQ as the broker (STOCKQ_BROKER_URL=amqp://...), on this machine's server in a private vhost,
whatever `--broker` the rest of the suite runs on: quorum queues with a delivery limit, the dead-letter
queue drained into the job records, queue depths for the exporter."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from tests import rabbit
from tests.conftest import make_settings
from tests.procs import start_worker, wait_until
from tests.test_exporter import scrape, value
from workers.broker_amqp import queue_depths
from workers.celery_app import DEAD_LETTER_QUEUE, QUEUES, create_celery
from workers.exporter import BackendCollector
from workers.exporter_sources import WorkerLiveness
from workers.jobs import JobRegistry, JobStatus
from workers.jobs.keys import DEAD_LETTER

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not rabbit.available(), reason="rabbitmqctl not installed: no RabbitMQ here"),
]
DB = 12  # Redis DBs 12/13, emptied first (shared with the serving tests, which run before or after)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    vhost = f"stockq-test-amqp-{DB}"
    broker = rabbit.fresh_vhost(vhost)
    settings = make_settings(tmp_path_factory.mktemp("amqp"), DB, DB + 1, broker_url=broker)
    r = redis.Redis.from_url(settings.redis_url)
    r.flushdb()
    worker = start_worker(settings, "inference,ingest", "amqp1", app="tests.fault_tasks", STOCKQ_LEASE_S="5")
    try:
        yield {"settings": settings, "vhost": vhost, "redis": r, "jobs": JobRegistry(r, 3600),
               "celery": create_celery(settings)}  # fmt: skip
    finally:
        worker.stop()


def queue_types(vhost: str) -> dict[str, tuple[str, str]]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "arguments", "--no-table-headers"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        name, kind, arguments = line.split("\t", 2)
        found[name] = (kind, arguments)
    return found


def test_the_queues_are_quorum_queues_with_a_delivery_limit(env: dict) -> None:
    env["celery"].send_task("stockq.ping", args=["nobody"], kwargs={"attempt": 1}, queue="training")
    found = queue_types(env["vhost"])
    limit = env["settings"].max_attempts + 1
    for queue in ("ingest", "training"):  # declared by the worker, and by a publisher
        kind, arguments = found[queue]
        assert kind == "quorum", found
        assert f'{{"x-delivery-limit",{limit}}}' in arguments.replace(" ", ""), arguments
        assert "stockq.dlx" in arguments
    kind, arguments = found["inference"]
    assert kind == "classic" and '{"x-max-priority",9}' in arguments.replace(" ", ""), arguments


def test_queue_depths_are_read_from_rabbitmq(env: dict) -> None:
    celery = env["celery"]
    before = queue_depths(env["settings"].broker, QUEUES)["training"]
    for _ in range(3):  # nobody consumes the training queue here
        celery.send_task("stockq.ping", args=["nobody"], kwargs={"attempt": 1}, queue="training")
    depths = queue_depths(env["settings"].broker, QUEUES)
    assert depths["training"] == before + 3 and set(depths) == set(QUEUES)
    # What `stockq exporter` reports with this broker (the queues are no Redis lists here).
    r = env["redis"]
    amqp = functools.partial(queue_depths, env["settings"].broker, QUEUES)
    found = scrape(BackendCollector(r, WorkerLiveness(r, QUEUES, 600), None, {}, amqp))
    assert value(found, "stockq_queue_length", queue="training") == before + 3


def test_a_message_never_acked_is_dead_lettered_and_its_job_failed(env: dict) -> None:
    jobs, r = env["jobs"], env["redis"]
    job = jobs.create("ping", {}, "stockq.test.refused", task_kwargs={})
    env["celery"].send_task("stockq.test.refused", args=[job.id], kwargs={"attempt": 1},
                            queue="ingest", task_id=job.id)  # fmt: skip
    jobs.published(job.id, 1)  # the broker took it (what workers/dispatch.py records)
    failed = wait_until(lambda: (j := jobs.get(job.id)).status == JobStatus.FAILED and j, 120, "dead letter")
    assert failed.error["code"] == "worker_lost" and DEAD_LETTER_QUEUE in failed.error["message"]
    assert r.zscore(DEAD_LETTER, job.id) is not None
    # Drained: acknowledged once recorded, nothing left behind in the dead-letter queue.
    with Connection(env["settings"].broker) as conn:
        left = conn.default_channel.queue_declare(DEAD_LETTER_QUEUE, passive=True).message_count
    assert left == 0


def test_predictions_are_served_before_batches_queued_earlier(tmp_path: Any) -> None:
    # Its own vhost with no consumer: what a busy inference pool would take next, in order.
    broker = rabbit.fresh_vhost(f"stockq-test-amqp-{DB}-priority")
    celery = create_celery(make_settings(tmp_path, DB, DB + 1, broker_url=broker))
    for n in range(3):
        celery.send_task("stockq.predict_batch", args=[f"batch{n}"], kwargs={"attempt": 1})
    celery.send_task("stockq.chart", args=["chart"], kwargs={"attempt": 1})
    celery.send_task("stockq.predict", args=["predict"], kwargs={"attempt": 1})
    order = []
    with Connection(broker) as conn:
        channel = conn.default_channel
        while (message := channel.basic_get("inference", no_ack=True)) is not None:
            order.append(message.headers["task"])
    assert order == ["stockq.predict", *["stockq.predict_batch"] * 3, "stockq.chart"]
