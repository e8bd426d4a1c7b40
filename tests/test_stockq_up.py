"""`stockq up` as an operator runs it, on a fresh var dir: starts Redis when none answers, a training
submitted the moment it is ready succeeds, serves with auth, survives SIGKILL of any worker, stops cleanly.

One stack serves the whole module (a start costs 30-60 s on two cores); the tests run in file order and
the last one stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from stockq.cli.stack import WORKER_GROUPS
from tests.procs import FAST_TRAINING, alive, free_port, wait_until

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
AUTH = {"Authorization": "Bearer up-test-secret-2-0123456789"}
# A killed worker is meant to be back within 30 s (the supervisor restarts it after 0.5 s; the rest is the
# worker's own start-up, 15-20 s on an idle 2-core machine). The bound is looser because a loaded CI machine
# starts it slower, and the test kills every worker at once: the test proves each comes back, the printed
# times show how fast.
BACK_WITHIN_S = 180


def descendants(pid: int) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in rows.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@dataclass
class Up:
    proc: subprocess.Popen
    log: Path
    base: str
    flower_port: int
    exporter_port: int
    mlflow_port: int
    redis: redis.Redis
    var: Path

    def ready(self) -> dict | None:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            r = requests.get(f"{self.base}/ready", timeout=2)
        except requests.RequestException:
            return None
        return r.json() if r.status_code == 200 else None


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("up")
    redis_port, api_port, flower_port = free_port(), free_port(), free_port()
    exporter_port, mlflow_port = free_port(), free_port()
    env = {
        **os.environ,
        **FAST_TRAINING,
        "STOCKQ_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "STOCKQ_VAR_DIR": str(tmp / "var"),  # fresh: no MLflow store, no features, no Redis data
        "STOCKQ_API_PORT": str(api_port),
        "STOCKQ_FLOWER_PORT": str(flower_port),
        "STOCKQ_EXPORTER_PORT": str(exporter_port),
        "STOCKQ_MLFLOW_UI_PORT": str(mlflow_port),
        "STOCKQ_API_KEYS": "one:up-test-secret-1-0123456789,two:up-test-secret-2-0123456789",
        "STOCKQ_DATA_SOURCE": "bundled",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "stockq"), "up", "--mlflow-ui", "--log-format", "json"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    client = redis.Redis(port=redis_port, decode_responses=True)
    stack = Up(proc, log, f"http://127.0.0.1:{api_port}", flower_port, exporter_port, mlflow_port, client,
               tmp / "var")  # fmt: skip
    try:
        # Its start imports torch, Feast, MLflow and the embedding model in every worker at once: 77 s on an
        # idle 2-core machine, over 180 s while the other test stream trains.
        wait_until(stack.ready, 420, "stockq up to be ready", every=0.2)
        yield stack
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def test_a_training_submitted_the_moment_it_is_ready_succeeds(up: Up) -> None:
    # First in the module, so it runs right when /ready turned 200: every worker process has just built
    # its MLflow client on a store that did not exist a minute ago.
    r = requests.post(f"{up.base}/train", json={"ticker": "^GSPC", "epochs": 1}, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text

    def finished() -> dict | None:
        job = requests.get(f"{up.base}/status/{r.json()['job_id']}", headers=AUTH, timeout=5).json()
        return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

    job = wait_until(finished, 300, "the training to finish", every=0.5)
    assert job["status"] == "succeeded", job


def test_up_serves_with_auth_and_durable_redis(up: Up) -> None:
    body = up.ready()
    assert body is not None and all(n >= 1 for n in body["workers"].values())
    assert requests.post(f"{up.base}/train", json={"ticker": "AAPL"}, timeout=5).status_code == 401
    r = requests.post(f"{up.base}/jobs/ping?wait=5", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json()["result"] == {"pong": True}
    flower = f"http://127.0.0.1:{up.flower_port}"
    assert requests.get(f"{flower}/healthcheck", timeout=5).text == "OK"
    # Flower asks for the generated login (0600 file, printed once); its /metrics stays open for Prometheus.
    auth_file = up.var / "flower-auth"
    assert auth_file.stat().st_mode & 0o777 == 0o600 and auth_file.read_text() in up.log.read_text()
    user, password = auth_file.read_text().split(":", 1)
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{flower}/api/workers", auth=(user, password), timeout=10).status_code == 200
    assert requests.get(f"{flower}/metrics", timeout=10).status_code == 200
    # the exporter and the MLflow UI it printed the addresses of
    exported = requests.get(f"http://127.0.0.1:{up.exporter_port}/metrics", timeout=10).text
    assert "stockq_worker_up{" in exported

    def mlflow_ui() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{up.mlflow_port}/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_until(mlflow_ui, 60, "mlflow ui", every=0.5)
    for port in (up.exporter_port, up.mlflow_port, up.flower_port):
        assert f"127.0.0.1:{port}" in up.log.read_text()
    # The banner names the console page and which history is served, up to which date.
    assert f"console  {up.base}/" in up.log.read_text()
    assert "data: bundled, the offline history shipped with skfolio" in up.log.read_text()
    assert "which ends 2022-12-28" in up.log.read_text()
    # It started its own Redis, appending every write to a file under the var dir, fsynced each second.
    assert up.redis.config_get("appendonly") == {"appendonly": "yes"}
    assert up.redis.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert up.redis.config_get("dir") == {"dir": str(up.var / "redis")}


def worker_main_pid(up_pid: int, name: str) -> int:
    """The main process of `stockq up`'s worker `name` (its child, started with `-n name@%h`)."""
    for pid in descendants(up_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if f"{name}@%h".encode() in argv and os.getpgid(pid) == pid:
            return pid
    raise AssertionError(f"no worker {name} under stockq up")


def test_sigkill_of_any_worker_leaves_the_api_up_and_the_worker_comes_back(up: Up) -> None:
    health_failures: list[str] = []
    done = threading.Event()

    def watch_health() -> None:
        while not done.wait(0.25):
            try:
                code = requests.get(f"{up.base}/health", timeout=2).status_code
                if code != 200:
                    health_failures.append(str(code))
            except requests.RequestException as exc:
                health_failures.append(repr(exc))

    watcher = threading.Thread(target=watch_health, daemon=True)
    watcher.start()
    try:
        # Every worker at once (each restarts on its own; one after another only took longer).
        names = [queues.split(",")[0] for queues in WORKER_GROUPS]
        pids = {name: worker_main_pid(up.proc.pid, name) for name in names}
        killed_at = time.time()
        for pid in pids.values():
            os.killpg(pid, signal.SIGKILL)  # the whole worker: main process and its pool

        def back(name: str) -> bool:
            # A stamp newer than the kill comes from the new main process, once its pool is ready; the
            # old stamp alone would keep the queue counted for 15 s.
            stamps = dict(up.redis.zrange(f"stockq:workers:{name}", 0, -1, withscores=True))
            fresh = any(k.startswith(f"{name}@") and t > killed_at for k, t in stamps.items())
            body = up.ready()
            return fresh and body is not None and body["workers"][name] >= 1

        for name in names:
            wait_until(lambda name=name: back(name), BACK_WITHIN_S, f"worker {name} to be back", every=0.25)
            print(f"worker {name} back {time.time() - killed_at:.1f} s after SIGKILL")
            assert worker_main_pid(up.proc.pid, name) != pids[name]
    finally:
        done.set()
        watcher.join(5)
    assert health_failures == []
    assert up.proc.poll() is None
    r = requests.post(f"{up.base}/jobs/ping?wait=5", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json()["result"] == {"pong": True}
    log = up.log.read_text()
    assert all(f"restarting worker-{q.split(',')[0]}" in log for q in WORKER_GROUPS), log[-4000:]


def test_sigterm_leaves_nothing_running(up: Up) -> None:
    children = descendants(up.proc.pid)
    assert len(children) >= 6
    up.proc.send_signal(signal.SIGTERM)
    up.proc.wait(60)
    assert up.proc.returncode == 0
    wait_until(lambda: not any(alive(p) for p in children), 30, "every child to exit")
