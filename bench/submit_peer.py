"""The bare peer of bench/submit.py: a Flask app whose submit endpoint only calls `apply_async`, and the
Celery app of its `noop` task (the raw round trip), on the broker the bench names (BENCH_BROKER_URL) with a
Redis result backend (BENCH_RESULT_URL). Celery's defaults otherwise: nothing of stockq's runs here.

    gunicorn ... 'bench.submit_peer:create_app()'
    celery -A bench.submit_peer worker -Q bench-peer
"""

from __future__ import annotations

import os
import uuid

from celery import Celery
from flask import Flask, jsonify, request

QUEUE = "bench-peer"

celery = Celery(
    "bench_peer",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/0"),
)
celery.conf.update(task_default_queue=QUEUE, worker_hijack_root_logger=False)


@celery.task(name="bench.noop")
def noop(**_: object) -> None:
    return None


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/enqueue")
    def enqueue() -> tuple[object, int]:
        # What stockq's publish does too: a task by name, the body as its arguments, no result kept.
        task_id = uuid.uuid4().hex
        noop.apply_async(kwargs=request.get_json(), task_id=task_id, ignore_result=True)
        return jsonify({"task_id": task_id}), 202

    @app.get("/hello")
    def hello() -> object:
        return jsonify({"status": "ok"})

    return app
