"""No secret leaves the processes: not through `celery inspect conf`, Flower's API or any log line of a
short end-to-end run; a pickle message published straight onto a queue is refused, never executed; and no
process starts with a documented placeholder for a secret (stockq/placeholders.py)."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kombu import Connection, Exchange, Producer

from stockq.cli.stack import gunicorn_argv
from tests.conftest import make_settings
from tests.procs import BIN, Proc, free_port, settings_env, start_gunicorn, start_worker, wait_until

pytestmark = pytest.mark.slow

REDIS_PASSWORD = "redis-pass-" + uuid.uuid4().hex
TENANT_KEY = "tenant-key-" + uuid.uuid4().hex
ADMIN_KEY = "admin-key-" + uuid.uuid4().hex
OPENAI_KEY = "sk-test-" + uuid.uuid4().hex
FLOWER_PASSWORD = "flower-pass-" + uuid.uuid4().hex
SECRETS = (REDIS_PASSWORD, TENANT_KEY, ADMIN_KEY, OPENAI_KEY, FLOWER_PASSWORD)


class _Touch:
    """A pickle payload that creates a file when unpickled: what an attacker on the broker would send."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("secrets")
    port = free_port()
    redis_proc = Proc(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            REDIS_PASSWORD,
        ],
        dict(os.environ),
        tmp / "redis.log",
    )
    settings = make_settings(
        tmp / "var",
        0,
        1,
        redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
        api_keys=f"alice:{TENANT_KEY}",
        admin_keys=f"ops:{ADMIN_KEY}",
        openai_api_key=OPENAI_KEY,
    )
    env = {"OPENAI_API_KEY": OPENAI_KEY, "STOCKQ_LOG_FORMAT": "json"}
    procs: list[Proc] = [redis_proc]
    try:
        time.sleep(0.5)
        procs.append(start_worker(settings, "inference", "secrets", **env))
        api_port, flower_port = free_port(), free_port()
        procs.append(start_gunicorn(settings, api_port, **env))
        flower = Proc(
            [str(BIN / "celery"), "-A", "workers", "flower", f"--port={flower_port}", "--address=127.0.0.1"],
            settings_env(settings, FLOWER_BASIC_AUTH=f"ops:{FLOWER_PASSWORD}", **env),
            tmp / "flower.log",
        )
        procs.append(flower)
        yield {
            "settings": settings,
            "env": settings_env(settings, **env),
            "tmp": tmp,
            "procs": procs,
            "api": f"http://127.0.0.1:{api_port}",
            "flower": f"http://127.0.0.1:{flower_port}",
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"


def test_inspect_conf_flower_and_logs_carry_no_secret(stack: dict) -> None:
    headers = {"Authorization": f"Bearer {TENANT_KEY}"}
    r = requests.post(f"{stack['api']}/jobs/ping?wait=5", headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["result"] == {"pong": True}
    failed = requests.post(
        f"{stack['api']}/predict-child?wait=5",
        json={"ticker": "RRC", "model": "child"},
        headers=headers,
        timeout=10,
    )
    assert failed.status_code == 200 and failed.json()["status"] == "failed"
    assert_no_secret(failed.text, "a job record")
    assert_no_secret(requests.get(f"{stack['api']}/ready", timeout=5).text, "/ready")
    conf = subprocess.run(
        [str(BIN / "celery"), "-A", "workers", "inspect", "conf", "--timeout", "10", "--json"],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "secrets@" in conf.stdout, conf.stdout + conf.stderr  # it did answer
    assert_no_secret(conf.stdout + conf.stderr, "celery inspect conf")

    def flower_workers() -> str | None:
        r = requests.get(
            f"{stack['flower']}/api/workers?refresh=1", auth=("ops", FLOWER_PASSWORD), timeout=10
        )
        return r.text if r.status_code == 200 and "secrets@" in r.text else None

    assert_no_secret(
        wait_until(flower_workers, 60, "Flower to list the worker", every=1), "Flower /api/workers"
    )
    assert requests.get(f"{stack['flower']}/api/workers", timeout=10).status_code == 401
    for proc in stack["procs"]:
        assert_no_secret(proc.log.read_text(errors="replace"), proc.log.name)


def test_a_pickle_message_on_the_queue_is_refused_and_never_runs(stack: dict) -> None:
    marker = stack["tmp"] / "pwned"
    task_id = uuid.uuid4().hex
    with Connection(stack["settings"].redis_url) as conn:
        Producer(conn).publish(
            pickle.dumps(_Touch(marker)),
            exchange=Exchange("inference", type="direct"),
            routing_key="inference",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            serializer=None,
            headers={"task": "stockq.ping", "id": task_id, "lang": "py"},
        )
    worker_log = stack["procs"][1].log
    wait_until(lambda: "disallowed" in worker_log.read_text(errors="replace").lower(), 30, "the refusal")
    time.sleep(1)
    assert not marker.exists()
    # the worker is still serving
    r = requests.post(
        f"{stack['api']}/jobs/ping?wait=5", headers={"Authorization": f"Bearer {TENANT_KEY}"}, timeout=10
    )
    assert r.status_code == 200


def _without_stockq_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STOCKQ_", "OPENAI_", "FLOWER_"))}


def test_placeholder_secrets_refuse_the_api_start(tmp_path: Path) -> None:
    """Not only API keys: a password in a service URL, Flower's login and the OpenAI key too; the message
    names each setting and shows none of the values."""
    placeholders = {
        "STOCKQ_REDIS_URL": "redis://:change-me-hex-password@127.0.0.1:6379/0",
        "STOCKQ_BROKER_URL": "amqp://stockq:CHANGEME@127.0.0.1:5672//",
        "STOCKQ_FLOWER_AUTH": "admin:change-me",
        "OPENAI_API_KEY": "sk-placeholder",
    }
    env = {**_without_stockq_env(), **placeholders, "STOCKQ_API_KEYS": f"alice:{TENANT_KEY}",
           "STOCKQ_VAR_DIR": str(tmp_path)}  # fmt: skip
    run = subprocess.run(gunicorn_argv(free_port()), env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "refusing to start" in run.stderr, run.stderr[-2000:]
    for variable in placeholders:
        assert variable in run.stderr
    for value in ("change-me-hex-password", "CHANGEME", "sk-placeholder"):
        assert value not in run.stderr


def _example_env() -> dict[str, str]:
    """What compose gives its one-shot check with compose/.env.example copied as is."""
    example = (Path(__file__).parents[1] / "compose" / ".env.example").read_text(encoding="utf-8")
    values = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    url = f"redis://:{values['REDIS_PASSWORD']}@redis:6379/0"
    return {**values, "STOCKQ_REDIS_URL": url, "STOCKQ_BROKER_URL": url, "STOCKQ_CACHE_REDIS_URL": url}


def test_compose_refuses_the_example_env_and_accepts_real_secrets() -> None:
    check = [str(BIN / "python"), "-m", "stockq.placeholders"]
    example = _example_env()
    refused = subprocess.run(check, env={**_without_stockq_env(), **example}, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode != 0
    for variable in ("STOCKQ_API_KEYS", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"):
        assert variable in refused.stderr, refused.stderr
    real = {
        "STOCKQ_API_KEYS": f"alice:{TENANT_KEY}",
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "FLOWER_BASIC_AUTH": f"example:{FLOWER_PASSWORD}",  # a user may be called "example"
        "GRAFANA_ADMIN_PASSWORD": uuid.uuid4().hex,
    }
    url = f"redis://:{REDIS_PASSWORD}@redis.example.com:6379/0"  # a host may be called "example"
    accepted = subprocess.run(check, env={**_without_stockq_env(), **real, "STOCKQ_REDIS_URL": url},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
